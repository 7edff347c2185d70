//! `/openapi.json`, written by hand from one table of routes. The table is also what the
//! test in `tests` walks to prove every documented route is served.

use serde_json::{Value, json};

/// One documented operation.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub request: Option<&'static str>,
    pub status: u16,
    pub response: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    status: u16,
    response: &'static str,
) -> Route {
    Route {
        method,
        path,
        summary,
        request,
        status,
        response,
    }
}

pub const ROUTES: &[Route] = &[
    route(
        "post",
        "/v1/jobs",
        "Submit a job. Honours Idempotency-Key; ?wait=SECONDS answers with the finished job if it ends in time.",
        Some("JobRequest"),
        201,
        "Job",
    ),
    route(
        "get",
        "/v1/jobs",
        "List jobs, newest first (filters: state, session_id; cursor pagination).",
        None,
        200,
        "JobList",
    ),
    route(
        "get",
        "/v1/jobs/{id}",
        "A job, with its attempts.",
        None,
        200,
        "Job",
    ),
    route(
        "post",
        "/v1/jobs/{id}/cancel",
        "Cancel a job: at once if queued; a running attempt's process group is killed.",
        None,
        202,
        "Job",
    ),
    route(
        "get",
        "/v1/jobs/{id}/events",
        "The job's events: SSE (full replay, then live; Last-Event-ID resumes), or JSON pages with Accept: application/json.",
        None,
        200,
        "EventList",
    ),
    route(
        "post",
        "/v1/jobs/{id}/retry",
        "Replay a failed or dead job, optionally with changed options ({\"options\": {...}, \"max_attempts\": n}); honours Idempotency-Key.",
        Some("Replay"),
        200,
        "Job",
    ),
    route(
        "get",
        "/v1/dead",
        "The dead-letter queue: dead jobs, newest first, each with every attempt's error (filters: error_type; cursor pagination).",
        None,
        200,
        "JobList",
    ),
    route(
        "post",
        "/v1/dead/replay",
        "Replay dead jobs in bulk ({\"error_type\", \"limit\", \"options\", \"max_attempts\"}), oldest first; honours Idempotency-Key.",
        Some("BulkReplay"),
        200,
        "ReplayResult",
    ),
    route(
        "get",
        "/v1/sessions/{id}",
        "A Claude session: its stored transcript and jobs.",
        None,
        200,
        "Session",
    ),
    route(
        "get",
        "/v1/health",
        "Health: CLI version, database, queue counts. 503 when jobs cannot run.",
        None,
        200,
        "Health",
    ),
    route(
        "post",
        "/v1/chat",
        "CLI-wrapper compatibility: run a prompt and answer with the result.",
        Some("ChatRequest"),
        200,
        "ChatResponse",
    ),
    route(
        "post",
        "/v1/chat/stream",
        "CLI-wrapper compatibility: data-only SSE with start, delta and done events.",
        Some("ChatRequest"),
        200,
        "ChatStreamEvent",
    ),
    route(
        "post",
        "/execute",
        "Pipeline-worker compatibility: submit; poll /sessions/{id}.",
        Some("ExecuteRequest"),
        200,
        "ExecuteResponse",
    ),
    route(
        "get",
        "/sessions/{id}",
        "Pipeline-worker compatibility: status running/completed/failed and the response text.",
        None,
        200,
        "SessionStatus",
    ),
    route(
        "get",
        "/openapi.json",
        "This document.",
        None,
        200,
        "OpenApi",
    ),
];

