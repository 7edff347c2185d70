//! Live streaming: a client joining mid-job gets the whole history then the live tail;
//! reconnecting with Last-Event-ID yields no gap and no duplicate.

use baton::client::{Client, SseEvent};
use serde_json::Value;

use crate::support::{Server, prompt};

fn seqs(events: &[SseEvent]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn joining_mid_job_replays_history_then_tails_live() {
    let server = Server::start().await;
    let client = Client::new(&server.base, None).unwrap();
    let job = server.submit(prompt("FAKE slow 12 150")).await;
    let id = job["id"].as_str().unwrap().to_string();
    // Join once the job has produced some output, and is still running.
    let joined = server
        .wait_until(&id, |j| j["last_event_seq"].as_i64() >= Some(4))
        .await;
    assert_eq!(
        joined["state"], "running",
        "the job ended before the client joined"
    );

    // First connection: take five events, then drop the connection mid-job.
    let mut first = Vec::new();
    client
        .follow(&id, None, |e| {
            first.push(e.clone());
            first.len() < 5
        })
        .await
        .unwrap();
    assert_eq!(seqs(&first), vec![1, 2, 3, 4, 5]);
    // Reconnect where it left off and read to the end.
    let mut rest = Vec::new();
    client
        .follow(&id, Some(5), |e| {
            rest.push(e.clone());
            true
        })
        .await
        .unwrap();
    let all: Vec<SseEvent> = first.into_iter().chain(rest).collect();
    let got = seqs(&all);
    let want: Vec<i64> = (1..=got.len() as i64).collect();
    assert_eq!(got, want, "a gap or a duplicate across the reconnect");
    assert_eq!(all.last().unwrap().event.as_deref(), Some("job.completed"));

    // What the stream carried is exactly the stored log.
    let stored = server.events(&id).await;
    assert_eq!(stored.len(), all.len());
    for (s, e) in stored.iter().zip(&all) {
        assert_eq!(
            s["seq"].as_i64().unwrap().to_string(),
            *e.id.as_ref().unwrap()
        );
        assert_eq!(s["kind"].as_str(), e.event.as_deref());
        assert_eq!(s["data"], serde_json::from_str::<Value>(&e.data).unwrap());
    }
    let chunks = all
        .iter()
        .filter(|e| e.event.as_deref() == Some("assistant"))
        .count();
    assert_eq!(chunks, 12);

    // A client reconnecting after the end gets nothing more, and the stream closes.
    let mut after_end = Vec::new();
    client
        .follow(&id, Some(got.len() as i64), |e| {
            after_end.push(e.clone());
            true
        })
        .await
        .unwrap();
    assert!(after_end.is_empty());
    server.stop().await;
}
