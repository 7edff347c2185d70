//! Completion callbacks: when a job that names a `callback_url` ends, its summary is
//! POSTed there from the durable outbox (a row written with the job), signed with the
//! project's secret (`Baton-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "t.body">`), with a delivery id the receiver can dedupe on (`Baton-Delivery`). A try
//! that fails is retried with backoff for up to a day; delivery is at least once.
//!
//! Every destination is checked twice: when the URL is given (an address literal) and
//! before each try (every address its name resolves to, and the try goes to the address
//! checked, so a name cannot change its answer in between). Loopback, private,
//! link-local and other non-public addresses are refused unless `outbound.allow` lists
//! them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use baton_store::{CallbackRecord, Delivery};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::{Admin, JobsRead};
use crate::error::{ApiError, ApiResult};
use crate::{AppState, wire};

/// An address range (`10.0.0.0/8`, `127.0.0.1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or a CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {max}"))?
        };
        // An IPv4 range written as IPv6 (`::ffff:10.0.0.0/104`) is that IPv4 range.
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            if prefix < 96 {
                return Err(format!(
                    "{s:?}: an IPv4-mapped range needs a prefix of 96 or more"
                ));
            }
            return Ok(Self {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
        }
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => match v.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)), 32),
                    None => (u128::from(v), 128),
                },
            }
        };
        let ((a, width), (b, other)) = (bits(self.addr), bits(ip));
        if width != other {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        shift >= 128 || (a >> shift) == (b >> shift)
    }
}

/// Where Baton's own requests may go, and how long each may take.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Non-public ranges that are allowed anyway.
    pub allow: Vec<Cidr>,
    pub timeout: Duration,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

pub use baton_core::net::is_public;

impl Outbound {
    /// Why a request to `ip` is refused, if it is.
    pub fn refuses(&self, ip: IpAddr) -> Option<String> {
        if is_public(ip) || self.allow.iter().any(|c| c.contains(ip)) {
            None
        } else {
            Some(format!(
                "{ip} is not a public address (loopback, private or reserved); list it in outbound.allow to permit it"
            ))
        }
    }
}

fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("callback_url is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("callback_url must be an http(s) URL with a host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("callback_url must not carry credentials".into());
    }
    Ok(u)
}

fn literal(u: &reqwest::Url) -> Option<IpAddr> {
    match u.host()? {
        url::Host::Ipv4(v) => Some(IpAddr::V4(v)),
        url::Host::Ipv6(v) => Some(IpAddr::V6(v)),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        }
        url::Host::Domain(_) => None,
    }
}

/// Refuses (400) a callback URL that is malformed or names a non-public address that is
/// not allowed. (A name is resolved and checked before each delivery.)
pub async fn check_destination(st: &AppState, url: &str) -> ApiResult<()> {
    let u = parse_url(url).map_err(ApiError::invalid)?;
    if let Some(ip) = literal(&u)
        && let Some(why) = st.outbound().refuses(ip)
    {
        return Err(ApiError::invalid(format!("callback_url: {why}")));
    }
    Ok(())
}

/// The addresses a delivery may go to, every one checked.
async fn resolve(outbound: &Outbound, u: &reqwest::Url) -> Result<Vec<SocketAddr>, String> {
    let port = u.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match literal(u) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => {
            let host = u.host_str().unwrap_or_default().to_string();
            tokio::time::timeout(
                outbound.timeout,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| format!("resolving {host} took too long"))?
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect()
        }
    };
    if addrs.is_empty() {
        return Err("the host has no address".into());
    }
    for a in &addrs {
        if let Some(why) = outbound.refuses(a.ip()) {
            return Err(format!("refused: {why}"));
        }
    }
    Ok(addrs)
}

/// A try is taken for this long; one that neither succeeds nor fails in it is tried again.
const LEASE_MS: i64 = 60_000;
/// Tries end this long after the job did.
pub const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;

