//! What a node does about its earlier incarnations when it starts, and the rescue of an
//! attempt whose owner is gone (its node died, or its lease ran out).

use baton_core::{ErrorKind, JobId};
use baton_store::StoreError;

use crate::finish::failure_finish;
use crate::{Engine, Result};

/// What a node's start did about its earlier incarnations. Its cost grows with what they
/// were running when they died, never with everything they ever ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Process groups looked for, each named by its leader's pid and start time: the
    /// attempts that were running, and those rescued elsewhere after their lease.
    pub groups: usize,
    /// Processes of those groups found alive and killed.
    pub killed: usize,
    /// Processes with their `HOME` in the attempts directory that no record named.
    pub strays: usize,
    /// Attempts that were running, ended as interrupted and requeued.
    pub requeued: usize,
}

impl Engine {
    pub(crate) async fn recover_previous_incarnations(&self) -> Result<Recovery> {
        let inner = &self.inner;
        let store = &inner.store;
        let (node, me) = (&inner.cfg.node_id, &inner.incarnation);
        let orphans = store.orphans_of_node(node, me).await?;
        // The groups that may hold survivors: the orphans' (running when their node
        // died), and those of attempts another node already rescued after the lease (the
        // CLI died with its node, but not its children). Not the attempts that ended
        // under their own supervisor: it reaped them. One read of `/proc` for them all.
        let mut groups: Vec<(i32, u64)> = orphans
            .iter()
            .filter_map(|o| Some((o.pid?, o.pid_start?)))
            .chain(store.abandoned_processes(node, me).await?)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let mut report = Recovery {
            groups: groups.len(),
            killed: baton_runner::process::kill_stale_groups(&groups),
            requeued: orphans.len(),
            ..Recovery::default()
        };
        for orphan in orphans {
            self.rescue(
                orphan.job_id,
                orphan.attempt,
                "the node restarted while the attempt ran",
            )
            .await;
        }
        // Processes no record names: the children of a CLI started just before the
        // previous incarnation died, before it could write the CLI's pid.
        if let Ok(dir) = inner.cfg.runner.attempts_dir.canonicalize() {
            report.strays = baton_runner::process::kill_strays(&dir);
        }
        store.close_incarnations(node, me, self.now_ms()).await?;
        if report != Recovery::default() {
            tracing::info!(
                groups = report.groups,
                killed = report.killed,
                strays = report.strays,
                requeued = report.requeued,
                "recovered what earlier incarnations of this node left"
            );
        }
        Ok(report)
    }

    /// What this node's start found of its earlier incarnations.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery.get().copied().unwrap_or_default()
    }

    /// Ends an attempt whose owner is gone as an `interrupted` failure, due again now.
    pub(crate) async fn rescue(&self, job: JobId, attempt: u32, why: &str) {
        let store = &self.inner.store;
        let Ok(record) = store.get_job(job).await else {
            return;
        };
        let now = self.now_ms();
        // No backoff: the attempt did not fail on its own account.
        let finish = failure_finish(
            &record,
            attempt,
            ErrorKind::Interrupted,
            why.into(),
            None,
            now,
            0.0,
        );
        match store.finish_attempt(job, attempt, &finish, now).await {
            Ok(rec) => {
                tracing::warn!(job = %job, attempt, state = %rec.state, "rescued an attempt: {why}");
                self.inner.bus.publish_record(&rec);
            }
            Err(StoreError::Fenced { .. }) => {}
            Err(e) => tracing::error!(job = %job, error = %e, "could not rescue an attempt"),
        }
    }
}
