//! What a project carries beside its name: its quotas, and defaults for its jobs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A project's share of Baton. Absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    /// Attempts of the project's jobs running at once, across every node; more wait.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub max_running: Option<u32>,
    /// Jobs queued or running at once; a submission beyond it is refused with 429.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000000))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub max_queued: Option<u32>,
    /// Requests a minute, summed over the project's keys.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000000))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub requests_per_minute: Option<u32>,
}

impl Quotas {
    /// Every limit present is at least 1 and at most its documented maximum.
    pub fn check(&self) -> Result<(), String> {
        for (name, v, max) in [
            ("max_running", self.max_running, MAX_RUNNING),
            ("max_queued", self.max_queued, MAX_COUNT),
            ("requests_per_minute", self.requests_per_minute, MAX_COUNT),
        ] {
            if let Some(n) = v
                && !(1..=max).contains(&n)
            {
                return Err(format!(
                    "quotas.{name} must be between 1 and {max} (leave it out for no limit)"
                ));
            }
        }
        Ok(())
    }
}

/// The largest `max_running` a project may have.
pub const MAX_RUNNING: u32 = 100_000;
/// The largest `max_queued` and `requests_per_minute` (a project's, or a key's).
pub const MAX_COUNT: u32 = 10_000_000;

/// A project's settings as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectSettings {
    pub quotas: Quotas,
    /// Job options (as in a job request) that a job of the project gets when it does not
    /// set them itself.
    pub defaults: Map<String, Value>,
    /// What the project's API calls may cost a day and a month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::Budget>,
    /// Cost alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::budget::Alerts>,
    /// What its jobs may ask for; absent: the default (see `baton_api::policy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::Policy>,
}

/// Fields a project's defaults cannot set: they belong to one job.
pub const NOT_DEFAULTABLE: [&str; 3] = ["prompt", "session", "metadata"];

impl ProjectSettings {
    /// `request` (a job request as JSON) with every default it does not set itself.
    pub fn apply_defaults(&self, request: &mut Map<String, Value>) {
        for (k, v) in &self.defaults {
            if request.get(k).is_none_or(Value::is_null) {
                request.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_checked_against_their_documented_range() {
        let q = |rpm| Quotas {
            requests_per_minute: Some(rpm),
            ..Quotas::default()
        };
        assert!(q(1).check().is_ok() && q(MAX_COUNT).check().is_ok());
        assert!(q(0).check().is_err() && q(MAX_COUNT + 1).check().is_err());
        let running = Quotas {
            max_running: Some(MAX_RUNNING + 1),
            ..Quotas::default()
        };
        assert!(running.check().unwrap_err().contains("max_running"));
        assert!(Quotas::default().check().is_ok());
    }
}
