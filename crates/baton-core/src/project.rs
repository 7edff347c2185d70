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
    /// Every limit present is at least 1.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("max_running", self.max_running),
            ("max_queued", self.max_queued),
            ("requests_per_minute", self.requests_per_minute),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "quotas.{name} must be at least 1 (leave it out for no limit)"
                ));
            }
        }
        Ok(())
    }
}

/// A project's settings as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectSettings {
    pub quotas: Quotas,
    /// Job options (as in a job request) that a job of the project gets when it does not
    /// set them itself.
    pub defaults: Map<String, Value>,
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
