//! `/openapi.json`, generated: every operation from the `#[utoipa::path]` of its handler,
//! every schema derived from the request and response types themselves. A snapshot of the
//! document is kept in the repository (`openapi.json` beside this crate's manifest) and a
//! test fails when the two differ, so a change of the wire is always a visible change.

use serde_json::Value;
use utoipa::OpenApi;

use crate::{compat, dead, health, jobs, wire};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baton",
        description = "Claude Code as a durable, observable worker behind an HTTP API."
    ),
    paths(
        jobs::create_job,
        jobs::list_jobs,
        jobs::get_job,
        jobs::cancel_job,
        jobs::job_events,
        dead::retry_job,
        dead::list_dead,
        dead::replay_dead,
        jobs::get_session,
        health::health,
        compat::chat,
        compat::chat_stream,
        compat::execute,
        compat::session_status,
        openapi_json,
    ),
    components(schemas(wire::ErrorBody))
)]
struct ApiDoc;

/// The document this server serves.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi_json() -> axum::Json<Value> {
    axum::Json(document())
}

pub fn document() -> Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.info.license = None;
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

/// Every `(method, path)` the document names.
pub fn operations() -> Vec<(String, String)> {
    let doc = document();
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            for method in ops.as_object().into_iter().flat_map(|o| o.keys()) {
                out.push((method.clone(), path.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// The generated document equals the snapshot in the repository. To accept a change
    /// of the wire: `BATON_UPDATE_SNAPSHOTS=1 cargo test -p baton-api`, then review the diff.
    #[test]
    fn the_document_matches_its_snapshot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let generated = format!("{:#}\n", super::document());
        if std::env::var("BATON_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            std::fs::write(&path, &generated).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == generated,
            "openapi.json differs from the generated document; if the change is meant, \
             run BATON_UPDATE_SNAPSHOTS=1 cargo test -p baton-api and commit openapi.json"
        );
    }
}
