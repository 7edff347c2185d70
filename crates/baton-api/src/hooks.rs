//! Inbound webhooks: `POST /v1/hooks/{trig_id}` fires a routine's `webhook` or `github`
//! trigger. Nothing is queued until the signature checks out (in constant time):
//!
//! - `webhook`: `X-Baton-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`
//!   (`"{timestamp}.{delivery}.{body}"` with an `X-Baton-Delivery` id) and
//!   `X-Baton-Timestamp: <unix seconds>` within the trigger's tolerance. The delivery id,
//!   else the signature, is the fire's key: a replayed or re-sent request starts nothing.
//! - `github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, as GitHub
//!   signs; `X-GitHub-Event` picks the event (`ping` is answered), filtered by the
//!   trigger's `events`. The body's signature is the fire's key (GitHub signs nothing
//!   else), so a redelivery, the same bytes, starts nothing.
//!
//! The JSON payload is the prompt's `event`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_core::{ProjectId, TriggerConfig};
use baton_store::Fired;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorType};
use crate::routines::{Refusal, answered, fire_for_request, trigger_of};
use crate::{AppState, wire};

/// What a hook did.
#[derive(Serialize, ToSchema)]
pub struct HookResult {
    /// `queued` (a run started), `duplicate` (this delivery was seen: nothing started),
    /// `ignored` (an event the trigger does not want) or `pong` (GitHub's ping).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claude_code_session_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/hooks/{trig_id}", tag = "routines",
    params(("trig_id" = String, Path, description = "A webhook or github trigger's id"),
        ("X-Baton-Signature" = Option<String>, Header, description = "webhook: sha256=<hex HMAC-SHA256 of \"{timestamp}.{body}\">"),
        ("X-Baton-Timestamp" = Option<String>, Header, description = "webhook: unix seconds"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "github: sha256=<hex HMAC-SHA256 of the body>"),
        ("X-GitHub-Event" = Option<String>, Header),
        ("X-GitHub-Delivery" = Option<String>, Header)),
    request_body(content = Object, description = "The event's JSON payload"),
    responses((status = 202, description = "Accepted: a run queued, or nothing to do", body = HookResult),
        (status = 401, description = "Unsigned or badly signed: nothing queued", body = wire::ErrorBody),
        (status = 404, description = "No such trigger", body = wire::ErrorBody),
        (status = 413, description = "The payload is over limits.max_webhook_bytes", body = wire::ErrorBody),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn hook(
    State(st): State<AppState>,
    Path(trig_id): Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let result = hook_checked(&st, &trig_id, &parts.headers, body)
        .await
        .map(|(r, project)| ((StatusCode::ACCEPTED, Json(r)).into_response(), project));
    answered(&st, result, &trig_id, "routine.hook", "/v1/hooks/{trig_id}").await
}

fn unsigned(message: &str) -> ApiError {
    ApiError::new(ErrorType::Authentication, message)
}

/// The HMAC-SHA256 of `parts` under `secret` (lower-case hex) if `presented`
/// (`sha256=<hex>`) is it, compared in constant time.
fn signed(secret: &str, parts: &[&[u8]], presented: &str) -> Option<String> {
    let hex = presented.trim().strip_prefix("sha256=")?;
    let bytes = decode_hex(hex)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    for p in parts {
        mac.update(p);
    }
    mac.verify_slice(&bytes).ok()?;
    Some(crate::keys::hex(&bytes))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn hook_checked(
    st: &AppState,
    trig_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(HookResult, ProjectId), Refusal> {
    let found = trigger_of(
        st,
        trig_id,
        &["webhook", "github"],
        "no webhook trigger with id",
    )
    .await?;
    let project = found.trigger.project_id.clone();
    let refuse = |e: ApiError| (e, Some(project.clone()));
    let limit = st.max_webhook_bytes();
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| {
        refuse(ApiError::new(
            ErrorType::RequestTooLarge,
            format!("the payload is larger than {limit} bytes (limits.max_webhook_bytes)"),
        ))
    })?;
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let secret = found.secret.as_deref().unwrap_or_default();
    let config: TriggerConfig =
        serde_json::from_value(found.trigger.config.clone()).map_err(|e| {
            refuse(ApiError::new(
                ErrorType::Api,
                format!("the trigger cannot be read: {e}"),
            ))
        })?;
    let (fire_key, event_name) = match &config {
        TriggerConfig::Webhook { tolerance_seconds } => {
            let sig = header("x-baton-signature")
                .ok_or_else(|| refuse(unsigned("X-Baton-Signature is required")))?;
            let ts = header("x-baton-timestamp")
                .and_then(|t| t.trim().parse::<i64>().ok())
                .ok_or_else(|| refuse(unsigned("X-Baton-Timestamp (unix seconds) is required")))?;
            // A delivery id, when sent, is signed with the rest: a replay cannot change it
            // to pass for a new delivery.
            let delivery = header("x-baton-delivery").filter(|d| !d.is_empty());
            if delivery.is_some_and(|d| d.len() > 255 || d.contains('.')) {
                return Err(refuse(ApiError::invalid(
                    "X-Baton-Delivery must be at most 255 characters, without '.'",
                )));
            }
            let ts_text = ts.to_string();
            let mut parts: Vec<&[u8]> = vec![ts_text.as_bytes(), b"."];
            if let Some(d) = delivery {
                parts.extend([d.as_bytes(), b"."]);
            }
            parts.push(&raw);
            let Some(mac) = signed(secret, &parts, sig) else {
                return Err(refuse(unsigned("the signature does not match")));
            };
            let now = st.engine().now_ms() / 1000;
            if now.abs_diff(ts) > u64::from(*tolerance_seconds) {
                return Err(refuse(unsigned(
                    "X-Baton-Timestamp is outside the trigger's tolerance; sign the request again",
                )));
            }
            // The key is what the secret vouches for: the delivery id, else the signature
            // as computed here (however the sender spelled its hex).
            let key = match delivery {
                Some(d) => format!("delivery:{d}"),
                None => format!("sig:{mac}"),
            };
            (key, None)
        }
        TriggerConfig::Github { .. } => {
            let sig = header("x-hub-signature-256")
                .ok_or_else(|| refuse(unsigned("X-Hub-Signature-256 is required")))?;
            let Some(mac) = signed(secret, &[&raw], sig) else {
                return Err(refuse(unsigned("the signature does not match")));
            };
            let event = header("x-github-event")
                .filter(|e| !e.is_empty())
                .ok_or_else(|| refuse(ApiError::invalid("X-GitHub-Event is required")))?;
            // GitHub signs the body only: its delivery id and event name are not vouched
            // for, so the key is the body's signature. A redelivery is the same bytes.
            (format!("github:{mac}"), Some(event.to_string()))
        }
        _ => {
            return Err(refuse(ApiError::not_found(
                "no webhook trigger with this id",
            )));
        }
    };
    if event_name.as_deref() == Some("ping") {
        return Ok((
            HookResult {
                status: "pong",
                job_id: None,
                claude_code_session_id: None,
            },
            project,
        ));
    }
    let payload: Value = serde_json::from_slice(&raw)
        .map_err(|e| refuse(ApiError::invalid(format!("the payload is not JSON: {e}"))))?;
    if let Some(event) = &event_name {
        let action = payload.get("action").and_then(Value::as_str);
        if !config.wants(event, action) {
            return Ok((
                HookResult {
                    status: "ignored",
                    job_id: None,
                    claude_code_session_id: None,
                },
                project,
            ));
        }
    }
    let mut event = payload;
    if let (Some(name), Value::Object(m)) = (&event_name, &mut event) {
        m.entry("event")
            .or_insert_with(|| Value::String(name.clone()));
    }
    let (fired, session) = fire_for_request(st, &found, fire_key, None, event)
        .await
        .map_err(refuse)?;
    Ok((
        HookResult {
            status: if matches!(fired, Fired::Duplicate(_)) {
                "duplicate"
            } else {
                "queued"
            },
            job_id: session.as_ref().and_then(|(r, _)| r.job_id.clone()),
            claude_code_session_id: session.map(|(_, s)| s),
        },
        project,
    ))
}
