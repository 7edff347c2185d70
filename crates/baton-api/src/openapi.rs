//! `/openapi.json`, generated: every operation from the `#[utoipa::path]` of its handler,
//! every schema derived from the request and response types themselves. A snapshot of the
//! document is kept in the repository (`openapi.json` beside this crate's manifest) and a
//! test fails when the two differ, so a change of the wire is always a visible change.

use std::path::PathBuf;

use axum::extract::State;
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::{
    AppState, admin, agent_jobs, agents, audit, callbacks, compat, dead, health, hooks, jobs,
    routines, usage, wire,
};

/// `POST /mcp`: the MCP server (streamable HTTP), served by `baton-mcp` beside the API's
/// routes; a path of the document only.
#[utoipa::path(post, path = "/mcp", tag = "MCP",
    request_body(content = Object, description = "A JSON-RPC 2.0 message of the Model Context Protocol (streamable HTTP transport); Accept must name application/json and text/event-stream"),
    responses((status = 200, description = "The JSON-RPC answer, as JSON or an event stream (with progress notifications)", body = Object),
        (status = 202, description = "A notification or response was accepted"),
        (status = 401, description = "No valid key", body = crate::wire::ErrorBody),
        (status = 403, description = "A Host or Origin that is not Baton's"),
        (status = "default", description = "A JSON-RPC or transport error")))]
#[allow(dead_code)]
async fn mcp_document() {}

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
        crate::facades::openai::completions,
        crate::facades::openai::list_models,
        crate::facades::anthropic::messages,
        mcp_document,
        agent_jobs::create,
        agent_jobs::get,
        agent_jobs::stream,
        admin::create_project,
        admin::list_projects,
        admin::get_project,
        admin::update_project,
        admin::delete_project,
        crate::policy::get_policy,
        crate::policy::put_policy,
        admin::create_key,
        admin::list_keys,
        admin::revoke_key,
        audit::list_audit,
        agents::create_agent,
        agents::list_agents,
        agents::get_agent,
        agents::update_agent,
        agents::delete_agent,
        agents::agent_versions,
        agents::run_agent,
        agents::call,
        routines::create_routine,
        routines::list_routines,
        routines::get_routine,
        routines::update_routine,
        routines::delete_routine,
        routines::pause_routine,
        routines::resume_routine,
        routines::routine_runs,
        routines::add_trigger,
        routines::delete_trigger,
        routines::rotate_token,
        routines::fire_route,
        usage::usage,
        usage::alerts,
        hooks::hook,
        callbacks::job_callbacks,
        callbacks::rotate_secret,
        crate::ui::session_page,
        openapi_json,
    ),
    components(schemas(
        wire::ErrorBody,
        wire::params::Cursor,
        wire::params::IdempotencyKey,
        jobs::EventsFormat
    ))
)]
struct ApiDoc;

/// The document this server serves: its `cwd` and `add_dirs` name the workspace roots it
/// is configured with.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi_json(State(st): State<AppState>) -> axum::Json<Value> {
    axum::Json(document_for(
        &st.engine().config().runner.workspace_roots,
        st.policies(),
    ))
}

/// The document of a server with no workspace roots (the snapshot's).
pub fn document() -> Value {
    document_for(&[], &crate::policy::Policies::default())
}

pub fn document_for(roots: &[PathBuf], policies: &crate::policy::Policies) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.info.license = None;
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    refine(
        &mut doc["components"]["schemas"],
        roots,
        &policies.catalogue,
    );
    refine_policies(&mut doc["components"]["schemas"], roots, policies);
    doc["paths"]["/v1/routines"]["post"]["requestBody"]["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/NewRoutine"});
    flatten_health(&mut doc["components"]["schemas"]);
    secure(&mut doc);
    doc
}

/// Health's detail is there for a caller with a key (or anyone while Baton is open) and
/// absent otherwise: one object whose detail fields are all optional, rather than the
/// derive's `allOf` with a nullable part, which no object matches.
fn flatten_health(schemas: &mut Value) {
    let detail = schemas["HealthDetail"]["properties"].clone();
    let Some(parts) = schemas["Health"]["allOf"].as_array().cloned() else {
        return;
    };
    let Some(base) = parts.into_iter().find(|p| p.get("properties").is_some()) else {
        return;
    };
    let mut properties = base["properties"].clone();
    if let (Some(all), Some(extra)) = (properties.as_object_mut(), detail.as_object()) {
        all.extend(extra.clone());
    }
    schemas["Health"] = json!({
        "type": "object",
        "description": schemas["Health"]["description"],
        "properties": properties,
        "required": base["required"],
    });
    if let Some(all) = schemas.as_object_mut() {
        all.remove("HealthDetail");
    }
}

