//! The proxy between a client holding an attempt's token and `mock-anthropic`: the real
//! credential goes upstream, never back; answers stream through; every call is metered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proxy::{Call, Config, Credential, Grant, Limit, Prices, Proxy, Sink};
use mock_anthropic::{MockAnthropic, fingerprint};
use serde_json::{Value, json};

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
    refused: Mutex<Vec<String>>,
}

impl Sink for Recorder {
    fn record(
        &self,
        call: Call,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        self.calls.lock().unwrap().push(call);
        Box::pin(async {})
    }
    fn refused(
        &self,
        path: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        self.refused.lock().unwrap().push(path);
        Box::pin(async {})
    }
}

const CANARY: &str = "sk-ant-canary-0123456789abcdef";

fn grant() -> Grant {
    Grant {
        project: "team-a".into(),
        job: "job-1".into(),
        attempt: 1,
        key_id: Some("k1".into()),
        agent: None,
        routine: None,
        limits: Vec::new(),
    }
}

fn limit(scope: &str, cap: i64, spent: i64) -> Limit {
    Limit {
        scope: scope.into(),
        label: format!("the budget of {scope}"),
        cap_micro_usd: cap,
        spent_micro_usd: spent,
    }
}

async fn proxy_to(mock: &MockAnthropic, sink: Arc<Recorder>) -> Proxy {
    Proxy::start(
        Config {
            upstream: mock.base_url(),
            credential: Credential::ApiKey(CANARY.into()),
            prices: Prices::default(),
            connect_timeout: Duration::from_secs(5),
            socket: None,
        },
        sink,
    )
    .await
    .unwrap()
}

fn message(prompt: &str, stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": prompt}]})
}

