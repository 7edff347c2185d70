//! API keys. The secret is never stored: a key is found by its id (the public part of
//! what the caller sends) and its secret checked against `secret_hash` by the caller.

use baton_core::ProjectId;

use crate::db::{Row, sql};
use crate::decode::parse_project;
use crate::{Result, Store, StoreError};

/// An API key as listed: never its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub project_id: ProjectId,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The key's own rate limit (requests a minute); none when `None`.
    pub requests_per_minute: Option<i64>,
    /// What the key's jobs may spend a day (and a month).
    pub budget: Option<baton_core::Budget>,
}

/// A key to store: its secret only as a hash.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub project_id: ProjectId,
    pub name: String,
    pub scopes: Vec<String>,
    pub secret_hash: String,
    pub expires_at: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub budget: Option<baton_core::Budget>,
}

const KEY_COLUMNS: &str = "id, project_id, name, scopes, created_at, expires_at, last_used_at, \
     revoked_at, requests_per_minute, budget";

fn key_from_row(r: &Row) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: r.text("id"),
        project_id: parse_project(r.text("project_id"))?,
        name: r.text("name"),
        scopes: serde_json::from_str(&r.text("scopes"))
            .map_err(|e| StoreError::Corrupt(format!("key scopes: {e}")))?,
        created_at: r.int("created_at"),
        expires_at: r.opt_int("expires_at"),
        last_used_at: r.opt_int("last_used_at"),
        revoked_at: r.opt_int("revoked_at"),
        requests_per_minute: r.opt_int("requests_per_minute"),
        budget: r
            .opt_text("budget")
            .map(|b| serde_json::from_str(&b))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("key budget: {e}")))?,
    })
}

impl Store {
    /// Stores a new key; `Conflict` if its id is taken, `NotFound` for an unknown project.
    pub async fn insert_key(&self, key: &NewKey, now: i64) -> Result<KeyRecord> {
        self.get_project(&key.project_id).await?;
        let scopes =
            serde_json::to_string(&key.scopes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = self
            .db
            .write_opt(
                sql(format!(
                    "INSERT INTO api_keys (id, project_id, name, scopes, secret_hash, created_at, expires_at, \
                     requests_per_minute, budget) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING {KEY_COLUMNS}"
                ))
                .bind(key.id.as_str())
                .bind(key.project_id.as_str())
                .bind(key.name.as_str())
                .bind(scopes)
                .bind(key.secret_hash.as_str())
                .bind(now)
                .bind(key.expires_at)
                .bind(key.requests_per_minute)
                .bind(
                    key.budget
                        .as_ref()
                        .map(|b| serde_json::to_string(b).unwrap_or_default()),
                ),
            )
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("key {} already exists", key.id)))?;
        key_from_row(&row)
    }

    /// A key and its secret's hash, to check a presented secret against.
    pub async fn find_key(&self, id: &str) -> Result<(KeyRecord, String)> {
        let row = self
            .db
            .opt(
                sql(format!(
                    "SELECT {KEY_COLUMNS}, secret_hash FROM api_keys WHERE id = ?"
                ))
                .bind(id),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("key {id}")))?;
        Ok((key_from_row(&row)?, row.text("secret_hash")))
    }

    /// Keys, oldest first: one project's, or every project's.
    pub async fn list_keys(&self, project_id: Option<&ProjectId>) -> Result<Vec<KeyRecord>> {
        let rows = self
            .db
            .all(
                sql(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE (? IS NULL OR project_id = ?) \
                     ORDER BY created_at, id"
                ))
                .bind(project_id.map(ProjectId::as_str))
                .bind(project_id.map(ProjectId::as_str)),
            )
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key at once (a second revoke keeps the first time).
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<KeyRecord> {
        let row = self
            .db
            .write_opt(
                sql(format!(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? \
                     RETURNING {KEY_COLUMNS}"
                ))
                .bind(now)
                .bind(id),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("key {id}")))?;
        key_from_row(&row)
    }

    /// Whether any key was ever made (revoked ones count): from then on every request
    /// needs one.
    pub async fn any_keys(&self) -> Result<bool> {
        Ok(self
            .db
            .opt(sql("SELECT id FROM api_keys LIMIT 1"))
            .await?
            .is_some())
    }

    /// Records that a key was used (callers write this at most every so often).
    pub async fn touch_key(&self, id: &str, now: i64) -> Result<()> {
        self.db
            .exec(
                sql("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(id),
            )
            .await?;
        Ok(())
    }
}