/// Every operation takes an API key, in either header; health takes none. (While no key
/// exists, Baton serves loopback without one.)
fn secure(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer",
            "description": "An API key (bk_…) as a bearer token."},
        "api_key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    });
    doc["security"] = json!([{"bearer": []}, {"api_key": []}]);
    doc["components"]["securitySchemes"]["trigger_token"] = json!({"type": "http", "scheme": "bearer",
        "description": "An API trigger's token (trt_…): it fires that trigger's routine and nothing else."});
    doc["components"]["securitySchemes"]["session_cookie"] = json!({"type": "apiKey", "in": "cookie",
        "name": crate::ui::COOKIE, "description": "A browser's session, made by signing in with a key at /ui/login."});
    for (path, method, security) in [
        ("/v1/health", "get", json!([])),
        (
            "/v1/claude_code/routines/{trig_id}/fire",
            "post",
            json!([{"trigger_token": []}]),
        ),
        ("/v1/hooks/{trig_id}", "post", json!([])),
        ("/ui/sessions/{id}", "get", json!([{"session_cookie": []}])),
    ] {
        if let Some(op) = doc["paths"][path][method].as_object_mut() {
            op.insert("security".into(), security);
        }
    }
}

/// An `http(s)` URL with a host name and nothing Baton refuses in it. The schema promises
/// ASCII host names only (an international one in its `xn--` form is accepted, but not
/// every string is a valid one, so the schema names none), and no address literal (a
/// private one is refused).
const URL_PATTERN: &str = r"^https?://([A-Za-z0-9]+(-[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*(:[0-9]{1,4})?([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$";

/// What this server's policies may name: its workspace roots, its MCP catalogue, a
/// sandbox only where it can make one.
fn refine_policies(schemas: &mut Value, roots: &[PathBuf], policies: &crate::policy::Policies) {
    let any = baton_core::policy::ANY;
    let mut dirs = vec![any.to_string()];
    dirs.extend(roots.iter().map(|r| r.display().to_string()));
    schemas["Policy"]["properties"]["roots"]["items"] = json!({"type": "string", "enum": dirs,
        "description": "* (every workspace root) or a directory inside one (here, the roots themselves)."});
    let mut names = vec![any.to_string()];
    names.extend(policies.catalogue.iter().cloned());
    schemas["Policy"]["properties"]["mcp_servers"]["items"] = json!({"type": "string", "enum": names,
        "description": "* or an MCP server of this Baton's catalogue."});
    if !policies.can_sandbox {
        schemas["Policy"]["properties"]["sandbox"] = json!({"type": ["string", "null"], "enum": ["off", null],
            "description": "This Baton cannot make a sandbox (it has no proxy): only \"off\"."});
    }
}

