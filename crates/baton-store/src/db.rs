//! One way to run a statement on either backend. A query whose SQL is the same on both
//! dialects is written once, with `?` placeholders ([`Stmt`]); on PostgreSQL they become
//! `$1, $2, …` (the one placeholder rewrite), and rows of both come back as [`Row`], read
//! by column name (the one row decoder, in `decode.rs`). What truly differs between the
//! dialects (claiming, appending, finishing) lives in `sqlite.rs` and `postgres.rs`.
//!
//! This module, those two and the test support (`faults.rs`, `testing.rs`) are the only
//! places that name `sqlx`; nothing of it leaves the crate.

use std::borrow::Cow;

use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteRow};
use sqlx::{Arguments, Postgres, Row as _, Sqlite, Transaction};

use crate::{Result, StoreError};

/// The connections of one store.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// One writer connection (every write of the process, in order) and a pool of
    /// read-only connections that see the last commit (WAL).
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
    Postgres(PgPool),
}

/// A value bound to a placeholder: Baton stores integers, text and bytes only (times in
/// milliseconds, flags as 0/1, JSON as text).
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_string))
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}

/// A statement written once for both dialects, with `?` placeholders, and its arguments.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

/// A statement; bind its arguments in placeholder order.
pub(crate) fn sql(sql: impl Into<Cow<'static, str>>) -> Stmt {
    Stmt {
        sql: sql.into(),
        args: Vec::new(),
    }
}

impl Stmt {
    pub(crate) fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sql.is_empty()
    }

    /// This statement, then `next`, sent as one statement list (SQLite only: one round
    /// trip to the writer).
    pub(crate) fn and(mut self, next: Stmt) -> Self {
        if self.sql.is_empty() {
            return next;
        }
        let mut text = self.sql.into_owned();
        text.push_str("; ");
        text.push_str(&next.sql);
        self.sql = text.into();
        self.args.extend(next.args);
        self
    }

    fn sqlite(self) -> Result<sqlx::query::Query<'static, Sqlite, SqliteArguments>> {
        let args = arguments(self.args)?;
        Ok(sqlx::query_with(sqlx::AssertSqlSafe(self.sql), args))
    }

    fn postgres(self) -> Result<sqlx::query::Query<'static, Postgres, PgArguments>> {
        let args = arguments(self.args)?;
        Ok(sqlx::query_with(
            sqlx::AssertSqlSafe(numbered(&self.sql)),
            args,
        ))
    }
}

/// The arguments of a statement, bound for one backend.
fn arguments<A>(values: Vec<Arg>) -> Result<A>
where
    A: Arguments,
    for<'q> Option<i64>: sqlx::Encode<'q, A::Database> + sqlx::Type<A::Database>,
    for<'q> Option<String>: sqlx::Encode<'q, A::Database> + sqlx::Type<A::Database>,
    for<'q> Vec<u8>: sqlx::Encode<'q, A::Database> + sqlx::Type<A::Database>,
{
    let mut args = A::default();
    for a in values {
        match a {
            Arg::Int(v) => args.add(v),
            Arg::Text(v) => args.add(v),
            Arg::Bytes(v) => args.add(v),
        }
        .map_err(|e| StoreError::Unavailable(format!("binding an argument: {e}")))?;
    }
    Ok(args)
}

/// `?` placeholders as PostgreSQL's `$1, $2, …`; a `?` inside a quoted literal stays.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let (mut n, mut quoted) = (0, false);
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// A row of either backend, read by column name.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    fn get<T>(&self, column: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, Sqlite>
            + sqlx::Type<Sqlite>
            + for<'r> sqlx::Decode<'r, Postgres>
            + sqlx::Type<Postgres>,
    {
        match self {
            Self::Sqlite(r) => r.get(column),
            Self::Postgres(r) => r.get(column),
        }
    }

    pub(crate) fn text(&self, c: &str) -> String {
        self.get(c)
    }
    pub(crate) fn opt_text(&self, c: &str) -> Option<String> {
        self.get(c)
    }
    pub(crate) fn int(&self, c: &str) -> i64 {
        self.get(c)
    }
    pub(crate) fn opt_int(&self, c: &str) -> Option<i64> {
        self.get(c)
    }
    pub(crate) fn bytes(&self, c: &str) -> Vec<u8> {
        self.get(c)
    }
}

/// Which SQLite connection a statement goes to (PostgreSQL has one pool).
#[derive(Clone, Copy)]
enum On {
    /// A reader: sees the last commit.
    Reader,
    /// The writer: writes, and reads that must see this process's own latest write.
    Writer,
}

impl Db {
    async fn rows(&self, s: Stmt, on: On) -> Result<Vec<Row>> {
        match self {
            Self::Sqlite { read, write } => {
                let pool = if let On::Reader = on { read } else { write };
                Ok(rows_sqlite(s.sqlite()?.fetch_all(pool).await?))
            }
            Self::Postgres(pool) => Ok(rows_pg(s.postgres()?.fetch_all(pool).await?)),
        }
    }

