//! How Baton's records look on the wire: one typed struct per response shape, each with
//! its OpenAPI schema derived from it (`openapi.rs` collects them).

use baton_core::JobState;
use baton_store::{AttemptRecord, EventRecord, JobRecord};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

pub fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn opt_timestamp(ms: Option<i64>) -> Option<String> {
    ms.map(timestamp)
}

/// The `job` tag.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub enum JobTag {
    #[default]
    #[serde(rename = "job")]
    Tag,
}

/// The `list` tag.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub enum ListTag {
    #[default]
    #[serde(rename = "list")]
    Tag,
}

/// The `session` tag.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub enum SessionTag {
    #[default]
    #[serde(rename = "session")]
    Tag,
}

/// The `replay` tag.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub enum ReplayTag {
    #[default]
    #[serde(rename = "replay")]
    Tag,
}

/// The `error` tag.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub enum ErrorTag {
    #[default]
    #[serde(rename = "error")]
    Tag,
}

/// Why a job or attempt failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Failure {
    /// An error type, e.g. `timeout`, `rate_limited`, `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// A job, as every route shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub object: JobTag,
    pub project_id: String,
    pub state: JobState,
    pub priority: i32,
    /// Attempts claimed so far.
    pub attempt: u32,
    pub max_attempts: u32,
    pub session_id: Option<String>,
    pub cancel_requested: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(format = DateTime)]
    pub run_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// The result text, once completed.
    #[schema(value_type = Option<String>)]
    pub result: Value,
    /// With `json_schema`: the result as JSON.
    pub structured_output: Value,
    /// An agent's run with `verify`: what the check printed, the run's output.
    #[schema(value_type = Option<String>)]
    pub verified_output: Value,
    /// What the job's API calls cost: the cost ledger's figure (every attempt) when
    /// Baton's proxy metered them, else the CLI's own.
    #[schema(value_type = Option<f64>)]
    pub total_cost_usd: Value,
    /// The CLI's own figure for its last attempt, when the ledger's is shown beside it.
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<f64>)]
    pub cli_total_cost_usd: Value,
    #[schema(value_type = Option<Object>)]
    pub usage: Value,
    #[schema(value_type = Option<i64>)]
    pub num_turns: Value,
    #[schema(value_type = Option<i64>)]
    pub duration_ms: Value,
    #[schema(value_type = Option<String>)]
    pub model: Value,
    pub permission_denials: Vec<Value>,
    pub error: Option<Failure>,
    /// The summarized `result` event of the last attempt.
    #[schema(value_type = Option<Object>)]
    pub outcome: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The job's options, as accepted.
    #[schema(value_type = Object)]
    pub options: Value,
    pub last_event_seq: i64,
    /// The agent version this job runs, when it is an agent's run.
    pub agent: Option<baton_core::AgentRef>,
    /// Where the job's summary is POSTed when it ends (`GET /v1/jobs/{id}/callbacks`).
    pub callback_url: Option<String>,
    /// A queued job whose last attempt hit a rate limit waits for the limit to reset.
    #[schema(format = DateTime)]
    pub parked_until: Option<String>,
    /// Whether its attempts run in the sandbox, as decided when it was queued (null: the
    /// server's setting, for a job queued before there were policies).
    pub sandboxed: Option<bool>,
    /// The project's policy the job was admitted under.
    pub policy: Option<baton_core::Policy>,
    /// Every attempt, where the route shows them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
}

impl Job {
    pub fn new(j: &JobRecord) -> Self {
        let outcome = j.outcome.clone().unwrap_or(Value::Null);
        let mut options = serde_json::to_value(&j.spec).unwrap_or(Value::Null);
        let metadata = options
            .as_object_mut()
            .and_then(|o| o.remove("metadata"))
            .unwrap_or_else(|| json!({}));
        // Shown as `agent`, beside the options.
        if let Some(o) = options.as_object_mut() {
            o.remove("agent");
            o.remove("callback_url");
            o.remove("sandbox");
            o.remove("policy");
        }
        let field = |k: &str| outcome.get(k).cloned().unwrap_or(Value::Null);
        Self {
            id: j.id.to_string(),
            object: JobTag::Tag,
            project_id: j.project_id.to_string(),
            state: j.state,
            priority: j.priority,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            session_id: j.session_id.clone(),
            cancel_requested: j.cancel_requested,
            created_at: timestamp(j.created_at),
            updated_at: timestamp(j.updated_at),
            run_at: timestamp(j.run_at),
            started_at: opt_timestamp(j.started_at),
            finished_at: opt_timestamp(j.finished_at),
            result: field("result"),
            structured_output: field("structured_output"),
            verified_output: field("verified_output"),
            total_cost_usd: field("total_cost_usd"),
            cli_total_cost_usd: field("cli_total_cost_usd"),
            usage: field("usage"),
            num_turns: field("num_turns"),
            duration_ms: field("duration_ms"),
            model: field("model"),
            permission_denials: outcome
                .get("permission_denials")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            error: j.error_type.as_ref().map(|t| Failure {
                kind: t.clone(),
                message: j.error_message.clone().unwrap_or_default(),
            }),
            outcome,
            metadata,
            options,
            last_event_seq: j.last_seq,
            agent: j.spec.agent.clone(),
            callback_url: j.spec.callback_url.clone(),
            parked_until: j.parked_until().map(timestamp),
            sandboxed: j.spec.sandbox,
            policy: j.spec.policy.clone(),
            attempts: None,
        }
    }

