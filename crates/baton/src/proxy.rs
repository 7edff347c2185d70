//! Wiring of the credential proxy: where the credential comes from, the ledger it writes
//! (Baton's store), and the per-attempt tokens the engine hands each CLI.

use std::sync::Arc;

use anyhow::Context;
use baton_core::{Budget, EventKind, JobId, OnExceed, Period, ProjectId, ProjectSettings};
use baton_engine::{Credentials, Engine, IssuedCredential, Refusal};
use baton_proxy::{Call, Credential, Grant, Limit, Proxy, Sink};
use baton_store::{JobRecord, NewAlert, NewCall, NewEvent, SpendScope, Store, StoreError};

use crate::config::{Config, ProxyMode};

/// The variables a credential may come in, by precedence: an API key, then OAuth tokens.
const CREDENTIAL_VARS: [&str; 3] = [
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// The credential taken from the environment at start, if there was one.
static TAKEN: std::sync::OnceLock<Option<(&'static str, Credential)>> = std::sync::OnceLock::new();

/// The variable and value of the credential taken from the environment at start (for
/// `proxy.mode = "direct"`, which gives it to each CLI as before).
pub fn taken_from_environment() -> Option<(&'static str, String)> {
    let (var, c) = TAKEN.get()?.as_ref()?;
    let (Credential::ApiKey(v) | Credential::Bearer(v)) = c;
    Some((var, v.clone()))
}

/// Takes the credential out of this process's environment, once, before any thread starts
/// (`baton`'s `main` calls it first). Any process of the same user can read
/// `/proc/<pid>/environ`, which shows the environment the process started with, whatever
/// it removed since: so the value is also overwritten there, in place, and only the name
/// stays. The CLIs, started later, inherit nothing of it.
pub fn take_from_environment() {
    let mut found = None;
    for name in CREDENTIAL_VARS {
        let Some(value) = std::env::var(name).ok().filter(|v| !v.is_empty()) else {
            continue;
        };
        if found.is_none() {
            found = Some((
                name,
                if name == "ANTHROPIC_API_KEY" {
                    Credential::ApiKey(value)
                } else {
                    Credential::Bearer(value)
                },
            ));
        }
        overwrite_initial(name);
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::remove_var(name) };
    }
    let _ = TAKEN.set(found);
}

/// Zeroes the value of `name` in the environment block the process started with.
fn overwrite_initial(name: &str) {
    unsafe extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: at start, `environ` is the kernel's NUL-terminated array of pointers into
    // the initial block, each to a NUL-terminated `NAME=value`; nothing else runs yet.
    // Only bytes of the value, before its NUL, are written.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let text = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if text.len() > name.len()
                && text.starts_with(name.as_bytes())
                && text[name.len()] == b'='
            {
                let value = (*entry).add(name.len() + 1);
                std::ptr::write_bytes(value, 0, text.len() - name.len() - 1);
            }
            entry = entry.add(1);
        }
    }
}

/// The credential Baton holds: `proxy.credential_file`, else what it found in its
/// environment at start (`ANTHROPIC_API_KEY`, or a token in `ANTHROPIC_AUTH_TOKEN` /
/// `CLAUDE_CODE_OAUTH_TOKEN`).
pub fn credential(config: &Config) -> anyhow::Result<Option<Credential>> {
    let file = &config.proxy.credential_file;
    if !file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading proxy.credential_file {}", file.display()))?;
        let secret = text.trim().to_string();
        if secret.is_empty() {
            anyhow::bail!("proxy.credential_file {} is empty", file.display());
        }
        // `claude setup-token` makes OAuth tokens, sent as a bearer token.
        return Ok(Some(if secret.starts_with("sk-ant-oat") {
            Credential::Bearer(secret)
        } else {
            Credential::ApiKey(secret)
        }));
    }
    if let Some(Some((_, taken))) = TAKEN.get() {
        return Ok(Some(taken.clone()));
    }
    // A key given to the CLIs in configuration is Baton's to hold as well.
    if let Some(k) = config
        .runner
        .env
        .get("ANTHROPIC_API_KEY")
        .filter(|k| !k.is_empty())
    {
        return Ok(Some(Credential::ApiKey(k.clone())));
    }
    if TAKEN.get().is_some() {
        return Ok(None);
    }
    // Baton as a library (tests): its environment as it is.
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Ok(var("ANTHROPIC_API_KEY")
        .map(Credential::ApiKey)
        .or_else(|| {
            var("ANTHROPIC_AUTH_TOKEN")
                .or_else(|| var("CLAUDE_CODE_OAUTH_TOKEN"))
                .map(Credential::Bearer)
        }))
}

