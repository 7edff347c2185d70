//! What the API calls cost: `GET /v1/usage` (the cost ledger, grouped) and
//! `GET /v1/alerts` (the cost alerts raised). Scope `usage:read`.

use axum::Json;
use axum::extract::State;
use baton_core::{Period, ProjectId};
use baton_store::{UsageGroup, UsageRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Scope, UsageRead};
use crate::error::{ApiError, ApiResult};
use crate::jobs::Params;
use crate::{AppState, wire};

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// From this time (RFC 3339), inclusive; default: the start of this UTC month. A day
    /// (`2026-12-01`, its start in UTC) is accepted too.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Until this time, exclusive (or a day: its start); default: now.
    #[param(format = DateTime)]
    to: Option<String>,
    group_by: Option<UsageGroup>,
    /// Only this project (an `admin` key may name any, or none for every project; any other
    /// key sees only its own).
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    project: Option<String>,
}

/// One group's usage.
#[derive(Serialize, ToSchema)]
pub struct UsageLine {
    /// The day, project, key id, agent, routine id or model; null for calls without one
    /// (a job of no agent, a call whose model was not reported).
    group: Option<String>,
    /// API calls.
    calls: i64,
    /// Jobs that made them.
    jobs: i64,
    input_tokens: i64,
    output_tokens: i64,
    cache_write_tokens: i64,
    cache_read_tokens: i64,
    /// US dollars, as priced by the proxy's table.
    cost_usd: f64,
}

impl UsageLine {
    fn new(r: &UsageRow, group_by: UsageGroup) -> Self {
        let group = match group_by {
            UsageGroup::Day => r
                .group
                .as_deref()
                .and_then(|ms| ms.parse::<i64>().ok())
                .map(|ms| Period::Day.window(ms).2),
            _ => r.group.clone(),
        };
        Self {
            group,
            calls: r.calls,
            jobs: r.jobs,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cache_write_tokens: r.cache_write_tokens,
            cache_read_tokens: r.cache_read_tokens,
            cost_usd: r.cost_micro_usd as f64 / 1_000_000.0,
        }
    }
}

/// Usage over a time range.
#[derive(Serialize, ToSchema)]
pub struct Usage {
    #[schema(value_type = String, pattern = "^usage$")]
    object: &'static str,
    /// The project, or null for every project.
    project: Option<String>,
    from: String,
    to: String,
    group_by: UsageGroup,
    data: Vec<UsageLine>,
    /// Every group together (`jobs` counts a job once per group it is in).
    total: UsageLine,
}

/// A time or a UTC day, in milliseconds.
fn instant(field: &str, text: &str) -> ApiResult<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    Err(ApiError::invalid(format!(
        "{field} must be an RFC 3339 time or a day such as 2026-12-01; got {text:?}"
    )))
}

/// The project a usage request may see: its own, or (for `admin`) any or every one.
fn scope_of(caller: &crate::auth::Caller, asked: Option<&str>) -> ApiResult<Option<ProjectId>> {
    let asked = crate::admin::project_filter(asked)?;
    if caller.scopes.contains(&Scope::Admin) {
        return Ok(asked);
    }
    match asked {
        Some(p) if p != caller.project => Err(ApiError::not_found(format!(
            "no project with id {:?}",
            p.as_str()
        ))),
        _ => Ok(Some(caller.project.clone())),
    }
}

#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, description = "Tokens, cost, jobs and API calls, grouped", body = Usage),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn usage(
    State(st): State<AppState>,
    caller: UsageRead,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Json<Usage>> {
    let project = scope_of(&caller, q.project.as_deref())?;
    let now = st.engine().now_ms();
    // An empty value is no value.
    let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let from = match given(&q.from) {
        Some(f) => instant("from", &f)?,
        None => Period::Month.window(now).0,
    };
    // A `to` before `from` is an empty range.
    let to = match given(&q.to) {
        Some(t) => instant("to", &t)?,
        None => now,
    }
    .max(from);
    let group_by = q.group_by.unwrap_or_default();
    let store = st.engine().store();
    let rows = store.usage(project.as_ref(), from, to, group_by).await?;
    let all = store
        .usage(project.as_ref(), from, to, UsageGroup::Project)
        .await?;
    let mut total = UsageRow::default();
    for r in &all {
        total.calls += r.calls;
        total.jobs += r.jobs;
        total.input_tokens += r.input_tokens;
        total.output_tokens += r.output_tokens;
        total.cache_write_tokens += r.cache_write_tokens;
        total.cache_read_tokens += r.cache_read_tokens;
        total.cost_micro_usd += r.cost_micro_usd;
    }
    Ok(Json(Usage {
        object: "usage",
        project: project.map(|p| p.to_string()),
        from: wire::timestamp(from),
        to: wire::timestamp(to),
        group_by,
        data: rows.iter().map(|r| UsageLine::new(r, group_by)).collect(),
        total: UsageLine::new(&total, UsageGroup::Project),
    }))
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// At most this many, newest first (1 to 500; 100 by default).
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "baton_core::int::opt_query")]
    limit: Option<u32>,
}

/// A cost alert, as raised.
#[derive(Serialize, ToSchema)]
pub struct Alert {
    /// What makes it once: `job:<id>`, or `budget:project:<period>:<window>:<percent>`.
    key: String,
    /// `job_cost` or `budget_threshold`.
    kind: String,
    job_id: Option<String>,
    /// What was crossed, and by how much.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    at: String,
}

#[utoipa::path(get, path = "/v1/alerts", tag = "usage", params(AlertsQuery),
    responses((status = 200, description = "The project's cost alerts, newest first", body = wire::Page<Alert>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn alerts(
    State(st): State<AppState>,
    caller: UsageRead,
    Params(q): Params<AlertsQuery>,
) -> ApiResult<Json<wire::Page<Alert>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 500"));
    }
    let rows = st
        .engine()
        .store()
        .list_alerts(&caller.project, limit)
        .await?;
    Ok(Json(wire::Page::whole(
        rows.into_iter()
            .map(|a| Alert {
                key: a.key,
                kind: a.kind,
                job_id: a.job_id,
                detail: a.detail,
                at: wire::timestamp(a.at),
            })
            .collect(),
    )))
}