    pub fn with_attempts(mut self, attempts: &[AttemptRecord]) -> Self {
        self.attempts = Some(attempts.iter().map(Attempt::new).collect());
        self
    }
}

/// One attempt of a job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub node_incarnation: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    pub pid: Option<i32>,
    pub error: Option<AttemptFailure>,
    /// Its completion arrived after it had lost the job, and was refused.
    pub fenced: bool,
    /// It ran on a pre-started process from a warm pool.
    pub warm: bool,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptFailure {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: Option<String>,
}

impl Attempt {
    pub fn new(a: &AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            node_incarnation: a.incarnation.clone(),
            started_at: timestamp(a.started_at),
            finished_at: opt_timestamp(a.finished_at),
            pid: a.pid,
            error: a.error_type.as_ref().map(|t| AttemptFailure {
                kind: t.clone(),
                message: a.error_message.clone(),
            }),
            fenced: a.fenced,
            warm: a.warm,
        }
    }
}

/// One event of a job's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    /// Its number in the job's log, from 1, without gaps.
    pub seq: i64,
    /// A lifecycle kind (`job.queued`, `attempt.started`, …) or the CLI's event type.
    pub kind: String,
    pub attempt: u32,
    #[schema(format = DateTime)]
    pub at: String,
    pub data: Value,
}

impl Event {
    pub fn new(e: &EventRecord) -> Self {
        Self {
            seq: e.seq,
            kind: e.kind.clone(),
            attempt: e.attempt,
            at: timestamp(e.at),
            data: e.data.clone(),
        }
    }
}

/// A page of a list: jobs, agents, projects, keys, audit records.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub object: ListTag,
    pub data: Vec<T>,
    pub has_more: bool,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// One page, and where the next starts.
    pub fn of(data: Vec<T>, has_more: bool, next_cursor: Option<String>) -> Self {
        Self {
            object: ListTag::Tag,
            data,
            has_more,
            next_cursor,
        }
    }

    /// A whole list in one page.
    pub fn whole(data: Vec<T>) -> Self {
        Self::of(data, false, None)
    }
}

/// A page of a job's events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventList {
    pub object: ListTag,
    pub data: Vec<Event>,
    pub has_more: bool,
    /// Pass as `after` for the next page.
    pub next_after: Option<i64>,
}

/// A Claude session: its stored transcript and jobs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub object: SessionTag,
    pub project_id: String,
    pub transcript_stored: bool,
    pub transcript_bytes: Option<u64>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    pub last_job_id: Option<String>,
    pub running_job_id: Option<String>,
    pub job_ids: Vec<String>,
}

/// What a bulk replay did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayResult {
    pub object: ReplayTag,
    pub count: usize,
    pub job_ids: Vec<String>,
}

/// Every error Baton answers with (compatible routes keep their own shapes).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub tag: ErrorTag,
    pub error: ErrorDetail,
    pub request_id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorName,
    pub message: String,
    /// More about the error, where there is more (e.g. the job a facade ran).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub detail: serde_json::Map<String, Value>,
}

/// The error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorName {
    InvalidRequestError,
    AuthenticationError,
    PermissionError,
    NotFoundError,
    ConflictError,
    RequestTooLarge,
    RateLimitError,
    ApiError,
    OverloadedError,
    TimeoutError,
}

/// One server-sent event, as a client reads it: `id` and `event` where the stream sends
/// them, `data` always (a JSON document).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SseEvent {
    /// The event's `seq` (job event streams).
    pub id: Option<String>,
    /// The event's kind (job event streams).
    pub event: Option<String>,
    pub data: String,
}

/// Request-side strings with rules of their own.
pub mod params {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    /// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
    pub struct IdempotencyKey;
    impl utoipa::PartialSchema for IdempotencyKey {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[!-~]{1,255}$"))
                .into()
        }
    }
    impl utoipa::ToSchema for IdempotencyKey {}

    /// `Baton-Detach`: `true` or `false`.
    pub struct Detach;
    impl utoipa::PartialSchema for Detach {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["true", "false"]))
                .into()
        }
    }
    impl utoipa::ToSchema for Detach {}

    /// A page cursor: a job id this API returned, or empty for the first page.
    pub struct Cursor;
    impl utoipa::PartialSchema for Cursor {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(
                    "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$",
                ))
                .into()
        }
    }
    impl utoipa::ToSchema for Cursor {}
}
