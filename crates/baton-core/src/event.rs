//! The kinds of Baton's own lifecycle events in a job's log. The CLI's own events keep the
//! CLI's `type` (`system`, `assistant`, `user`, `result`, …) as their kind.

use crate::JobState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The job was accepted (always seq 1).
    JobQueued,
    /// A node claimed the job and starts an attempt.
    AttemptStarted,
    /// An attempt failed and another is due.
    AttemptFailed,
    /// A rate or usage limit parked the job until it resets.
    JobParked,
    /// A failed or dead job was started again.
    JobReplayed,
    /// A cost alert: the job, or its project's spend, crossed a threshold.
    CostAlert,
    JobCompleted,
    JobFailed,
    JobDead,
    JobCancelled,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        Self::JobQueued,
        Self::AttemptStarted,
        Self::AttemptFailed,
        Self::JobParked,
        Self::JobReplayed,
        Self::CostAlert,
        Self::JobCompleted,
        Self::JobFailed,
        Self::JobDead,
        Self::JobCancelled,
    ];

    /// The wire name, e.g. `job.completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobQueued => "job.queued",
            Self::AttemptStarted => "attempt.started",
            Self::AttemptFailed => "attempt.failed",
            Self::JobParked => "job.parked",
            Self::JobReplayed => "job.replayed",
            Self::CostAlert => "cost.alert",
            Self::JobCompleted => "job.completed",
            Self::JobFailed => "job.failed",
            Self::JobDead => "job.dead",
            Self::JobCancelled => "job.cancelled",
        }
    }

    /// A lifecycle kind from its wire name; `None` for the CLI's own kinds.
    pub fn parse(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// After this event a job's log never grows.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::JobCompleted | Self::JobFailed | Self::JobDead | Self::JobCancelled
        )
    }

    /// The event that records a job reaching `state`, when `state` is terminal.
    pub fn terminal(state: JobState) -> Option<Self> {
        match state {
            JobState::Completed => Some(Self::JobCompleted),
            JobState::Failed => Some(Self::JobFailed),
            JobState::Dead => Some(Self::JobDead),
            JobState::Cancelled => Some(Self::JobCancelled),
            JobState::Queued | JobState::Running => None,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an event of `kind` (a lifecycle kind or one of the CLI's) ends the log.
pub fn is_terminal_kind(kind: &str) -> bool {
    EventKind::parse(kind).is_some_and(EventKind::is_terminal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_terminal_states_match() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(k.as_str(), format!("{k}"));
        }
        assert_eq!(EventKind::parse("assistant"), None);
        for state in JobState::ALL {
            let kind = EventKind::terminal(state);
            assert_eq!(kind.is_some(), state.is_terminal(), "{state}");
            assert!(kind.is_none_or(|k| k.is_terminal() && k.as_str() == format!("job.{state}")));
        }
        assert!(is_terminal_kind("job.dead") && !is_terminal_kind("result"));
    }
}