    async fn row(&self, s: Stmt, on: On) -> Result<Option<Row>> {
        match self {
            Self::Sqlite { read, write } => {
                let pool = if let On::Reader = on { read } else { write };
                Ok(s.sqlite()?.fetch_optional(pool).await?.map(Row::Sqlite))
            }
            Self::Postgres(pool) => {
                Ok(s.postgres()?.fetch_optional(pool).await?.map(Row::Postgres))
            }
        }
    }

    /// Rows, read from the last commit.
    pub(crate) async fn all(&self, s: Stmt) -> Result<Vec<Row>> {
        self.rows(s, On::Reader).await
    }

    /// One row or none, read from the last commit.
    pub(crate) async fn opt(&self, s: Stmt) -> Result<Option<Row>> {
        self.row(s, On::Reader).await
    }

    /// A write that returns rows (`RETURNING`), or a read that must see this process's
    /// own latest write on SQLite (it goes to the writer).
    pub(crate) async fn write_all(&self, s: Stmt) -> Result<Vec<Row>> {
        self.rows(s, On::Writer).await
    }

    pub(crate) async fn write_opt(&self, s: Stmt) -> Result<Option<Row>> {
        self.row(s, On::Writer).await
    }

    /// A write, alone in its transaction: how many rows it changed.
    pub(crate) async fn exec(&self, s: Stmt) -> Result<u64> {
        match self {
            Self::Sqlite { write, .. } => Ok(s.sqlite()?.execute(write).await?.rows_affected()),
            Self::Postgres(pool) => Ok(s.postgres()?.execute(pool).await?.rows_affected()),
        }
    }

    /// A transaction. On SQLite it begins `IMMEDIATE`, taking the file's write lock first:
    /// a transaction that reads, then writes, would otherwise fail at once with
    /// `SQLITE_BUSY` when another process wrote in between, instead of waiting its turn.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Self::Sqlite { write, .. } => Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

fn rows_sqlite(rows: Vec<SqliteRow>) -> Vec<Row> {
    rows.into_iter().map(Row::Sqlite).collect()
}

fn rows_pg(rows: Vec<PgRow>) -> Vec<Row> {
    rows.into_iter().map(Row::Postgres).collect()
}

/// A transaction on either backend; dropped without [`Tx::commit`], it rolls back.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn all(&mut self, s: Stmt) -> Result<Vec<Row>> {
        match self {
            Self::Sqlite(tx) => Ok(rows_sqlite(s.sqlite()?.fetch_all(&mut **tx).await?)),
            Self::Postgres(tx) => Ok(rows_pg(s.postgres()?.fetch_all(&mut **tx).await?)),
        }
    }

    pub(crate) async fn opt(&mut self, s: Stmt) -> Result<Option<Row>> {
        match self {
            Self::Sqlite(tx) => Ok(s
                .sqlite()?
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Sqlite)),
            Self::Postgres(tx) => Ok(s
                .postgres()?
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Postgres)),
        }
    }

    pub(crate) async fn one(&mut self, s: Stmt) -> Result<Row> {
        self.opt(s).await?.ok_or_else(|| {
            StoreError::Corrupt("a statement that returns a row returned none".into())
        })
    }

    pub(crate) async fn exec(&mut self, s: Stmt) -> Result<u64> {
        match self {
            Self::Sqlite(tx) => Ok(s.sqlite()?.execute(&mut **tx).await?.rows_affected()),
            Self::Postgres(tx) => Ok(s.postgres()?.execute(&mut **tx).await?.rows_affected()),
        }
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Runs a script of several statements without arguments (a migration).
    pub(crate) async fn script(&mut self, text: &'static str) -> Result<()> {
        match self {
            Self::Sqlite(tx) => {
                sqlx::raw_sql(text).execute(&mut **tx).await?;
            }
            Self::Postgres(tx) => {
                sqlx::raw_sql(text).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// A hint to the other nodes, delivered only if the transaction commits. SQLite has
    /// no other nodes: nothing to send.
    pub(crate) async fn notify(&mut self, channel: &str, payload: String) -> Result<()> {
        if let Self::Postgres(tx) = self {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// `FOR UPDATE` where rows can be locked (PostgreSQL); SQLite's `IMMEDIATE`
    /// transaction already holds the only write lock.
    pub(crate) fn for_update(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "",
            Self::Postgres(_) => " FOR UPDATE",
        }
    }

    /// Ends the transaction now, releasing its row locks. (Dropped, a transaction is rolled
    /// back only when its connection next goes back to the pool, and until then a claim's
    /// `SKIP LOCKED` passes over the rows it locked.)
    pub(crate) async fn rollback(self) -> Result<()> {
        match self {
            Self::Sqlite(tx) => tx.rollback().await?,
            Self::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Self::Sqlite(tx) => tx.commit().await?,
            Self::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::Busy(
                "no connection became free in time; another process may hold a lock on it".into(),
            ),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_outside_literals() {
        assert_eq!(
            numbered("SELECT ? WHERE a = '?' AND b = ?"),
            "SELECT $1 WHERE a = '?' AND b = $2"
        );
    }
}
