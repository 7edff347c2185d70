//! Baton's domain: what a job is, which states it may move between, how a failure is
//! classified and when it is retried.
//!
//! **Architecture invariant:** this crate performs no I/O. It knows nothing about tokio,
//! SQL, HTTP or processes, so every rule here can be tested as a plain function and every
//! other crate agrees on one definition of a job.

pub mod agent;
pub mod budget;
pub mod error_kind;
pub mod event;
pub mod ids;
pub mod int;
pub mod net;
#[cfg(feature = "openapi")]
mod openapi;
pub mod policy;
pub mod project;
pub mod retry;
pub mod routine;
pub mod session;
pub mod spec;
pub mod state;
pub mod step;

pub use agent::{AgentDefinition, AgentError, AgentRef, Verify, VerifyRun};
pub use budget::{Alerts, Budget, OnExceed, Period};
pub use error_kind::ErrorKind;
pub use event::{EventKind, is_terminal_kind};
pub use ids::{JobId, ProjectId, SessionId};
pub use policy::{McpServer, Policy, SandboxChoice};
pub use project::{ProjectSettings, Quotas};
pub use retry::RetryPolicy;
pub use routine::{
    FireContext, Overlap, RoutineDefinition, Schedule as CronSchedule, TriggerConfig,
};
pub use spec::{JobRequest, JobSpec, Limits, PermissionMode, SessionMode, SpecError};
pub use state::{JobState, Transition, TransitionError};
pub use step::{ClaudeOptions, ClaudeRun, Schedule, Step};
