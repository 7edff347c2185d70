//! Wiring of the credential proxy: where the credential comes from, the ledger it writes
//! (Baton's store), and the per-attempt tokens the engine hands each CLI.

use std::sync::Arc;

use anyhow::Context;
use baton_core::{JobId, ProjectId};
use baton_engine::{Credentials, IssuedCredential};
use baton_proxy::{Call, Credential, Grant, Proxy, Sink};
use baton_store::{JobRecord, NewCall, Store};

use crate::config::{Config, ProxyMode};

/// The credential Baton holds: `proxy.credential_file`, else its own environment
/// (`ANTHROPIC_API_KEY`, or a token in `ANTHROPIC_AUTH_TOKEN` / `CLAUDE_CODE_OAUTH_TOKEN`).
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
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Ok(var("ANTHROPIC_API_KEY")
        .map(Credential::ApiKey)
        .or_else(|| {
            var("ANTHROPIC_AUTH_TOKEN")
                .or_else(|| var("CLAUDE_CODE_OAUTH_TOKEN"))
                .map(Credential::Bearer)
        }))
}

/// The proxy this node runs, if its configuration and credential call for one.
pub async fn start(config: &Config, store: &Store) -> anyhow::Result<Option<Arc<Proxy>>> {
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
    let upstream = if config.proxy.upstream.is_empty() {
        std::env::var("ANTHROPIC_BASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "https://api.anthropic.com".into())
    } else {
        config.proxy.upstream.clone()
    };
    let mut prices = baton_proxy::Prices::default();
    prices.0.extend(config.proxy.prices.clone());
    let proxy = Proxy::start(
        baton_proxy::Config {
            upstream,
            credential,
            prices,
            connect_timeout: std::time::Duration::from_secs(30),
        },
        Arc::new(Ledger {
            store: store.clone(),
        }),
    )
    .await
    .context("starting the credential proxy")?;
    tracing::info!(base_url = %proxy.base_url(), "the CLIs reach the API through Baton's proxy");
    Ok(Some(Arc::new(proxy)))
}

/// The proxy's calls, into the store's ledger.
struct Ledger {
    store: Store,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Sink for Ledger {
    fn record(
        &self,
        call: Call,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let store = self.store.clone();
        Box::pin(async move {
            let (Ok(project_id), Ok(job_id)) = (
                ProjectId::parse(&call.grant.project),
                JobId::parse(&call.grant.job),
            ) else {
                return;
            };
            let u = &call.usage;
            let row = NewCall {
                at: now_ms(),
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
            if let Err(e) = store.record_call(&row).await {
                tracing::error!(job = %row.job_id, error = %e, "an API call could not be written to the ledger");
            }
        })
    }

    fn refused(
        &self,
        path: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            tracing::warn!(path = %path, "the proxy refused a call with a token that is no attempt's");
        })
    }
}

/// Each attempt's token and the proxy's address, in place of the credential.
pub struct ProxyCredentials(pub Arc<Proxy>);

impl Credentials for ProxyCredentials {
    fn issue(&self, job: &JobRecord, attempt: u32) -> Option<IssuedCredential> {
        let token = self.0.grant(Grant {
            project: job.project_id.to_string(),
            job: job.id.to_string(),
            attempt,
            key_id: None,
            agent: job.spec.agent.as_ref().map(|a| a.name.clone()),
            routine: None,
            cap_micro_usd: job
                .spec
                .options
                .max_budget_usd
                .map(|usd| (usd * 1_000_000.0).floor() as i64),
        });
        Some(IssuedCredential {
            env: vec![
                ("ANTHROPIC_BASE_URL".into(), self.0.base_url()),
                ("ANTHROPIC_API_KEY".into(), token.value().to_string()),
            ],
            guard: Box::new(Guard(token)),
        })
    }
}

struct Guard(baton_proxy::Token);

impl baton_engine::CredentialGuard for Guard {
    fn budget_exceeded(&self) -> bool {
        self.0.budget_exceeded()
    }
}
