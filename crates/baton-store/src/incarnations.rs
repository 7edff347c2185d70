//! Incarnations: one run of one Baton process on one node. Attempts name the incarnation
//! that owns them, so a restart knows what its previous run left behind.

use crate::db::sql;
use crate::{Result, Store};

impl Store {
    pub async fn register_incarnation(
        &self,
        id: &str,
        node_id: &str,
        pid: u32,
        now: i64,
    ) -> Result<()> {
        self.db
            .exec(
                sql("INSERT INTO incarnations (id, node_id, pid, started_at) VALUES (?, ?, ?, ?)")
                    .bind(id)
                    .bind(node_id)
                    .bind(pid)
                    .bind(now),
            )
            .await?;
        Ok(())
    }

    pub async fn stop_incarnation(&self, id: &str, now: i64) -> Result<()> {
        self.db
            .exec(
                sql("UPDATE incarnations SET stopped_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(id),
            )
            .await?;
        Ok(())
    }

    /// Marks the earlier incarnations of `node_id` as stopped, once dealt with.
    pub async fn close_incarnations(&self, node_id: &str, current: &str, now: i64) -> Result<u64> {
        self.db
            .exec(
                sql(
                    "UPDATE incarnations SET stopped_at = ? WHERE node_id = ? AND id != ? \
                     AND stopped_at IS NULL",
                )
                .bind(now)
                .bind(node_id)
                .bind(current),
            )
            .await
    }
}
