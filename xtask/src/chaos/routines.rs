//! Routines under chaos: a cron trigger that fires every second, and a signed webhook
//! that a sender calls with numbered deliveries (and sends again, as a retrying caller
//! would), while servers die. Checked afterwards from the store: every slot between the
//! first and the last fired, each once; every acknowledged delivery fired once, and a
//! delivery sent again never started a second run.

use super::*;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The routines of a run.
pub(super) struct Routines {
    pub(super) cron: String,
    pub(super) hook: String,
    hook_trigger: String,
    secret: String,
}

/// What the webhook sender saw.
#[derive(Default)]
pub(super) struct Deliveries {
    /// Deliveries a server acknowledged (202), by number.
    pub(super) acknowledged: Vec<u64>,
    /// A delivery sent again after its acknowledgement that was answered "queued".
    pub(super) doubled: Vec<String>,
    pub(super) resent: usize,
    /// Deliveries sent (numbered 1 to this), acknowledged or not.
    pub(super) sent: u64,
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    let resp = http.post(url).json(&body).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {v}");
    }
    Ok(v)
}

pub(super) async fn setup(http: &reqwest::Client, base: &str) -> anyhow::Result<Routines> {
    let cron = post(
        http,
        &format!("{base}/v1/routines"),
        json!({"name": "chaos-cron", "prompt": "FAKE text cron", "daily_allowance": 1_000_000}),
    )
    .await?;
    let cron_id = cron["id"].as_str().unwrap_or_default().to_string();
    post(
        http,
        &format!("{base}/v1/routines/{cron_id}/triggers"),
        json!({"type": "cron", "schedule": "* * * * * *", "overlap": "allow"}),
    )
    .await?;
    let hook = post(
        http,
        &format!("{base}/v1/routines"),
        json!({"name": "chaos-hook", "prompt": "FAKE text hook {{ event.n }}", "daily_allowance": 1_000_000}),
    )
    .await?;
    let hook_id = hook["id"].as_str().unwrap_or_default().to_string();
    let secret = format!("chaos-secret-{}", rand::rng().random::<u64>());
    let t = post(
        http,
        &format!("{base}/v1/routines/{hook_id}/triggers"),
        json!({"type": "webhook", "secret": secret, "tolerance_seconds": 600}),
    )
    .await?;
    Ok(Routines {
        cron: cron_id,
        hook: hook_id,
        hook_trigger: t["id"].as_str().unwrap_or_default().to_string(),
        secret,
    })
}

fn signed(secret: &str, delivery: &str, body: &str) -> (String, String) {
    let ts = (now_ms() / 1000).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{ts}.{delivery}.").as_bytes());
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (ts, format!("sha256={hex}"))
}