/// The wait before try `n + 1`: 10 s doubling to an hour, with a tenth of jitter.
fn backoff_ms(attempts: u32) -> i64 {
    let base = 10_000_i64
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(3_600_000);
    base + rand::random_range(0..=base / 10)
}

/// `t=…,v1=…`: the HMAC-SHA256 of `"{t}.{body}"` under `secret`, hex.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let t_text = t.to_string();
    let hex = crate::keys::hmac_hex(secret.as_bytes(), &[t_text.as_bytes(), b".", body]);
    format!("t={t},v1={hex}")
}

fn fresh_secret() -> String {
    format!("cbs_{}", crate::keys::random_hex(32))
}

/// One pass of the delivery loop: due callbacks of ended jobs are claimed and POSTed.
/// Returns how many were delivered.
pub async fn deliver_step(st: &AppState) -> ApiResult<u32> {
    let store = st.engine().store();
    let now = st.engine().now_ms();
    let due = store.claim_callbacks(now, LEASE_MS, 32).await?;
    let mut delivered = 0;
    for cb in due {
        let outcome = deliver(st, &cb, now).await;
        if matches!(outcome, Delivery::Delivered { .. }) {
            delivered += 1;
        } else if let Delivery::Failed {
            error, retry_at, ..
        } = &outcome
        {
            tracing::info!(delivery = %cb.id, job = %cb.job_id, attempts = cb.attempts, error = %error,
                given_up = retry_at.is_none(), "a callback was not delivered");
        }
        store
            .record_delivery(&cb.id, cb.attempts, &outcome, now)
            .await?;
    }
    Ok(delivered)
}

async fn deliver(st: &AppState, cb: &CallbackRecord, now: i64) -> Delivery {
    // An alert carries its own body; a job's callback is the job's summary at this try.
    let job = match cb.payload {
        None => Some(st.engine().store().get_job(cb.job_id).await),
        Some(_) => None,
    };
    // Tries go on for a day after the job ended (however long it queued or ran), or
    // after the alert was raised.
    let ended = job
        .as_ref()
        .and_then(|j| j.as_ref().ok())
        .and_then(|j| j.finished_at)
        .unwrap_or(cb.created_at);
    let retry_at = (now - ended < GIVE_UP_AFTER_MS).then(|| now + backoff_ms(cb.attempts));
    let failed = |status: Option<u16>, error: String, retry_at: Option<i64>| Delivery::Failed {
        status,
        error,
        retry_at,
    };
    let u = match parse_url(&cb.url) {
        Ok(u) => u,
        Err(e) => return failed(None, e, None),
    };
    let outbound = st.outbound();
    let addrs = match resolve(outbound, &u).await {
        Ok(a) => a,
        // A refused address is refused for good; a name that does not resolve may later.
        Err(e) if e.starts_with("refused") => return failed(None, e, None),
        Err(e) => return failed(None, e, retry_at),
    };
    let job = match job {
        Some(Ok(j)) => Some(j),
        Some(Err(e)) => return failed(None, format!("the job cannot be read: {e}"), retry_at),
        None => None,
    };
    let secret = match st
        .engine()
        .store()
        .callback_secret(&cb.project_id, &fresh_secret())
        .await
    {
        Ok(s) => s,
        Err(e) => return failed(None, format!("the project's secret: {e}"), retry_at),
    };
    let body = match (&cb.payload, job) {
        (Some(payload), _) => payload.clone(),
        (None, job) => json!({
            "id": cb.id,
            "type": "job.ended",
            "created_at": wire::timestamp(now),
            "job": job.as_ref().map(wire::Job::new),
        })
        .to_string(),
    };
    let t = now / 1000;
    // No proxy from the environment: a proxy would resolve the name itself, past the
    // address checked above.
    let mut client = reqwest::Client::builder()
        .timeout(outbound.timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if let Some(host) = u.host_str().filter(|_| literal(&u).is_none()) {
        client = client.resolve_to_addrs(host, &addrs);
    }
    let client = match client.build() {
        Ok(c) => c,
        Err(e) => return failed(None, format!("an HTTP client: {e}"), retry_at),
    };
    let sent = client
        .post(u)
        .header("content-type", "application/json")
        .header("user-agent", concat!("Baton/", env!("CARGO_PKG_VERSION")))
        .header("baton-delivery", &cb.id)
        .header("baton-signature", signature(&secret, t, body.as_bytes()))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Delivery::Delivered {
            status: r.status().as_u16(),
        },
        Ok(r) => failed(
            Some(r.status().as_u16()),
            format!("the receiver answered {}", r.status()),
            retry_at,
        ),
        Err(e) => failed(None, format!("sending: {}", without_url(&e)), retry_at),
    }
}

