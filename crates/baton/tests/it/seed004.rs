//! The Agent SDK service's job API, driven by its own curl examples (with Baton's URL and
//! a key): submit, poll, stream; `continue`; and 401 without a key.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Server;
use crate::tenancy::{admin_key, tenant};

/// `curl` with `args` (off the runtime's thread, which serves the requests), its
/// standard output; the test fails loudly without curl under `BATON_REQUIRE_ALL=1` and
/// says why it skips otherwise.
async fn curl(args: &[&str]) -> Option<String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .arg("--max-time")
            .arg("60")
            .args(&args)
            .output()
    })
    .await
    .unwrap();
    match out {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(e) => {
            assert!(
                std::env::var("BATON_REQUIRE_ALL").as_deref() != Ok("1"),
                "BATON_REQUIRE_ALL=1 but curl cannot run: {e}"
            );
            eprintln!("skipped: curl cannot run ({e}); install curl to run seed 004's examples");
            None
        }
    }
}

fn data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_agent_service_examples_run_as_written_with_a_key_and_not_without() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let key = tenant(&s, &admin, "agents").await;
    let auth = format!("Authorization: Bearer {key}");
    let url = |p: &str| format!("{}{p}", s.base);

    // Submit, as the example writes it.
    let Some(out) = curl(&[
        "-s",
        "-X",
        "POST",
        &url("/claude"),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"prompt": "Analyze TypeScript files and generate dependency graph"}"#,
    ])
    .await
    else {
        return;
    };
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["status"], "pending", "{created}");
    let id = created["job_id"].as_str().unwrap().to_string();

    // Poll until completed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let job = loop {
        let out = curl(&[
            "-s",
            "-X",
            "GET",
            &url(&format!("/claude/jobs/{id}")),
            "-H",
            &auth,
        ])
        .await
        .unwrap();
        let job: Value = serde_json::from_str(&out).unwrap();
        assert!(
            ["pending", "in_progress", "completed"].contains(&job["status"].as_str().unwrap()),
            "{job}"
        );
        if job["status"] == "completed" {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(job["job_id"], id.as_str());
    assert!(job["result"]["output"].is_string(), "{job}");
    assert!(job["result"]["cost_usd"].is_number(), "{job}");
    assert!(job["result"]["usage"].is_object(), "{job}");
    for t in ["created_at", "started_at", "completed_at"] {
        assert!(job[t].is_string(), "{t}: {job}");
    }
    assert!(job.get("error").is_none());

    // `continue` resumes the project's latest conversation; without it, a new one.
    let first_session = s.as_key(&key).get(&format!("/v1/jobs/{id}")).await.1["session_id"].clone();
    let (_, next) = s
        .as_key(&key)
        .post(
            "/claude",
            json!({"prompt": "FAKE text again", "continue": true}),
        )
        .await;
    let next = s
        .as_key(&key)
        .get(&format!("/v1/jobs/{}", next["job_id"].as_str().unwrap()))
        .await
        .1;
    assert_eq!(next["session_id"], first_session, "{next}");
    let (_, fresh) = s
        .as_key(&key)
        .post("/claude", json!({"prompt": "FAKE text new"}))
        .await;
    let fresh = s
        .as_key(&key)
        .get(&format!("/v1/jobs/{}", fresh["job_id"].as_str().unwrap()))
        .await
        .1;
    assert_ne!(fresh["session_id"], first_session);

    // Stream: each CLI message as the SDK yields it, then [DONE].
    let stream_url = url("/claude/stream");
    let stream = |body: &'static str| {
        let (target, auth) = (stream_url.clone(), auth.clone());
        async move {
            let args = [
                "-s",
                "-N",
                "-X",
                "POST",
                &target,
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
            ];
            curl(&args).await.unwrap()
        }
    };
    let out = stream(r#"{"prompt": "FAKE text streamed"}"#).await;
    let lines = data_lines(&out);
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"), "{out}");
    let messages: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"system"), "{types:?}");
    assert!(types.contains(&"assistant"), "{types:?}");
    assert_eq!(types.last(), Some(&"result"), "{types:?}");
    assert_eq!(messages.last().unwrap()["result"], "streamed");
    assert!(messages.last().unwrap()["total_cost_usd"].is_number());

    // A failure mid-way: {"error": …}, and the stream ends.
    let out = stream(r#"{"prompt": "FAKE crash"}"#).await;
    let lines = data_lines(&out);
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(last["error"].is_string(), "{out}");
    assert!(!lines.iter().any(|l| l == "[DONE]"));

    // Without a key: 401, on all three.
    let post = [
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"prompt": "x"}"#,
    ];
    for (method, path) in [
        (&post[..], "/claude".to_string()),
        (&["-X", "GET"][..], format!("/claude/jobs/{id}")),
        (&post[..], "/claude/stream".to_string()),
    ] {
        let target = url(&path);
        let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", &target];
        args.extend_from_slice(method);
        assert_eq!(curl(&args).await.unwrap(), "401", "{path}");
    }
    s.stop().await;
}
