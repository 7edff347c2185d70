//! The job state machine. Every change of a job's state goes through [`JobState::apply`];
//! the store persists the result with a guarded update, so two writers can never both win.
//! `docs/state_machine.md` draws the same edges, and a test keeps the two equal.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at` and a free slot.
    Queued,
    /// An attempt holds a lease and a process.
    Running,
    /// The CLI reported success.
    Completed,
    /// Ended by an error that another attempt would not fix.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
    /// Out of attempts after retryable failures: the dead-letter queue.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job has ended. A failed or dead job may still be replayed by a caller,
    /// which starts it again; nothing else moves it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Dead
        )
    }

    /// The one transition function. Returns the next state, or an error naming the
    /// refused edge; callers never compute a next state any other way.
    pub fn apply(self, t: Transition) -> Result<JobState, TransitionError> {
        use JobState::*;
        use Transition::*;
        let next = match (self, t) {
            (Queued, Claim) => Running,
            (Running, Succeed) => Completed,
            (Running, Retry) => Queued,
            (Running, Fail) => Failed,
            (Running, Exhaust) => Dead,
            (Queued | Running, Cancel) => Cancelled,
            (Dead | Failed, Replay) => Queued,
            (from, transition) => return Err(TransitionError { from, transition }),
        };
        Ok(next)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a job. A failure becomes exactly one of `Retry`, `Fail` or `Exhaust`
/// by [`crate::RetryPolicy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A node claimed the job and starts an attempt.
    Claim,
    /// The attempt's `result` said success.
    Succeed,
    /// The attempt failed (or was interrupted) and another attempt is due.
    Retry,
    /// The attempt failed in a way another attempt would not fix.
    Fail,
    /// The attempt failed retryably but no attempts are left.
    Exhaust,
    /// A caller cancelled the job.
    Cancel,
    /// A caller replayed a failed or dead job (the dead-letter queue's way out).
    Replay,
}

impl Transition {
    pub const ALL: [Transition; 7] = [
        Self::Claim,
        Self::Succeed,
        Self::Retry,
        Self::Fail,
        Self::Exhaust,
        Self::Cancel,
        Self::Replay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Succeed => "succeed",
            Self::Retry => "retry",
            Self::Fail => "fail",
            Self::Exhaust => "exhaust",
            Self::Cancel => "cancel",
            Self::Replay => "replay",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} job cannot {}", transition.as_str())]
pub struct TransitionError {
    pub from: JobState,
    pub transition: Transition,
}

/// Every allowed edge as `(from, transition, to)`, derived from [`JobState::apply`].
pub fn edges() -> Vec<(JobState, Transition, JobState)> {
    let mut out = Vec::new();
    for from in JobState::ALL {
        for t in Transition::ALL {
            if let Ok(to) = from.apply(t) {
                out.push((from, t, to));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn terminal_states_leave_only_by_replay() {
        for (from, t, _) in edges() {
            assert!(
                !from.is_terminal() || t == Transition::Replay,
                "{from} is terminal but can {}",
                t.as_str()
            );
        }
        assert!(JobState::Completed.apply(Transition::Replay).is_err());
    }

    /// The diagram in docs/state_machine.md must draw exactly the edges of `apply`.
    #[test]
    fn diagram_matches_transition_function() {
        let doc = include_str!("../../../docs/state_machine.md");
        let drawn: BTreeSet<(String, String, String)> = doc
            .lines()
            .filter_map(|line| {
                let (arrow, label) = line.trim().split_once(':')?;
                let (from, to) = arrow.split_once("-->")?;
                let (from, to) = (from.trim(), to.trim());
                if from == "[*]" || to == "[*]" {
                    return None;
                }
                Some((from.into(), label.trim().into(), to.into()))
            })
            .collect();
        let coded: BTreeSet<(String, String, String)> = edges()
            .into_iter()
            .map(|(f, t, to)| (f.as_str().into(), t.as_str().into(), to.as_str().into()))
            .collect();
        assert_eq!(drawn, coded, "docs/state_machine.md is out of date");
    }

    #[test]
    fn refused_edges_say_why() {
        let err = JobState::Completed.apply(Transition::Cancel).unwrap_err();
        assert_eq!(err.to_string(), "a completed job cannot cancel");
    }
}