/// An HTTP error's text without the URL (whose query may carry a token).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    kind.to_string()
}

/// One delivery of a job's callback.
#[derive(Serialize, ToSchema)]
pub struct Callback {
    /// The delivery id (`Baton-Delivery`), the same on every try.
    id: String,
    job_id: String,
    url: String,
    /// `pending`, `delivered` or `failed` (given up, or refused).
    state: String,
    attempts: u32,
    /// When the next try is due, while pending.
    next_attempt_at: Option<String>,
    last_status: Option<i64>,
    last_error: Option<String>,
    created_at: String,
    delivered_at: Option<String>,
}

impl Callback {
    fn new(c: &CallbackRecord) -> Self {
        Self {
            id: c.id.clone(),
            job_id: c.job_id.to_string(),
            url: c.url.clone(),
            state: c.state.clone(),
            attempts: c.attempts,
            next_attempt_at: (c.state == "pending").then(|| wire::timestamp(c.next_at)),
            last_status: c.last_status,
            last_error: c.last_error.clone(),
            created_at: wire::timestamp(c.created_at),
            delivered_at: c.delivered_at.map(wire::timestamp),
        }
    }
}

#[utoipa::path(get, path = "/v1/jobs/{id}/callbacks", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "The job's callback deliveries", body = wire::Page<Callback>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn job_callbacks(
    State(st): State<AppState>,
    caller: JobsRead,
    Path(id): Path<String>,
) -> ApiResult<Json<wire::Page<Callback>>> {
    let job = crate::jobs::job_of(&st, &caller, &id).await?;
    let records = st.engine().store().job_callbacks(job.id).await?;
    Ok(Json(wire::Page::whole(
        records.iter().map(Callback::new).collect(),
    )))
}

/// A project's callback secret, just made.
#[derive(Serialize, ToSchema)]
pub struct CallbackSecret {
    project: String,
    /// Shown once: verify `Baton-Signature` with it.
    secret: String,
}

#[utoipa::path(post, path = "/v1/callbacks/secret", tag = "jobs",
    responses((status = 200, description = "A new secret for the caller's project's callbacks; the old one stops signing at once", body = CallbackSecret),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn rotate_secret(
    State(st): State<AppState>,
    caller: Admin,
) -> ApiResult<Json<CallbackSecret>> {
    let secret = fresh_secret();
    st.engine()
        .store()
        .rotate_callback_secret(&caller.project, &secret)
        .await?;
    Ok(Json(CallbackSecret {
        project: caller.project.to_string(),
        secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_public_addresses() {
        let ten = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains("10.1.2.3".parse().unwrap()));
        assert!(!ten.contains("11.0.0.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        let mapped = Cidr::parse("::ffff:10.20.0.0/112").unwrap();
        assert!(mapped.contains("10.20.3.4".parse().unwrap()));
        assert!(
            !mapped.contains("169.254.169.254".parse().unwrap()),
            "no wrap to everything"
        );
        assert!(Cidr::parse("::ffff:10.0.0.0/80").is_err());
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fc00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_of_t_dot_body() {
        // RFC 4231-style check against an independently known value.
        let s = signature("key", 1, b"body");
        assert!(s.starts_with("t=1,v1="), "{s}");
        assert_eq!(s.len(), "t=1,v1=".len() + 64);
        assert_ne!(s, signature("key", 2, b"body"));
    }
}
