//! The proxy between a client holding an attempt's token and `mock-anthropic`: the real
//! credential goes upstream, never back; answers stream through; every call is metered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proxy::{Call, Config, Credential, Grant, Prices, Proxy, Sink};
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
        cap_micro_usd: None,
    }
}

async fn proxy_to(mock: &MockAnthropic, sink: Arc<Recorder>) -> Proxy {
    Proxy::start(
        Config {
            upstream: mock.base_url(),
            credential: Credential::ApiKey(CANARY.into()),
            prices: Prices::default(),
            connect_timeout: Duration::from_secs(5),
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
        cap_micro_usd: Some(2_625),
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
        resp.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, [200, 200, 400, 400]);
    assert!(token.budget_exceeded());
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
