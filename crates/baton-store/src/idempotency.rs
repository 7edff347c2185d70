//! Idempotency keys of the routes that replay stored answers: taken by one request (one
//! statement, so of requests racing with one key exactly one takes it), then answered or
//! given back.

use baton_core::ProjectId;

use crate::db::sql;
use crate::{Result, Store};

/// What became of an attempt to take an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is this request's: run it, then complete (or release) the key.
    Taken,
    /// Another request with this key is still being answered.
    Pending { request_hash: String },
    /// The key was answered before: this is the answer.
    Answered {
        request_hash: String,
        status: u16,
        body: String,
    },
}

/// How long a key may stay taken without an answer before another request may take it
/// over (its server died with the request in flight).
pub const IDEMPOTENCY_PENDING_MS: i64 = 5 * 60 * 1000;

impl Store {
    /// Takes an `Idempotency-Key` for a request, or says who has it: a request still being
    /// answered, or the stored answer.
    pub async fn claim_idempotency(
        &self,
        project_id: &ProjectId,
        key: &str,
        request_hash: &str,
        now: i64,
    ) -> Result<IdempotencyClaim> {
        // A new key is taken; so is one whose request was left unanswered for too long
        // (its server died with the request in flight).
        let taken = self
            .db
            .exec(
                sql("INSERT INTO idempotency_keys (project_id, key, request_hash, status, body, created_at) \
                     VALUES (?, ?, ?, 0, '', ?) ON CONFLICT (project_id, key) DO UPDATE \
                     SET request_hash = excluded.request_hash, created_at = excluded.created_at \
                     WHERE idempotency_keys.status = 0 AND idempotency_keys.created_at < ?")
                .bind(project_id.as_str())
                .bind(key)
                .bind(request_hash)
                .bind(now)
                .bind(now - IDEMPOTENCY_PENDING_MS),
            )
            .await?;
        if taken == 1 {
            return Ok(IdempotencyClaim::Taken);
        }
        let row = self
            .db
            .write_opt(
                sql("SELECT request_hash, status, body FROM idempotency_keys \
                     WHERE project_id = ? AND key = ?")
                .bind(project_id.as_str())
                .bind(key),
            )
            .await?;
        // Gone in between (answered and pruned, or given back): whoever asks again takes it.
        let Some(row) = row else {
            return Ok(IdempotencyClaim::Pending {
                request_hash: request_hash.to_string(),
            });
        };
        let request_hash = row.text("request_hash");
        Ok(match row.int("status") {
            0 => IdempotencyClaim::Pending { request_hash },
            status => IdempotencyClaim::Answered {
                request_hash,
                status: status as u16,
                body: row.text("body"),
            },
        })
    }

    /// Stores the answer to the request that took the key.
    pub async fn complete_idempotency(
        &self,
        project_id: &ProjectId,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        self.db
            .exec(
                sql("UPDATE idempotency_keys SET status = ?, body = ? \
                     WHERE project_id = ? AND key = ? AND status = 0")
                .bind(i64::from(status))
                .bind(body)
                .bind(project_id.as_str())
                .bind(key),
            )
            .await?;
        Ok(())
    }

    /// Gives a taken key back unanswered (the request failed), so a retry may take it.
    pub async fn release_idempotency(&self, project_id: &ProjectId, key: &str) -> Result<()> {
        self.db
            .exec(
                sql("DELETE FROM idempotency_keys WHERE project_id = ? AND key = ? AND status = 0")
                    .bind(project_id.as_str())
                    .bind(key),
            )
            .await?;
        Ok(())
    }

    /// Forgets idempotency keys stored before `before`.
    pub async fn prune_idempotency(&self, before: i64) -> Result<u64> {
        self.db
            .exec(sql("DELETE FROM idempotency_keys WHERE created_at < ?").bind(before))
            .await
    }
}
