//! The load a chaos run puts on the server: submitters and stream followers, and what
//! they saw.

use super::*;

/// What the clients saw: acknowledged job ids, and per followed job the events by seq.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) acknowledged: Vec<String>,
    pub(super) streams: HashMap<String, BTreeMap<i64, (String, String)>>,
    pub(super) stream_violations: Vec<String>,
    /// Followers still running, by number: the job, the last seq seen and what the
    /// follower is doing, so a stream that never closes can be told apart.
    pub(super) open: BTreeMap<usize, (String, i64, &'static str)>,
}

/// The job's state, when the server answers.
pub(super) async fn job_state(http: &reqwest::Client, base: &str, id: &str) -> Option<JobState> {
    let resp = http
        .get(format!("{base}/v1/jobs/{id}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let job: Value = resp.json().await.ok()?;
    job["state"].as_str().and_then(JobState::parse)
}

/// Submits jobs until stopped, each with its own Idempotency-Key, retrying a submission
/// until the server acknowledges it (through kills). Closed loop: each waits (`?wait=`) for
/// its job before the next, so the load stays steady however slow the server is.
pub(super) async fn submitter(
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    n: usize,
) {
    // Each client starts on its own node and moves to the next when that one is down.
    let mut at = n;
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        i += 1;
        let key = format!("chaos-{n}-{i}");
        let prompt = match i % 6 {
            0 => "FAKE slow 5 100",
            1 => "FAKE tool",
            2 => "FAKE slow 3 30",
            // A CLI whose child outlives it: the hard case for "no process survives".
            3 => "FAKE grandchild\nFAKE slow 4 60",
            _ => "FAKE text chaos",
        };
        let body = json!({"prompt": prompt, "max_attempts": 20});
        loop {
            let base = &bases[at % bases.len()];
            let resp = http
                .post(format!("{base}/v1/jobs"))
                .header("idempotency-key", &key)
                .timeout(Duration::from_secs(5))
                .json(&body)
                .send()
                .await;
            if let Ok(r) = resp
                && r.status().is_success()
                && let Ok(job) = r.json::<Value>().await
                && let Some(id) = job["id"].as_str()
            {
                {
                    let mut s = seen.lock().unwrap();
                    if !s.acknowledged.iter().any(|x| x == id) {
                        s.acknowledged.push(id.to_string());
                    }
                }
                // Closed loop: wait for this job to end (through kills) before the next.
                let id = id.to_string();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let base = &bases[at % bases.len()];
                    match job_state(&http, base, &id).await {
                        Some(state) if state.is_terminal() => break,
                        Some(_) => {}
                        None => at += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                break;
            }
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            at += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How long a stream request may wait for its response headers.
pub(super) const STREAM_HEADERS_WITHIN: Duration = Duration::from_secs(10);

/// Follows one job's events over SSE, reconnecting with Last-Event-ID through kills,
/// until its terminal event; records what it saw and any gap or duplicate.
pub(super) async fn follower(
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    first: usize,
    id: String,
    seen: Arc<Mutex<Seen>>,
    n: usize,
) {
    let mut last = 0i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    let doing = |last: i64, what: &'static str| {
        seen.lock()
            .unwrap()
            .open
            .insert(n, (id.clone(), last, what));
    };
    // Every reconnect goes to the next node: a stream resumes anywhere.
    let mut at = first;
    'outer: while Instant::now() < deadline {
        let base = &bases[at % bases.len()];
        at += 1;
        doing(last, "connecting");
        let request = http
            .get(format!("{base}/v1/jobs/{id}/events"))
            .header("last-event-id", last.to_string())
            .send();
        // A live server answers a stream's headers at once and a dead one resets the
        // connection, so a request left without either is the server's fault.
        let Ok(resp) = tokio::time::timeout(STREAM_HEADERS_WITHIN, request).await else {
            seen.lock().unwrap().stream_violations.push(format!(
                "job {id}: no answer to a stream request within {} s",
                STREAM_HEADERS_WITHIN.as_secs()
            ));
            continue;
        };
        let Ok(resp) = resp else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        doing(last, "streaming");
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        let (mut ev_id, mut ev_kind, mut ev_data) = (None::<i64>, String::new(), String::new());
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { continue 'outer };
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if let Some(v) = line.strip_prefix("id: ") {
                    ev_id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    ev_kind = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    ev_data = v.to_string();
                } else if line.is_empty()
                    && let Some(seq) = ev_id.take()
                {
                    let mut s = seen.lock().unwrap();
                    if seq != last + 1 {
                        s.stream_violations
                            .push(format!("job {id}: after seq {last} the stream sent {seq}"));
                    }
                    last = seq;
                    let terminal = matches!(
                        ev_kind.as_str(),
                        "job.completed" | "job.failed" | "job.dead" | "job.cancelled"
                    );
                    s.streams.entry(id.clone()).or_default().insert(
                        seq,
                        (std::mem::take(&mut ev_kind), std::mem::take(&mut ev_data)),
                    );
                    if terminal {
                        s.open.remove(&n);
                        return;
                    }
                }
            }
        }
        doing(last, "ended without a terminal event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
