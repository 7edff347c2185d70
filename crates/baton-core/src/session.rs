//! How a job relates to a Claude session, as asked (`SessionRequest`) and as decided
//! (`SessionMode`).

use serde::{Deserialize, Serialize};

use crate::SessionId;
use crate::spec::{SpecError, err};

/// How a job relates to a Claude session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SessionMode {
    /// A new session with an id the CLI picks.
    New,
    /// A new session with the id the caller picked.
    Start { id: SessionId },
    /// Continue an existing session, keeping its id.
    Resume { id: SessionId },
    /// Start a new session from a copy of an existing one's history.
    Fork {
        from: SessionId,
        id: Option<SessionId>,
    },
}

impl SessionMode {
    /// The session whose transcript this job appends to, if known before it runs. At most
    /// one attempt per such session runs at a time.
    pub fn owned_session(&self) -> Option<SessionId> {
        match *self {
            Self::New => None,
            Self::Start { id } | Self::Resume { id } => Some(id),
            Self::Fork { id, .. } => id,
        }
    }

    /// The session whose stored transcript must be restored before the CLI starts.
    pub fn restores(&self) -> Option<SessionId> {
        match *self {
            Self::Resume { id } => Some(id),
            Self::Fork { from, .. } => Some(from),
            _ => None,
        }
    }
}

/// The `session` object of a request: `{"resume": id}`, `{"resume": id, "fork": true}`,
/// `{"id": id}` or `{"resume": id, "fork": true, "id": new_id}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// Continue this session.
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub resume: Option<String>,
    /// With `resume`: start a new session from a copy of its history.
    #[serde(default)]
    pub fork: bool,
    /// The id of the new session (alone: start a session with this id; with `fork`: the
    /// fork's id).
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub id: Option<String>,
}

pub(crate) fn session_mode(req: Option<SessionRequest>) -> Result<SessionMode, SpecError> {
    let Some(req) = req else {
        return Ok(SessionMode::New);
    };
    let parse = |s: &str| SessionId::parse(s).map_err(|e| err("session", e.to_string()));
    let resume = req.resume.as_deref().map(parse).transpose()?;
    let id = req.id.as_deref().map(parse).transpose()?;
    match (resume, req.fork, id) {
        (None, false, None) => Ok(SessionMode::New),
        (None, false, Some(id)) => Ok(SessionMode::Start { id }),
        (Some(id), false, None) => Ok(SessionMode::Resume { id }),
        (Some(from), true, None) => Ok(SessionMode::Fork { from, id: None }),
        (Some(from), true, Some(id)) if id != from => Ok(SessionMode::Fork { from, id: Some(id) }),
        (Some(_), true, Some(_)) => Err(err("session", "a fork needs an id of its own")),
        (None, true, _) => Err(err("session", "fork needs resume: the session to copy")),
        (Some(_), false, Some(_)) => Err(err(
            "session",
            "resume keeps the session's id; give id only with fork",
        )),
    }
}
