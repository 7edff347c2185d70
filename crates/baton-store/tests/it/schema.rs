//! The two dialects' migrations build one schema.

use super::*;

/// Tables, columns (normalised types, nullability, defaults), primary and foreign keys
/// and indexes (with their predicates) read back from a fresh SQLite database and a fresh
/// PostgreSQL schema: a migration added to one dialect only fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_build_the_same_schema() {
    let sqlite = TestStore::sqlite().await;
    let Some(pg) = TestStore::postgres("both_dialects_build_the_same_schema").await else {
        return;
    };
    let (a, b) = (
        baton_store::testing::schema(&sqlite.store).await.unwrap(),
        baton_store::testing::schema(&pg.store).await.unwrap(),
    );
    assert!(
        a.tables.contains_key("jobs") && a.indexes.contains_key("jobs_due"),
        "{a:#?}"
    );
    for (name, table) in &a.tables {
        assert_eq!(Some(table), b.tables.get(name), "table {name}");
    }
    for name in a.indexes.keys().chain(b.indexes.keys()) {
        assert_eq!(
            a.indexes.get(name),
            b.indexes.get(name),
            "index {name} (sqlite, postgres)"
        );
    }
    assert_eq!(a, b);
}