fn schemas() -> Value {
    let any = json!({});
    let string = json!({"type": "string"});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "Error": {"type": "object", "required": ["type", "error", "request_id"], "properties": {
            "type": {"const": "error"},
            "error": {"type": "object", "required": ["type", "message"], "properties": {
                "type": {"enum": ["invalid_request_error", "authentication_error", "permission_error", "not_found_error", "conflict_error", "request_too_large", "rate_limit_error", "api_error", "overloaded_error", "timeout_error"]},
                "message": string}},
            "request_id": string}},
        "SessionRequest": {"type": "object", "additionalProperties": false, "properties": {
            "resume": {"type": "string", "format": "uuid", "description": "Continue this session."},
            "fork": {"type": "boolean", "description": "With resume: start a new session from a copy of its history."},
            "id": {"type": "string", "format": "uuid", "description": "The id of the new session (alone: start a session with this id; with fork: the fork's id)."}}},
        "JobRequest": {"type": "object", "required": ["prompt"], "additionalProperties": false, "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "model": string, "system_prompt": string, "append_system_prompt": string,
            "allowed_tools": strings, "disallowed_tools": strings,
            "tools": {"type": "array", "items": {"type": "string"}, "description": "Built-in tools available; [] disables them all."},
            "permission_mode": {"enum": ["default", "acceptEdits", "auto", "bypassPermissions", "dontAsk", "plan"]},
            "max_turns": {"type": "integer", "minimum": 1, "maximum": 10000},
            "max_budget_usd": {"type": "number", "exclusiveMinimum": 0},
            "json_schema": {"type": "object"},
            "mcp_config": {"type": "object", "required": ["mcpServers"]},
            "add_dirs": strings,
            "cwd": {"type": "string", "description": "Absolute path inside a configured workspace root."},
            "timeout_ms": {"type": "integer", "minimum": 1000},
            "session": {"$ref": "#/components/schemas/SessionRequest"},
            "metadata": {"type": "object"},
            "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
            "max_attempts": {"type": "integer", "minimum": 1}}},
        "Job": {"type": "object", "properties": {
            "id": string, "object": {"const": "job"}, "project_id": string,
            "state": {"enum": ["queued", "running", "completed", "failed", "cancelled", "dead"]},
            "priority": {"type": "integer"}, "attempt": {"type": "integer"}, "max_attempts": {"type": "integer"},
            "session_id": {"type": ["string", "null"]}, "cancel_requested": {"type": "boolean"},
            "created_at": string, "updated_at": string, "run_at": string,
            "started_at": {"type": ["string", "null"]}, "finished_at": {"type": ["string", "null"]},
            "result": {"type": ["string", "null"]}, "structured_output": any,
            "total_cost_usd": {"type": ["number", "null"]}, "usage": any, "num_turns": any, "duration_ms": any,
            "model": any, "permission_denials": {"type": "array"},
            "error": {"type": ["object", "null"], "properties": {"type": string, "message": string}},
            "outcome": any, "metadata": {"type": "object"}, "options": {"type": "object"},
            "last_event_seq": {"type": "integer"}, "attempts": {"type": "array"}}},
        "JobList": {"type": "object", "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "has_more": {"type": "boolean"}, "next_cursor": {"type": ["string", "null"]}}},
        "Event": {"type": "object", "properties": {"seq": {"type": "integer"}, "kind": string, "attempt": {"type": "integer"}, "at": string, "data": any}},
        "EventList": {"type": "object", "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "has_more": {"type": "boolean"}, "next_after": {"type": ["integer", "null"]}}},
        "Session": {"type": "object", "properties": {"id": string, "object": {"const": "session"}, "transcript_stored": {"type": "boolean"}, "job_ids": strings, "running_job_id": any, "last_job_id": any}},
        "Health": {"type": "object", "properties": {"status": {"enum": ["ok", "error"]}, "claude_version": any, "database": string, "jobs": {"type": "object"}}},
        "ChatRequest": {"type": "object", "required": ["prompt"], "additionalProperties": false, "properties": {
            "prompt": string, "session_id": string, "model": string, "system_prompt": string,
            "max_budget_usd": {"type": "number"}, "permission_mode": string, "allowed_tools": strings, "cwd": string}},
        "ChatResponse": {"type": "object", "properties": {"result": string, "session_id": string, "cost_usd": any, "usage": any, "model": any, "job_id": string}},
        "ChatStreamEvent": {"type": "object", "properties": {"type": {"enum": ["start", "delta", "done", "error"]}}},
        "ExecuteRequest": {"type": "object", "required": ["prompt"], "additionalProperties": false, "properties": {
            "prompt": string, "allowed_tools": strings, "timeout": {"type": "integer", "description": "Milliseconds."}}},
        "ExecuteResponse": {"type": "object", "properties": {"session_id": string, "status": {"const": "running"}, "job_id": string}},
        "SessionStatus": {"type": "object", "properties": {"session_id": string, "status": {"enum": ["running", "completed", "failed"]}, "response": string, "result": {"$ref": "#/components/schemas/Job"}}},
        "OpenApi": {"type": "object"},
        "Replay": {"type": "object", "additionalProperties": false, "properties": {
            "options": {"type": "object", "description": "Job options to change, as in JobRequest."},
            "max_attempts": {"type": "integer", "minimum": 1}}},
        "BulkReplay": {"type": "object", "additionalProperties": false, "properties": {
            "error_type": string, "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "options": {"type": "object"}, "max_attempts": {"type": "integer", "minimum": 1}}},
        "ReplayResult": {"type": "object", "properties": {"object": {"const": "replay"}, "count": {"type": "integer"}, "job_ids": strings}},
    })
}

fn parameters(path: &str, method: &str) -> Value {
    let mut params = Vec::new();
    if path.contains("{id}") {
        params.push(
            json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}),
        );
    }
    let query = |name: &str, schema: Value, description: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description});
    match (method, path) {
        ("post", "/v1/jobs") => {
            params.push(query(
                "wait",
                json!({"type": "number", "minimum": 0, "maximum": 300}),
                "Seconds to wait for the job to end.",
            ));
            params.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}}));
        }
        ("get", "/v1/jobs" | "/v1/dead") => {
            params.push(query(
                "state",
                json!({"type": "string"}),
                "Only jobs in this state.",
            ));
            params.push(query(
                "session_id",
                json!({"type": "string"}),
                "Only jobs of this session.",
            ));
            params.push(query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 200}),
                "Page size (20).",
            ));
            params.push(query(
                "cursor",
                json!({"type": "string"}),
                "next_cursor of the previous page.",
            ));
        }
        ("get", "/v1/jobs/{id}/events") => {
            params.push(query(
                "after",
                json!({"type": "integer"}),
                "Only events with a larger seq.",
            ));
            params.push(query(
                "format",
                json!({"enum": ["json"]}),
                "JSON pages instead of SSE.",
            ));
            params.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer"}}));
        }
        _ => {}
    }
    Value::Array(params)
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for Route {
        method,
        path,
        summary,
        request,
        status,
        response,
    } in ROUTES
    {
        let mut op = json!({
            "summary": summary,
            "parameters": parameters(path, method),
            "responses": {
                status.to_string(): {"description": "Success", "content": {
                    if path.ends_with("/events") || path.ends_with("/stream") { "text/event-stream" } else { "application/json" }:
                    {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(req) = request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{req}")}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Baton", "version": env!("CARGO_PKG_VERSION"), "description": "Claude Code as a durable, observable worker behind an HTTP API."},
        "paths": paths,
        "components": {"schemas": schemas()},
    })
}