/// Where the proxy forwards: `proxy.upstream`, else the `ANTHROPIC_BASE_URL` the CLIs
/// were configured with (`runner.env`) or Baton's environment has, else the Anthropic API.
pub fn upstream(config: &Config) -> String {
    if !config.proxy.upstream.is_empty() {
        return config.proxy.upstream.clone();
    }
    configured_base_url(config)
}

/// The API the CLIs are configured to call: `ANTHROPIC_BASE_URL` of `runner.env`, else
/// of Baton's environment, else the Anthropic API.
pub fn configured_base_url(config: &Config) -> String {
    config
        .runner
        .env
        .get("ANTHROPIC_BASE_URL")
        .cloned()
        .or_else(|| std::env::var("ANTHROPIC_BASE_URL").ok())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://api.anthropic.com".into())
}

/// The proxy this node runs, if its configuration and credential call for one. Its ledger
/// writes through `engine`, set once the engine has started.
pub async fn start(
    config: &Config,
    engine: Arc<std::sync::OnceLock<Engine>>,
    socket: Option<std::path::PathBuf>,
) -> anyhow::Result<Option<Arc<Proxy>>> {
    let found = match config.proxy.mode {
        ProxyMode::Direct => return Ok(None),
        _ => credential(config)?,
    };
    let Some(credential) = found else {
        if config.proxy.mode == ProxyMode::Proxy {
            anyhow::bail!(
                "proxy.mode = \"proxy\" needs a credential: ANTHROPIC_API_KEY (or an OAuth token in \
                 ANTHROPIC_AUTH_TOKEN) in Baton's environment, or proxy.credential_file"
            );
        }
        return Ok(None);
    };
    let upstream = upstream(config);
    let mut prices = baton_proxy::Prices::default();
    prices.0.extend(config.proxy.prices.clone());
    let proxy = Proxy::start(
        baton_proxy::Config {
            upstream,
            credential,
            prices,
            connect_timeout: std::time::Duration::from_secs(30),
            socket,
        },
        Arc::new(Ledger { engine }),
    )
    .await
    .context("starting the credential proxy")?;
    tracing::info!(base_url = %proxy.base_url(), "the CLIs reach the API through Baton's proxy");
    Ok(Some(Arc::new(proxy)))
}

/// The proxy's calls, into the store's ledger; and the cost alerts they raise.
struct Ledger {
    engine: Arc<std::sync::OnceLock<Engine>>,
}

impl Sink for Ledger {
    fn record(
        &self,
        call: Call,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let engine = self.engine.clone();
        Box::pin(async move {
            let Some(engine) = engine.get() else {
                return;
            };
            let (Ok(project_id), Ok(job_id)) = (
                ProjectId::parse(&call.grant.project),
                JobId::parse(&call.grant.job),
            ) else {
                return;
            };
            let u = &call.usage;
            let row = NewCall {
                at: engine.now_ms(),
                project_id,
                key_id: call.grant.key_id.clone(),
                agent: call.grant.agent.clone(),
                routine_id: call.grant.routine.clone(),
                job_id,
                attempt: call.grant.attempt,
                model: u.model.clone(),
                input_tokens: u.input_tokens as i64,
                output_tokens: u.output_tokens as i64,
                cache_write_tokens: u.cache_creation_input_tokens as i64,
                cache_read_tokens: u.cache_read_input_tokens as i64,
                cost_micro_usd: call.cost_micro_usd,
                priced: call.priced,
                status: call.status,
                duration_ms: call.duration_ms as i64,
            };
            if let Err(e) = engine.store().record_call(&row).await {
                tracing::error!(job = %row.job_id, error = %e, "an API call could not be written to the ledger");
                return;
            }
            if row.cost_micro_usd > 0
                && let Err(e) = alerts(engine, &row).await
            {
                tracing::warn!(job = %row.job_id, error = %e, "cost alerts could not be checked");
            }
        })
    }