/// What the derives cannot say, added to the derived schemas:
/// - a `session` object's fields depend on each other (`fork` needs `resume`; `resume`
///   with `id` is a fork);
/// - a replay's `options`, and a project's job `defaults`, are the fields of a job
///   request, none of them required;
/// - `cwd` and `add_dirs` name directories inside the configured workspace roots (the
///   roots themselves are the values a schema can promise exist; with none configured,
///   neither is accepted);
/// - a URL Baton calls has a host and no credentials, white space or control characters;
/// - an alert threshold is a percentage from 1 to 1000.
/// - a job's `mcp_servers` are names of the catalogue.
fn refine(schemas: &mut Value, roots: &[PathBuf], catalogue: &[String]) {
    let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    let dir = if roots.is_empty() {
        json!({"not": {}, "description": "No workspace roots are configured: no directory is accepted."})
    } else {
        json!({"type": "string", "enum": roots,
               "description": "A directory inside a configured workspace root (here, the roots themselves)."})
    };
    for name in ["JobRequest", "ChatRequest"] {
        schemas[name]["properties"]["cwd"] = dir.clone();
    }
    // Every URL Baton will call: http(s), a host, no credentials, white space or control
    // characters (what `baton_core::spec::check_callback_url` accepts).
    if let Some(all) = schemas.as_object_mut() {
        for schema in all.values_mut() {
            for field in ["callback_url", "webhook_url"] {
                // `get_mut`, not indexing: indexing adds a missing key (as null).
                if let Some(p) = schema
                    .get_mut("properties")
                    .and_then(|p| p.get_mut(field))
                    .and_then(Value::as_object_mut)
                {
                    p.insert("pattern".into(), json!(URL_PATTERN));
                }
            }
        }
    }
    schemas["Alerts"]["properties"]["thresholds"]["items"] =
        json!({"type": "integer", "minimum": 1, "maximum": 1000});
    schemas["JobRequest"]["properties"]["add_dirs"] = if roots.is_empty() {
        json!({"type": ["array", "null"], "maxItems": 0})
    } else {
        json!({"type": ["array", "null"], "items": dir, "maxItems": 256})
    };
    // A job names MCP servers of this Baton's catalogue, each once.
    schemas["JobRequest"]["properties"]["mcp_servers"] = if catalogue.is_empty() {
        json!({"type": ["array", "null"], "maxItems": 0,
               "description": "This Baton's MCP catalogue is empty: no server may be named."})
    } else {
        json!({"type": ["array", "null"], "uniqueItems": true, "maxItems": 64,
               "items": {"type": "string", "enum": catalogue},
               "description": "MCP servers of this Baton's catalogue ([[mcp_server]]), by name."})
    };
    // A routine is created with a name; a PATCH may leave it out.
    let mut new_routine = schemas["RoutineBody"].clone();
    new_routine["required"] = json!(["name"]);
    new_routine["description"] = json!("A routine to create: a name, and a prompt or an agent.");
    schemas["NewRoutine"] = new_routine;
    let uuid = json!({"type": "string", "format": "uuid"});
    schemas["SessionRequest"]["allOf"] = json!([
        {"if": {"properties": {"fork": {"const": true}}, "required": ["fork"]},
         "then": {"properties": {"resume": uuid}, "required": ["resume"]}},
        {"if": {"properties": {"resume": uuid, "id": uuid}, "required": ["resume", "id"]},
         "then": {"properties": {"fork": {"const": true}}, "required": ["fork"]}},
    ]);
    let mut options = schemas["JobRequest"].clone();
    if let Some(o) = options.as_object_mut() {
        o.remove("required");
        o.insert(
            "description".into(),
            json!(
                "Job options to change, as in a job request; each is checked like a new request."
            ),
        );
    }
    let mut defaults = options.clone();
    schemas["JobOptions"] = options;
    for name in ["Changes", "BulkReplay"] {
        schemas[name]["properties"]["options"] = json!({"$ref": "#/components/schemas/JobOptions"});
    }
    // A project's job defaults: the options of a job request but those of one job.
    if let Some(props) = defaults["properties"].as_object_mut() {
        for k in baton_core::project::NOT_DEFAULTABLE {
            props.remove(k);
        }
    }
    defaults["description"] = json!(
        "Job options (as in a job request) that the project's jobs get when they leave them out."
    );
    let mut agent_options = defaults.clone();
    schemas["JobDefaults"] = defaults;
    // An agent's options: the same, but its output schema is its own field.
    if let Some(props) = agent_options["properties"].as_object_mut() {
        props.remove("json_schema");
    }
    agent_options["description"] = json!(
        "Job options (as in a job request) of every run of the agent; `output_schema` stands for json_schema."
    );
    schemas["AgentOptions"] = agent_options;
    schemas["AgentBody"]["properties"]["options"] =
        json!({"$ref": "#/components/schemas/AgentOptions"});
    let reference = json!({"$ref": "#/components/schemas/JobDefaults"});
    schemas["Project"]["properties"]["defaults"] = reference.clone();
    for name in ["CreateProject", "UpdateProject"] {
        schemas[name]["properties"]["defaults"] =
            json!({"oneOf": [{"type": "null"}, reference.clone()]});
    }
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
    fn no_schema_says_null_where_a_schema_belongs() {
        // A `properties` of null (what indexing a missing key adds) breaks OpenAPI tools.
        let doc = super::document();
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            for key in ["properties", "items", "allOf", "oneOf"] {
                assert!(
                    !schema.get(key).is_some_and(serde_json::Value::is_null),
                    "{name}.{key} is null"
                );
            }
        }
    }

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
