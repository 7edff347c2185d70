//! Identifiers. Ids are stored and sent as text; parsing them once here means the rest of
//! Baton never sees a malformed id.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A project: the tenant boundary every job, event, session and key belongs to. 1 to 63
/// characters: lowercase ASCII letters, digits, `-` and `_`, starting with a letter or a
/// digit (it appears in URLs and in keys' names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectId(String);

impl ProjectId {
    /// The project every record belongs to until projects are made.
    pub const DEFAULT: &str = "default";

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=63).contains(&s.len())
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError {
                what: "project id",
                value: truncate(s),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the default project.
    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for ProjectId {
    fn default() -> Self {
        Self(Self::DEFAULT.to_string())
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ProjectId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<ProjectId> for String {
    fn from(p: ProjectId) -> String {
        p.0
    }
}

/// A job id: a UUIDv7, so ids sort by creation time and serve as pagination cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::try_parse(s).map(Self).map_err(|_| IdError {
            what: "job id",
            value: truncate(s),
        })
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl TryFrom<String> for JobId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

/// A Claude session id. The CLI insists on a UUID (`--session-id not-a-uuid` exits 1), so
/// Baton refuses anything else before a job is ever queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(Uuid);

impl SessionId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::try_parse(s).map(Self).map_err(|_| IdError {
            what: "session id",
            value: truncate(s),
        })
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl TryFrom<String> for SessionId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not a valid UUID")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_sort_by_creation() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(JobId::parse(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn project_ids_are_short_lowercase_names() {
        for ok in ["default", "team-a", "a", "x_1", &"a".repeat(63)] {
            assert_eq!(ProjectId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "Team", "-a", "a b", "a/b", &"a".repeat(64), "é"] {
            assert!(ProjectId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ProjectId::default().as_str(), "default");
        let json = serde_json::to_string(&ProjectId::default()).unwrap();
        assert_eq!(json, "\"default\"");
        assert!(serde_json::from_str::<ProjectId>("\"Bad\"").is_err());
    }

    #[test]
    fn session_ids_must_be_uuids() {
        let err = SessionId::parse("not-a-uuid").unwrap_err();
        assert_eq!(
            err.to_string(),
            "session id \"not-a-uuid\" is not a valid UUID"
        );
        assert!(SessionId::parse("11111111-1111-4111-8111-111111111111").is_ok());
    }
}