    fn refused(
        &self,
        path: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let engine = self.engine.clone();
        Box::pin(async move {
            tracing::warn!(path = %path, "the proxy refused a call with a token that is no attempt's");
            let Some(engine) = engine.get() else {
                return;
            };
            // A token names no project once it is unknown: the record goes to `default`,
            // where an administrator reads it.
            let record = baton_store::AuditRecord {
                id: uuid::Uuid::now_v7().to_string(),
                at: engine.now_ms(),
                project_id: ProjectId::default(),
                key_id: None,
                action: "proxy.refuse".into(),
                route: format!("proxy {path}"),
                target: None,
                outcome: "authentication_error".into(),
                request_id: format!("req_{}", random_id()),
            };
            if let Err(e) = engine.store().append_audit(&record).await {
                tracing::warn!(error = %e, "the proxy's refusal could not be audited");
            }
        })
    }
}

fn random_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Dollars from millionths, as short as exact: `$2.5`, `$0.000105`.
pub fn usd(micro: i64) -> String {
    let text = format!("{:.6}", micro as f64 / 1_000_000.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("${text}")
}

/// The cost alerts one recorded call raises: its job above the project's `alerts.job_usd`,
/// the project's spend reaching a threshold of one of its budgets. Each is raised once
/// (per job, or per budget window) across every node: logged, added to the job's log, and
/// queued for the project's alert webhook.
async fn alerts(engine: &Engine, call: &NewCall) -> Result<(), StoreError> {
    let store = engine.store();
    let settings: ProjectSettings = match store.get_project(&call.project_id).await {
        Ok(p) => serde_json::from_value(p.settings).unwrap_or_default(),
        Err(StoreError::NotFound(_)) => ProjectSettings::default(),
        Err(e) => return Err(e),
    };
    let alerts = settings.alerts.clone().unwrap_or_default();
    let mut raised = Vec::new();
    if let Some(limit) = alerts.job_usd.map(baton_core::budget::micro_usd) {
        let after = store.job_spend(call.job_id).await?.cost_micro_usd;
        // Reached at all, not crossed by this call alone: two calls ending at once each see
        // the other's cost. The alert's row makes it once.
        if after > limit {
            raised.push((
                format!("job:{}", call.job_id),
                "job_cost",
                format!(
                    "job {} has cost {} (alerts.job_usd is {})",
                    call.job_id,
                    usd(after),
                    usd(limit)
                ),
                serde_json::json!({"job_usd": usd(limit), "spent_usd": usd(after)}),
            ));
        }
    }
    for (period, cap) in settings.budget.iter().flat_map(Budget::limits) {
        let (from, to, window) = period.window(call.at);
        let after = store
            .spend(&call.project_id, &SpendScope::Project, from, to)
            .await?
            .cost_micro_usd;
        for t in &alerts.thresholds {
            let level = cap.saturating_mul(i64::from(*t)) / 100;
            if level <= after {
                raised.push((
                    format!("budget:project:{}:{window}:{t}", period.as_str()),
                    "budget_threshold",
                    format!(
                        "project {} has spent {} of its {} budget of {} ({t} %) in {window}",
                        call.project_id, usd(after), period.as_str(), usd(cap)
                    ),
                    serde_json::json!({"period": period.as_str(), "window": window, "threshold_percent": t,
                        "budget_usd": usd(cap), "spent_usd": usd(after), "window_ends_at": baton_core::routine::rfc3339(to)}),
                ));
            }
        }
    }
    for (key, kind, message, mut detail) in raised {
        let id = format!("alt_{}", random_id());
        if let Some(d) = detail.as_object_mut() {
            d.insert("id".into(), id.clone().into());
            d.insert("kind".into(), kind.into());
            d.insert("project".into(), call.project_id.as_str().into());
            d.insert("job_id".into(), call.job_id.to_string().into());
            d.insert("message".into(), message.clone().into());
        }
        let webhook = alerts.webhook_url.clone().map(|url| {
            let body = serde_json::json!({
                "id": id,
                "type": "cost.alert",
                "created_at": baton_core::routine::rfc3339(call.at),
                "alert": detail,
            });
            (url, body.to_string())
        });
        let alert = NewAlert {
            project_id: call.project_id.clone(),
            key,
            kind: kind.into(),
            job_id: Some(call.job_id),
            detail: detail.clone(),
            at: call.at,
            webhook,
        };
        if !store.raise_alert(&alert).await? {
            continue;
        }
        tracing::warn!(project = %call.project_id, job = %call.job_id, alert = kind, "cost alert: {message}");
        let event = NewEvent::lifecycle(EventKind::CostAlert, detail);
        if let Err(e) = engine.note(call.job_id, call.attempt, event).await {
            tracing::info!(job = %call.job_id, error = %e, "a cost alert could not be added to the job's log (its attempt has ended)");
        }
    }
    Ok(())
}

/// Each attempt's token and the proxy's address, in place of the credential; and the
/// budgets it counts against, checked before it starts.
pub struct ProxyCredentials {
    pub proxy: Arc<Proxy>,
    pub store: Store,
}

/// A budget of the job's, in the window `now` falls in.
struct Applies {
    limit: Limit,
    on_exceed: OnExceed,
    /// When the window resets.
    until: i64,
}

impl ProxyCredentials {
    /// Every budget `job` falls under, with what the ledger holds against each.
    async fn limits(&self, job: &JobRecord, now: i64) -> Result<Vec<Applies>, StoreError> {
        let store = &self.store;
        let project = &job.project_id;
        let mut out = Vec::new();
        if let Some(usd_cap) = job.spec.options.max_budget_usd {
            let cap = baton_core::budget::micro_usd(usd_cap);
            out.push(Applies {
                limit: Limit {
                    scope: format!("job:{}", job.id),
                    label: format!("the job's budget (max_budget_usd {})", usd(cap)),
                    cap_micro_usd: cap,
                    // Earlier attempts count.
                    spent_micro_usd: store.job_spend(job.id).await?.cost_micro_usd,
                },
                on_exceed: OnExceed::Fail,
                until: now,
            });
        }
        let settings: ProjectSettings = match store.get_project(project).await {
            Ok(p) => serde_json::from_value(p.settings).unwrap_or_default(),
            Err(StoreError::NotFound(_)) => ProjectSettings::default(),
            Err(e) => return Err(e),
        };
        let mut budgets: Vec<(String, String, SpendScope, Budget)> = Vec::new();
        if let Some(b) = settings.budget {
            budgets.push((
                format!("project:{project}"),
                "the project's".into(),
                SpendScope::Project,
                b,
            ));
        }
        if let Some(agent) = &job.spec.agent {
            let def = found(
                store
                    .get_agent(project, &agent.name, Some(agent.version))
                    .await,
            )?
            .and_then(|a| serde_json::from_value::<baton_core::AgentDefinition>(a.definition).ok());
            if let Some(b) = def.and_then(|d| d.budget) {
                budgets.push((
                    format!("agent:{project}:{}", agent.name),
                    format!("agent {}'s", agent.name),
                    SpendScope::Agent(agent.name.clone()),
                    b,
                ));
            }
        }
        if let Some(routine) = &job.spec.charge.routine_id {
            let def = found(store.get_routine(project, routine).await)?.and_then(|r| {
                serde_json::from_value::<baton_core::RoutineDefinition>(r.definition).ok()
            });
            if let Some(b) = def.and_then(|d| d.budget) {
                budgets.push((
                    format!("routine:{routine}"),
                    format!("routine {routine}'s"),
                    SpendScope::Routine(routine.clone()),
                    b,
                ));
            }
        }
        if let Some(key) = &job.spec.charge.key_id
            && let Some((record, _)) = found(store.find_key(key).await)?
            && let Some(b) = record.budget
        {
            budgets.push((
                format!("key:{key}"),
                format!("key {key}'s"),
                SpendScope::Key(key.clone()),
                b,
            ));
        }
        for (scope, whose, spend_scope, budget) in budgets {
            for (period, cap) in budget.limits() {
                let (from, to, window) = period.window(now);
                let spent = store.spend(project, &spend_scope, from, to).await?;
                let each = match period {
                    Period::Day => "daily",
                    Period::Month => "monthly",
                };
                out.push(Applies {
                    limit: Limit {
                        scope: format!("{scope}:{}:{window}", period.as_str()),
                        label: format!("{whose} {each} budget ({} for {window})", usd(cap)),
                        cap_micro_usd: cap,
                        spent_micro_usd: spent.cost_micro_usd,
                    },
                    on_exceed: budget.on_exceed,
                    until: to,
                });
            }
        }
        Ok(out)
    }
}

/// A record that may be gone (an agent, routine or key deleted since: no budget of its
/// own any more); any other error stops the check.
fn found<T>(r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long a job waits when its budgets cannot be read (the database is away).
const UNREADABLE_BUDGET_PARK_MS: i64 = 10_000;

impl ProxyCredentials {
    /// The budgets `job` falls under, checked: a refusal when one is spent.
    async fn admit(&self, job: &JobRecord, now: i64) -> Result<Vec<Limit>, Refusal> {
        let applies = match self.limits(job, now).await {
            Ok(a) => a,
            // Never start a job whose budgets are unknown.
            Err(e) => {
                return Err(Refusal {
                    message: format!("the job's budgets could not be read: {e}"),
                    park_until: Some(now + UNREADABLE_BUDGET_PARK_MS),
                });
            }
        };
        if let Some(spent) = applies
            .iter()
            .find(|a| a.limit.spent_micro_usd >= a.limit.cap_micro_usd)
        {
            return Err(Refusal {
                message: format!(
                    "{} is spent ({} so far); the job was not started",
                    spent.limit.label,
                    usd(spent.limit.spent_micro_usd)
                ),
                park_until: (spent.on_exceed == OnExceed::Park).then_some(spent.until),
            });
        }
        Ok(applies.into_iter().map(|a| a.limit).collect())
    }

    fn grant(job: &JobRecord, attempt: u32, limits: Vec<Limit>) -> Grant {
        Grant {
            project: job.project_id.to_string(),
            job: job.id.to_string(),
            attempt,
            key_id: job.spec.charge.key_id.clone(),
            agent: job.spec.agent.as_ref().map(|a| a.name.clone()),
            routine: job.spec.charge.routine_id.clone(),
            limits,
        }
    }

    fn credential(&self, grant: Grant) -> IssuedCredential {
        let token = self.proxy.grant(grant);
        IssuedCredential {
            env: vec![
                ("ANTHROPIC_BASE_URL".into(), self.proxy.base_url()),
                ("ANTHROPIC_API_KEY".into(), token.value().to_string()),
            ],
            guard: Box::new(Guard(token)),
        }
    }
}

type Pinned<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl Credentials for ProxyCredentials {
    fn issue<'a>(
        &'a self,
        job: &'a JobRecord,
        attempt: u32,
        now: i64,
    ) -> Pinned<'a, Result<Option<IssuedCredential>, Refusal>> {
        Box::pin(async move {
            let limits = self.admit(job, now).await?;
            Ok(Some(self.credential(Self::grant(job, attempt, limits))))
        })
    }

    fn issue_warm(&self) -> Option<IssuedCredential> {
        // No one's until a job takes the process: its calls (the CLI makes none while it
        // waits) are in no ledger row, since no job can be charged.
        Some(self.credential(Grant {
            project: String::new(),
            job: "warm".into(),
            attempt: 0,
            key_id: None,
            agent: None,
            routine: None,
            limits: Vec::new(),
        }))
    }

    fn bind<'a>(
        &'a self,
        credential: &'a IssuedCredential,
        job: &'a JobRecord,
        attempt: u32,
        now: i64,
    ) -> Pinned<'a, Result<(), Refusal>> {
        Box::pin(async move {
            let limits = self.admit(job, now).await?;
            if let Some(Guard(token)) = credential.guard.as_any().downcast_ref::<Guard>() {
                self.proxy.rebind(token, Self::grant(job, attempt, limits));
            }
            Ok(())
        })
    }
}

struct Guard(baton_proxy::Token);

impl baton_engine::CredentialGuard for Guard {
    fn budget_exceeded(&self) -> Option<String> {
        self.0.budget_exceeded()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