/// Sends numbered deliveries until stopped, to whichever node answers, each until one
/// acknowledges it; now and then sends an acknowledged one again.
pub(super) async fn hook_sender(
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    r: Arc<Routines>,
    seen: Arc<Mutex<Deliveries>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut at = 0;
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let resend = {
            let s = seen.lock().unwrap();
            (!s.acknowledged.is_empty() && rand::rng().random_range(0..5) == 0)
                .then(|| s.acknowledged[rand::rng().random_range(0..s.acknowledged.len())])
        };
        let number = resend.unwrap_or_else(|| {
            n += 1;
            n
        });
        seen.lock().unwrap().sent = n;
        let body = json!({"n": number}).to_string();
        loop {
            if stop.load(std::sync::atomic::Ordering::SeqCst) && resend.is_none() {
                return;
            }
            let delivery = format!("d-{number}");
            let (ts, sig) = signed(&r.secret, &delivery, &body);
            let sent = http
                .post(format!(
                    "{}/v1/hooks/{}",
                    bases[at % bases.len()],
                    r.hook_trigger
                ))
                .header("content-type", "application/json")
                .header("x-baton-timestamp", ts)
                .header("x-baton-signature", sig)
                .header("x-baton-delivery", delivery)
                .body(body.clone())
                .send()
                .await;
            let answer = match sent {
                Ok(resp) if resp.status().as_u16() == 202 => resp.json::<Value>().await.ok(),
                _ => None,
            };
            let Some(answer) = answer else {
                at += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let mut s = seen.lock().unwrap();
            match resend {
                Some(_) => {
                    s.resent += 1;
                    if answer["status"] != "duplicate" {
                        s.doubled
                            .push(format!("d-{number}: sent again, answered {answer}"));
                    }
                }
                None => s.acknowledged.push(number),
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Pauses both routines (through any node that answers): no fire after this.
pub(super) async fn pause(http: &reqwest::Client, bases: &[String], r: &Routines) {
    for id in [&r.cron, &r.hook] {
        for attempt in 0..200 {
            let base = &bases[attempt % bases.len()];
            if let Ok(resp) = http
                .post(format!("{base}/v1/routines/{id}/pause"))
                .send()
                .await
                && resp.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The jobs the routines queued, to be checked with every acknowledged job.
pub(super) async fn jobs(store: &Store, r: &Routines) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for routine in [&r.cron, &r.hook] {
        for (f, _) in store
            .routine_fires(&baton_core::ProjectId::default(), routine, 1_000_000)
            .await?
        {
            ids.extend(f.job_id);
        }
    }
    Ok(ids)
}

/// The routines' violations, and a line on what they did.
pub(super) async fn check(
    store: &Store,
    r: &Routines,
    deliveries: &Deliveries,
    violations: &mut BTreeMap<&'static str, Vec<String>>,
) -> anyhow::Result<String> {
    let project = baton_core::ProjectId::default();
    let fires = store.routine_fires(&project, &r.cron, 1_000_000).await?;
    let mut slots: Vec<i64> = fires
        .iter()
        .filter_map(|(f, _)| f.fire_key.strip_prefix("slot:")?.parse().ok())
        .collect();
    slots.sort();
    let all = slots.len();
    slots.dedup();
    if slots.len() != all {
        violations
            .entry("7 every cron slot fires once")
            .or_default()
            .push(format!("{} slots fired more than once", all - slots.len()));
    }
    for w in slots.windows(2) {
        if w[1] - w[0] != 1_000 {
            violations
                .entry("7 every cron slot fires once")
                .or_default()
                .push(format!(
                    "slots {} to {} did not fire",
                    w[0] + 1_000,
                    w[1] - 1_000
                ));
        }
    }
    for (f, _) in &fires {
        if f.job_id.is_none() {
            violations
                .entry("7 every cron slot fires once")
                .or_default()
                .push(format!("{} has no job", f.fire_key));
        }
    }
    let hooks = store.routine_fires(&project, &r.hook, 1_000_000).await?;
    let fired: std::collections::HashSet<&str> =
        hooks.iter().map(|(f, _)| f.fire_key.as_str()).collect();
    for n in &deliveries.acknowledged {
        if !fired.contains(format!("delivery:d-{n}").as_str()) {
            violations
                .entry("8 every acknowledged webhook fires once")
                .or_default()
                .push(format!("d-{n} was acknowledged but never fired"));
        }
    }
    // A delivery whose answer was lost with its server may have fired unacknowledged; it
    // was sent again under its number, so there is never more than one fire per number.
    let numbers: Vec<u64> = fired
        .iter()
        .filter_map(|k| k.strip_prefix("delivery:d-")?.parse().ok())
        .collect();
    if numbers.len() != hooks.len() || numbers.iter().any(|n| *n == 0 || *n > deliveries.sent) {
        violations
            .entry("8 every acknowledged webhook fires once")
            .or_default()
            .push(format!(
                "{} fires for {} deliveries sent",
                hooks.len(),
                deliveries.sent
            ));
    }
    for d in &deliveries.doubled {
        violations
            .entry("8 every acknowledged webhook fires once")
            .or_default()
            .push(d.clone());
    }
    Ok(format!(
        "  routines            {} cron slots fired ({} s of schedule), {} webhook deliveries acknowledged, {} sent again",
        slots.len(),
        slots
            .last()
            .zip(slots.first())
            .map_or(0, |(l, f)| (l - f) / 1000 + 1),
        deliveries.acknowledged.len(),
        deliveries.resent
    ))
}