#[tokio::test]
async fn a_call_with_a_token_goes_upstream_with_the_real_credential_and_is_metered() {
    let mock = MockAnthropic::start().await;
    let sink = Arc::new(Recorder::default());
    let proxy = proxy_to(&mock, sink.clone()).await;
    let token = proxy.grant(grant());
    let http = reqwest::Client::new();
    let base = proxy.base_url();
    assert_eq!(
        http.head(format!("{base}/")).send().await.unwrap().status(),
        200,
        "the CLI's preflight"
    );
    let resp = http
        .post(format!("{base}/v1/messages?beta=true"))
        .header("x-api-key", token.value())
        .header("anthropic-version", "2023-06-01")
        .json(&message("MOCK_USAGE 100 50", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains("message_stop"), "{text}");
    assert!(!text.contains(CANARY));
    let seen = mock.messages_requests();
    assert_eq!(seen.len(), 1);
    let key = seen[0].header("x-api-key").unwrap();
    assert!(
        key.contains(&fingerprint(CANARY)),
        "upstream got the real credential: {key}"
    );
    assert!(!key.contains(&fingerprint(token.value())));
    // The call is metered once its answer has ended.
    let mut calls = Vec::new();
    for _ in 0..100 {
        calls = sink.calls.lock().unwrap().clone();
        if !calls.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(
        (
            c.grant.job.as_str(),
            c.status,
            c.usage.input_tokens,
            c.usage.output_tokens
        ),
        ("job-1", 200, 100, 50)
    );
    assert_eq!(
        c.cost_micro_usd,
        100 * 3 + 50 * 15,
        "sonnet: $3 and $15 per MTok"
    );
    assert!(c.priced);
    // A JSON answer is metered too.
    let resp = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", token.value())
        .json(&message("MOCK_USAGE 7 3", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    for _ in 0..100 {
        if sink.calls.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sink.calls.lock().unwrap()[1].usage.output_tokens, 3);
}

#[tokio::test]
async fn a_forged_or_dead_token_is_refused_and_nothing_goes_upstream() {
    let mock = MockAnthropic::start().await;
    let sink = Arc::new(Recorder::default());
    let proxy = proxy_to(&mock, sink.clone()).await;
    let http = reqwest::Client::new();
    let call = |key: String| {
        http.post(format!("{}/v1/messages", proxy.base_url()))
            .header("x-api-key", key)
            .json(&message("MOCK_TEXT hi", false))
            .send()
    };
    let forged = call("btk-forged".into()).await.unwrap();
    assert_eq!(forged.status(), 401);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    let token = proxy.grant(grant());
    let value = token.value().to_string();
    assert_eq!(call(value.clone()).await.unwrap().status(), 200);
    drop(token);
    assert_eq!(proxy.live_tokens(), 0);
    assert_eq!(
        call(value).await.unwrap().status(),
        401,
        "a token dies with its attempt"
    );
    assert_eq!(mock.messages_requests().len(), 1);
    assert_eq!(sink.refused.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_api_error_the_cli_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = Arc::new(Recorder::default());
    let proxy = Proxy::start(
        Config {
            upstream: format!("http://127.0.0.1:{port}"),
            credential: Credential::ApiKey(CANARY.into()),
            prices: Prices::default(),
            connect_timeout: Duration::from_secs(2),
            socket: None,
        },
        sink,
    )
    .await
    .unwrap();
    let token = proxy.grant(grant());
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", proxy.base_url()))
        .header("x-api-key", token.value())
        .json(&message("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["error"]["type"].as_str()),
        (Some("error"), Some("api_error"))
    );
}

#[tokio::test]
async fn a_budget_of_two_and_a_half_calls_refuses_the_third() {
    let mock = MockAnthropic::start().await;
    let sink = Arc::new(Recorder::default());
    let proxy = proxy_to(&mock, sink.clone()).await;
    // Each call: 100 in, 50 out on sonnet = 1,050 micro-dollars.
    let token = proxy.grant(Grant {
        limits: vec![limit("job:job-1", 2_625, 0)],
        ..grant()
    });
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = http
            .post(format!("{}/v1/messages", proxy.base_url()))
            .header("x-api-key", token.value())
            .json(&message("MOCK_USAGE 100 50", true))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        // The answer ends once its call is counted: no wait is needed.
        resp.bytes().await.unwrap();
    }
    assert_eq!(statuses, [200, 200, 400, 400]);
    assert_eq!(
        token.budget_exceeded().as_deref(),
        Some("the budget of job:job-1")
    );
    assert_eq!(
        mock.messages_requests().len(),
        2,
        "refused calls never go upstream"
    );
    let spent: i64 = sink
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.cost_micro_usd)
        .sum();
    assert!(
        spent <= 2_625 + 1_050,
        "within one call of the cap: {spent}"
    );
}

#[tokio::test]
async fn tokens_of_one_budget_share_it_and_eight_at_once_overshoot_by_at_most_a_call_each() {
    let mock = MockAnthropic::start().await;
    let sink = Arc::new(Recorder::default());
    let proxy = Arc::new(proxy_to(&mock, sink.clone()).await);
    // A project's day: 10.5 calls of 1,050, of which the ledger already holds 2.
    let cap = 11_025;
    let scope = "project:team-a:day:2026-12-06";
    let mut tasks = Vec::new();
    for i in 0..8 {
        let token = proxy.grant(Grant {
            job: format!("job-{i}"),
            limits: vec![limit(scope, cap, 2_100)],
            ..grant()
        });
        let base = proxy.base_url();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut made = 0;
            loop {
                let resp = http
                    .post(format!("{base}/v1/messages"))
                    .header("x-api-key", token.value())
                    .json(&message("MOCK_USAGE 100 50", false))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                resp.bytes().await.unwrap();
                if status != 200 {
                    assert_eq!(status, 400);
                    return (made, token.budget_exceeded());
                }
                made += 1;
                assert!(made < 100, "never refused");
            }
        }));
    }
    let mut made = 0;
    for t in tasks {
        let (n, refused) = t.await.unwrap();
        made += n;
        assert_eq!(
            refused.as_deref(),
            Some(format!("the budget of {scope}").as_str())
        );
    }
    assert_eq!(mock.messages_requests().len(), made);
    let spent = 2_100 + made as i64 * 1_050;
    assert!(spent >= cap - 1_050, "the budget was used: {spent}");
    assert!(
        spent <= cap + 8 * 1_050,
        "at most one call over per token: {spent} against {cap}"
    );
    println!(
        "eight tokens made {made} calls against a budget of 8.5 more: {spent} of {cap} micro-dollars"
    );
}
