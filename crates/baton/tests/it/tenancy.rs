//! Tenancy: API keys and scopes, projects with their quotas and defaults, the audit log,
//! and the two-project isolation suite (every route, native and compatible).

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Server, baton_bin};

const UNAUTHENTICATED: &str = baton_api::auth::UNAUTHENTICATED;

/// The first key, made through the API while Baton is open: an administrator of `default`.
pub async fn admin_key(s: &Server) -> String {
    let (status, k) = s
        .post(
            "/v1/keys",
            json!({"project": "default", "name": "ops", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(status, 201, "{k}");
    k["key"].as_str().unwrap().to_string()
}

/// The first key, over HTTPS to a server whose certificate the CA in `ca` signed.
pub async fn admin_key_over(s: &Server, ca: &std::path::Path) -> String {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let resp = http
        .post(format!("{}/v1/keys", s.base))
        .json(&json!({"project": "default", "name": "ops", "scopes": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A key of `project` with `scopes`, made by an administrator.
pub async fn key_of(s: &Server, admin: &str, project: &str, scopes: &[&str]) -> String {
    let (status, k) = s
        .as_key(admin)
        .post(
            "/v1/keys",
            json!({"project": project, "name": format!("{project} key"), "scopes": scopes}),
        )
        .await;
    assert_eq!(status, 201, "{k}");
    k["key"].as_str().unwrap().to_string()
}

/// A project and a `jobs:write` key of it.
pub async fn tenant(s: &Server, admin: &str, project: &str) -> String {
    let (status, p) = s
        .as_key(admin)
        .post("/v1/projects", json!({"id": project}))
        .await;
    assert_eq!(status, 201, "{p}");
    key_of(s, admin, project, &["jobs:write"]).await
}

fn keys_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(baton_bin())
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("BATON_API_KEY")
        .output()
        .unwrap()
}

/// A raw request, for the status, the headers and the body together.
async fn raw(
    s: &Server,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = s.http.request(method, format!("{}{path}", s.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn open_until_the_first_key_then_every_route_but_health_needs_one() {
    let s = Server::start().await;
    let (status, health) = s.get("/v1/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["auth"], "open");
    assert!(health["node_id"].is_string(), "{health}");
    let (status, _) = s
        .post("/v1/jobs", json!({"prompt": "FAKE text open"}))
        .await;
    assert_eq!(status, 201, "open: no key needed");

    // The first key, made offline on the data directory while the server runs.
    let out = keys_cli(
        s.dir.path(),
        &["create", "--admin", "--name", "ops", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("bk_{id}_")), "{made}");
    assert_eq!(made["scopes"], json!(["admin"]));

    // The server notices within its recheck interval (1 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.get("/v1/jobs").await.0 != 401 {
        assert!(tokio::time::Instant::now() < deadline, "never enforced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every way to present no valid key gets the same answer.
    let (_, secret) = key.rsplit_once('_').unwrap();
    let wrong_secret = format!("bk_{id}_{}", "0".repeat(secret.len()));
    let unknown_id = format!("bk_{}_{secret}", "f".repeat(id.len()));
    let bearer = |k: &str| format!("Bearer {k}");
    let presentations: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("authorization", "Bearer".into())],
        vec![("authorization", bearer("not-a-key"))],
        vec![("authorization", format!("Basic {key}"))],
        vec![("authorization", bearer(&wrong_secret))],
        vec![("authorization", bearer(&unknown_id))],
        vec![("x-api-key", wrong_secret.clone())],
    ];
    for p in &presentations {
        let headers: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (method, path) in [
            (Method::GET, "/v1/jobs"),
            (Method::POST, "/v1/jobs"),
            (Method::GET, "/openapi.json"),
            (Method::POST, "/claude"),
            (Method::GET, "/v1/keys"),
        ] {
            let (status, h, body) = raw(&s, method, path, &headers).await;
            assert_eq!(status, 401, "{p:?} {path}: {body}");
            assert_eq!(body["error"]["type"], "authentication_error");
            assert_eq!(body["error"]["message"], UNAUTHENTICATED, "{p:?}");
            assert_eq!(h["www-authenticate"], "Bearer realm=\"baton\"");
        }
    }
    // Health stays open, and says only whether Baton is up.
    let (status, health) = s.get("/v1/health").await;
    assert_eq!(status, 200);
    assert_eq!(health, json!({"status": "ok", "auth": "keys"}));
    let (_, health) = s.as_key(&key).get("/v1/health").await;
    assert!(
        health["node_id"].is_string(),
        "with a key, the detail: {health}"
    );

    // Both headers carry a key.
    let (status, _) = s.as_key(&key).get("/v1/jobs").await;
    assert_eq!(status, 200);
    let (status, _, _) = raw(&s, Method::GET, "/v1/jobs", &[("x-api-key", &key)]).await;
    assert_eq!(status, 200);

    // Listed offline without the secret. Revoked offline: the server stops trusting its
    // copy of the key within KEY_TTL (1 s).
    let out = keys_cli(s.dir.path(), &["ls", "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&id) && !listed.contains(secret), "{listed}");
    let out = keys_cli(s.dir.path(), &["revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + baton_api::auth::KEY_TTL * 5;
    let body = loop {
        let (status, _, body) = raw(&s, Method::GET, "/v1/jobs", &[("x-api-key", &key)]).await;
        if status == 401 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepted: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["error"]["message"], UNAUTHENTICATED);

    // An expired key is refused the same way.
    let now = chrono::Utc::now().timestamp_millis();
    let issued = baton_api::keys::issue();
    s.store
        .insert_key(
            &baton_store::NewKey {
                id: issued.id.clone(),
                project_id: baton_core::ProjectId::default(),
                name: "expired".into(),
                scopes: vec!["admin".into()],
                secret_hash: issued.hash.clone(),
                expires_at: Some(now - 1000),
                requests_per_minute: None,
                budget: None,
            },
            now - 60_000,
        )
        .await
        .unwrap();
    let (status, _, body) = raw(&s, Method::GET, "/v1/jobs", &[("x-api-key", &issued.key)]).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], UNAUTHENTICATED);
    s.stop().await;
}

#[tokio::test]
async fn scopes_limit_what_a_key_may_do_and_bad_key_requests_are_refused() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let reader = key_of(&s, &admin, "default", &["jobs:read"]).await;
    let writer = key_of(&s, &admin, "default", &["jobs:write"]).await;

    let (status, body) = s
        .as_key(&reader)
        .post("/v1/jobs", json!({"prompt": "FAKE text no"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(body["error"]["required_scope"], "jobs:write");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("jobs:write")
    );
    let (status, _) = s.as_key(&reader).get("/v1/jobs").await;
    assert_eq!(status, 200, "jobs:read reads");
    let (status, body) = s.as_key(&writer).get("/v1/projects").await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["required_scope"], "admin");
    let job = s
        .as_key(&writer)
        .run(json!({"prompt": "FAKE text yes"}))
        .await;
    assert_eq!(
        job["state"], "completed",
        "jobs:write writes and reads: {job}"
    );
    let (status, _) = s
        .as_key(&reader)
        .post("/claude", json!({"prompt": "x"}))
        .await;
    assert_eq!(status, 403);

    let a = s.as_key(&admin);
    for (body, needle) in [
        (
            json!({"project": "default", "name": "k", "scopes": ["jobs:everything"]}),
            "unknown scope",
        ),
        (
            json!({"project": "nope", "name": "k", "scopes": ["jobs:read"]}),
            "no project",
        ),
        (
            json!({"project": "default", "name": "k", "scopes": ["jobs:read"], "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"project": "default", "name": "k", "scopes": ["jobs:read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "future",
        ),
        (
            json!({"project": "default", "name": "k", "scopes": []}),
            "scopes",
        ),
        (
            json!({"project": "default", "name": "", "scopes": ["jobs:read"]}),
            "name",
        ),
        (
            json!({"project": "default", "scopes": ["jobs:read"]}),
            "name",
        ),
    ] {
        let (status, err) = a.post("/v1/keys", body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {err}"
        );
    }

    // A repeat of a creation with its Idempotency-Key makes nothing and shows no secret.
    let create = |idem: &'static str| {
        s.http
            .post(format!("{}/v1/keys", s.base))
            .bearer_auth(&admin)
            .header("idempotency-key", idem)
            .json(&json!({"project": "default", "name": "ci", "scopes": ["jobs:read"]}))
            .send()
    };
    let first: Value = create("k-1").await.unwrap().json().await.unwrap();
    let again = create("k-1").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert!(
        first["key"].is_string() && again.get("key").is_none(),
        "{again}"
    );

    let (_, keys) = a.get("/v1/keys").await;
    let keys = keys["data"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "admin, reader, writer, ci");
    assert!(keys.iter().all(|k| k.get("key").is_none()));
    let used = keys
        .iter()
        .find(|k| reader.contains(k["id"].as_str().unwrap()))
        .unwrap();
    assert!(used["last_used_at"].is_string(), "{used}");
    s.stop().await;
}

#[tokio::test]
async fn projects_carry_quotas_and_job_defaults_and_are_deleted_only_with_purge() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let a = s.as_key(&admin);
    let (status, p) = a
        .post(
            "/v1/projects",
            json!({"id": "team-a", "name": "Team A", "quotas": {"max_queued": 2},
                   "defaults": {"model": "claude-team-a", "timeout_ms": 120000}}),
        )
        .await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["quotas"]["max_queued"], 2);
    let (status, _) = a.post("/v1/projects", json!({"id": "team-a"})).await;
    assert_eq!(status, 409);
    for bad in [
        json!({"id": "Team A"}),
        json!({"id": "t", "quotas": {"max_queued": 0}}),
        json!({"id": "t", "quotas": {"max_parallel": 3}}),
        json!({"id": "t", "defaults": {"prompt": "x"}}),
        json!({"id": "t", "defaults": {"bogus": 1}}),
        json!({"id": "t", "defaults": {"timeout_ms": -5}}),
    ] {
        let (status, err) = a.post("/v1/projects", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {err}");
    }
    let (status, _) = a.get("/v1/projects/t").await;
    assert_eq!(status, 404, "a refused project was not made");

    let team = key_of(&s, &admin, "team-a", &["jobs:write"]).await;
    let t = s.as_key(&team);
    let job = t.run(json!({"prompt": "FAKE text defaults"})).await;
    assert_eq!(job["options"]["model"], "claude-team-a", "{job}");
    assert_eq!(job["project_id"], "team-a");
    let job = t
        .run(json!({"prompt": "FAKE text mine", "model": "claude-own"}))
        .await;
    assert_eq!(
        job["options"]["model"], "claude-own",
        "the job's own value wins"
    );

    // The queued-jobs quota: two held, the third refused with Retry-After.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (status, j) = t
            .post("/v1/jobs", json!({"prompt": "FAKE sleep 60000"}))
            .await;
        assert_eq!(status, 201, "{j}");
        held.push(j["id"].as_str().unwrap().to_string());
    }
    let resp = s
        .http
        .post(format!("{}/v1/jobs", s.base))
        .bearer_auth(&team)
        .json(&json!({"prompt": "FAKE text over"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_queued")
    );
    let (_, other) = a
        .post("/v1/jobs", json!({"prompt": "FAKE text fine"}))
        .await;
    assert_eq!(
        other["state"], "queued",
        "another project is not held back: {other}"
    );
    for id in &held {
        t.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    }

    // PATCH replaces what it names.
    let (status, p) = s
        .as_key(&admin)
        .request(
            Method::PATCH,
            "/v1/projects/team-a",
            Some(json!({"name": "Team Alpha", "quotas": {"max_running": 1}})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["name"], "Team Alpha");
    assert_eq!(
        p["quotas"],
        json!({"max_running": 1, "max_queued": null, "requests_per_minute": null})
    );
    assert_eq!(
        p["defaults"]["model"], "claude-team-a",
        "defaults untouched"
    );

    let (status, body) = a.request(Method::DELETE, "/v1/projects/team-a", None).await;
    assert_eq!(status, 409, "it has jobs: {body}");
    let (status, _) = a
        .request(Method::DELETE, "/v1/projects/default", None)
        .await;
    assert_eq!(status, 409, "default stays");
    let (status, body) = a
        .request(Method::DELETE, "/v1/projects/team-a?purge=true", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.get("/v1/projects/team-a").await.0, 404);
    assert_eq!(t.get("/v1/jobs").await.0, 401, "its keys went with it");
    s.stop().await;
}

/// The two-project isolation suite: B's key reaches nothing of A's through any route.
#[tokio::test]
async fn a_project_sees_nothing_of_another_through_any_route() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let ka = tenant(&s, &admin, "team-a").await;
    let kb = tenant(&s, &admin, "team-b").await;
    let (a, b) = (s.as_key(&ka), s.as_key(&kb));

    // A's objects: a finished job in a session, a dead job, a running job, an agent job.
    let done = a.run(json!({"prompt": "FAKE text a-secret-result"})).await;
    assert_eq!(done["state"], "completed", "{done}");
    let done_id = done["id"].as_str().unwrap().to_string();
    let session = done["session_id"].as_str().unwrap().to_string();
    let dead = a
        .run(json!({"prompt": "FAKE crash", "max_attempts": 1}))
        .await;
    assert_eq!(dead["state"], "dead");
    let dead_id = dead["id"].as_str().unwrap().to_string();
    let (_, running) = a
        .post("/v1/jobs", json!({"prompt": "FAKE sleep 60000"}))
        .await;
    let running_id = running["id"].as_str().unwrap().to_string();
    let (_, agent) = a
        .post("/claude", json!({"prompt": "FAKE text agent"}))
        .await;
    let agent_id = agent["job_id"].as_str().unwrap().to_string();

    let unknown = "00000000-0000-7000-8000-000000000000";
    let (_, not_there) = b.get(&format!("/v1/jobs/{unknown}")).await;
    let same_as_unknown = |body: &Value, id: &str| {
        assert_eq!(body["error"]["type"], "not_found_error", "{body}");
        assert_eq!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .replace(id, unknown),
            not_there["error"]["message"],
            "no existence oracle"
        );
    };
    for id in [&done_id, &dead_id, &running_id, &agent_id] {
        for path in [
            format!("/v1/jobs/{id}"),
            format!("/v1/jobs/{id}/events"),
            format!("/v1/jobs/{id}/events?format=json"),
            format!("/claude/jobs/{id}"),
        ] {
            let (status, body) = b.get(&path).await;
            assert_eq!(status, 404, "{path}: {body}");
            same_as_unknown(&body, id);
        }
        for path in [
            format!("/v1/jobs/{id}/cancel"),
            format!("/v1/jobs/{id}/retry"),
        ] {
            let (status, body) = b.post(&path, json!({})).await;
            assert_eq!(status, 404, "{path}: {body}");
            same_as_unknown(&body, id);
        }
    }
    // Health counts the caller's own project (B has nothing yet; A has a job running).
    let (_, health) = b.get("/v1/health").await;
    assert_eq!(
        health["jobs"],
        json!({"queued": 0, "running": 0}),
        "{health}"
    );
    for path in [
        format!("/v1/sessions/{session}"),
        format!("/sessions/{session}"),
    ] {
        let (status, body) = b.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // Continuing A's session, by any route.
    for (path, body) in [
        (
            "/v1/jobs",
            json!({"prompt": "x", "session": {"resume": session}}),
        ),
        (
            "/v1/jobs",
            json!({"prompt": "x", "session": {"resume": session, "fork": true}}),
        ),
        ("/v1/chat", json!({"prompt": "x", "session_id": session})),
        (
            "/v1/chat/stream",
            json!({"prompt": "x", "session_id": session}),
        ),
    ] {
        let (status, err) = b.post(path, body.clone()).await;
        assert_eq!(status, 404, "{path} {body}: {err}");
    }
    // Nor by replaying a job of B's own into A's session.
    let bdead = b
        .run(json!({"prompt": "FAKE crash", "max_attempts": 1}))
        .await;
    let bdead_id = bdead["id"].as_str().unwrap().to_string();
    let into_a = json!({"options": {"session": {"resume": session}}});
    let (status, err) = b
        .post(&format!("/v1/jobs/{bdead_id}/retry"), into_a.clone())
        .await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = b.post("/v1/dead/replay", into_a).await;
    assert_eq!(status, 404, "{err}");
    let (_, still) = b.get(&format!("/v1/jobs/{bdead_id}")).await;
    assert_eq!(still["state"], "dead", "a refused replay changes nothing");

    // Lists, dead letters and bulk replays hold only B's own.
    let (_, list) = b.get("/v1/jobs?limit=200").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "B's own dead job: {list}"
    );
    let (_, list) = b.get(&format!("/v1/jobs?session_id={session}")).await;
    assert_eq!(list["data"], json!([]));
    let (_, list) = b.get("/v1/dead").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], bdead_id.as_str());
    let (status, replayed) = b.post("/v1/dead/replay", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(replayed["job_ids"], json!([bdead_id]), "B's own, never A's");
    // A `continue` of B's starts B's own conversation, not A's.
    let (_, bjob) = b
        .post(
            "/claude",
            json!({"prompt": "FAKE text b", "continue": true}),
        )
        .await;
    let bjob = b
        .get(&format!("/v1/jobs/{}", bjob["job_id"].as_str().unwrap()))
        .await
        .1;
    assert_ne!(bjob["session_id"], json!(session));
    assert_eq!(bjob["project_id"], "team-b");
    // One Idempotency-Key in two projects: two jobs.
    let post_idem = |key: &str| {
        s.http
            .post(format!("{}/v1/jobs", s.base))
            .bearer_auth(key.to_string())
            .header("idempotency-key", "shared-key")
            .json(&json!({"prompt": "FAKE text idem"}))
            .send()
    };
    let ja: Value = post_idem(&ka).await.unwrap().json().await.unwrap();
    let jb: Value = post_idem(&kb).await.unwrap().json().await.unwrap();
    assert_ne!(ja["id"], jb["id"]);
    assert_eq!(jb["project_id"], "team-b");

    // A's spend: its usage and alerts are not B's to see, by any filter.
    let a_id = baton_core::JobId::parse(&done_id).unwrap();
    s.store
        .record_call(&baton_store::NewCall {
            at: chrono::Utc::now().timestamp_millis(),
            project_id: baton_core::ProjectId::parse("team-a").unwrap(),
            key_id: None,
            agent: None,
            routine_id: None,
            job_id: a_id,
            attempt: 1,
            model: Some("claude-sonnet-4-5".into()),
            input_tokens: 1,
            output_tokens: 1,
            cache_write_tokens: 0,
            cache_read_tokens: 0,
            cost_micro_usd: 18,
            priced: true,
            status: 200,
            duration_ms: 1,
        })
        .await
        .unwrap();
    let kb_usage = key_of(&s, &admin, "team-b", &["usage:read"]).await;
    let bu = s.as_key(&kb_usage);
    let (status, usage) = bu.get("/v1/usage?group_by=project").await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["data"], json!([]), "{usage}");
    assert_eq!(usage["project"], "team-b");
    let (status, body) = bu.get("/v1/usage?project=team-a").await;
    assert_eq!(status, 404, "{body}");
    let (_, alerts) = bu.get("/v1/alerts").await;
    assert_eq!(alerts["data"], json!([]));
    let (_, all) = s.as_key(&admin).get("/v1/usage?group_by=project").await;
    assert_eq!(
        all["data"][0]["group"], "team-a",
        "an administrator sees every project: {all}"
    );

    // The administration routes are not B's at all.
    for path in [
        "/v1/projects/team-a",
        "/v1/projects/team-a/policy",
        "/v1/projects/team-b/policy",
        "/v1/keys?project=team-a",
        "/v1/audit?project=team-a",
    ] {
        let (status, body) = b.get(path).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Nor are the policies: B can set neither A's nor its own, and A's wider policy is
    // A's alone.
    for project in ["team-a", "team-b"] {
        let (status, body) = b
            .request(
                Method::PUT,
                &format!("/v1/projects/{project}/policy"),
                Some(crate::policy::open_policy()),
            )
            .await;
        assert_eq!(status, 403, "{project}: {body}");
    }
    crate::policy::set_policy(&s, &admin, "team-a", crate::policy::open_policy()).await;
    let bash =
        json!({"prompt": "x", "allowed_tools": ["Bash"], "permission_mode": "bypassPermissions"});
    let (status, body) = b.post("/v1/jobs", bash.clone()).await;
    assert_eq!(
        (status.as_u16(), body["error"]["rule"].as_str()),
        (403, Some("tools")),
        "{body}"
    );
    let (status, body) = a.post("/v1/jobs", bash).await;
    assert_eq!(status, 201, "{body}");
    a.post(
        &format!("/v1/jobs/{}/cancel", body["id"].as_str().unwrap()),
        json!({}),
    )
    .await;

    // Nothing of A's changed; its administrator sees it all.
    let (_, still) = a.get(&format!("/v1/jobs/{running_id}")).await;
    assert!(!still["cancel_requested"].as_bool().unwrap(), "{still}");
    let (_, still) = a.get(&format!("/v1/jobs/{dead_id}")).await;
    assert_eq!(still["state"], "dead");
    let (status, _) = s.as_key(&admin).get(&format!("/v1/jobs/{done_id}")).await;
    assert_eq!(status, 200);
    a.post(&format!("/v1/jobs/{running_id}/cancel"), json!({}))
        .await;
    s.stop().await;
}

#[tokio::test]
async fn the_audit_log_records_every_change_with_its_key_and_never_a_secret() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let team = tenant(&s, &admin, "team-a").await;
    let reader = key_of(&s, &admin, "team-a", &["jobs:read"]).await;
    let t = s.as_key(&team);
    let (_, job) = t
        .post("/v1/jobs", json!({"prompt": "FAKE sleep 60000"}))
        .await;
    let job_id = job["id"].as_str().unwrap().to_string();
    let (status, _) = t
        .post(&format!("/v1/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert!(status.is_success());
    let (status, _) = s
        .as_key(&reader)
        .post("/v1/jobs", json!({"prompt": "x"}))
        .await;
    assert_eq!(status, 403);
    let team_id = team.split('_').nth(1).unwrap().to_string();
    let (status, _) = s
        .as_key(&admin)
        .request(Method::DELETE, &format!("/v1/keys/{team_id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(t.get("/v1/jobs").await.0, 401, "revoked at once");

    let a = s.as_key(&admin);
    let (status, log) = a.get("/v1/audit?limit=100").await;
    assert_eq!(status, 200, "{log}");
    let text = log.to_string();
    for k in [&admin, &team, &reader] {
        let secret = k.rsplit_once('_').unwrap().1;
        assert!(!text.contains(secret), "a secret in the audit log");
    }
    let records = log["data"].as_array().unwrap();
    let find = |action: &str| {
        records
            .iter()
            .filter(|r| r["action"] == action)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(find("project.create").len(), 1);
    assert_eq!(find("key.create").len(), 3);
    let created = find("job.create")
        .into_iter()
        .find(|r| r["outcome"] == "201")
        .expect("the job's creation");
    assert_eq!(created["target"], job_id.as_str());
    assert_eq!(created["key_id"], team_id.as_str());
    assert_eq!(created["project"], "team-a");
    assert_eq!(created["outcome"], "201");
    assert!(created["request_id"].as_str().unwrap().starts_with("req_"));
    let refused = find("job.create")
        .into_iter()
        .find(|r| r["outcome"] == "403")
        .expect("a refused change is recorded");
    assert!(reader.contains(refused["key_id"].as_str().unwrap()));
    assert_eq!(find("job.cancel")[0]["target"], job_id.as_str());
    let revoked = &find("key.revoke")[0];
    assert_eq!(revoked["target"], team_id.as_str());
    assert_eq!(revoked["project"], "team-a");
    assert!(
        records.iter().all(|r| r["action"] != "GET /v1/jobs"),
        "reads are not changes"
    );

    // Filters and pages.
    let (_, only) = a.get("/v1/audit?action=key.create").await;
    assert_eq!(only["data"].as_array().unwrap().len(), 3);
    let (_, first) = a.get("/v1/audit?project=team-a&limit=2").await;
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = a
        .get(&format!("/v1/audit?project=team-a&limit=2&cursor={cursor}"))
        .await;
    assert_ne!(first["data"][0]["id"], second["data"][0]["id"]);
    assert!(second["data"][0]["id"].as_str() < first["data"][1]["id"].as_str());
    let (status, _) = s.as_key(&reader).get("/v1/audit").await;
    assert_eq!(status, 403);
    let (status, _) = a.get("/v1/audit?cursor=nope").await;
    assert_eq!(status, 400);
    s.stop().await;
}

#[tokio::test]
async fn a_wide_listener_needs_a_key_first_and_required_auth_needs_one_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let mut flags = crate::support::test_flags(dir.path(), roots.path());
    flags.push(("server.listen".into(), "0.0.0.0:0".into()));
    let config = baton::Config::load(None, &[], &flags).unwrap();
    let err = baton::App::build(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("no API key exists"), "{err:#}");
    let out = keys_cli(dir.path(), &["create", "--admin", "--name", "ops"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("bk_"), "the key alone on stdout: {key}");
    let app = baton::App::build(config).await.expect("a key exists now");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(stop.clone()));
    let http = reqwest::Client::new();
    let status = http
        .get(format!("{base}/v1/jobs"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let status = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    stop.cancel();
    handle.await.unwrap().unwrap();

    // `auth = "required"`: no key exists, and still nothing is served without one.
    let s = Server::with(&[("server.auth", "required")]).await;
    assert_eq!(s.get("/v1/jobs").await.0, 401);
    assert_eq!(s.post("/v1/keys", json!({})).await.0, 401);
    let (_, health) = s.get("/v1/health").await;
    assert_eq!(health, json!({"status": "ok", "auth": "keys"}));
    s.stop().await;
}

/// Every file under `dir`, read whole (the database, its journal, logs, workspaces).
fn all_bytes(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_bytes(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
}

/// A canary key, used in every way and refused in several, appears nowhere afterwards:
/// not in the log (at debug), the database files, an event, a list or the audit log.
#[tokio::test]
async fn a_canary_key_appears_only_in_the_answer_that_made_it() {
    use crate::process::{free_port, spawn_server_with, wait_ready};
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let mut server = spawn_server_with(
        dir.path(),
        roots.path(),
        free_port(),
        &[("server.log", "debug")],
    );
    wait_ready(&server).await;
    let out = keys_cli(
        dir.path(),
        &["create", "--admin", "--name", "canary", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let canary = made["key"].as_str().unwrap().to_string();
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let call = |method: Method, path: &str, key: Option<&str>, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}{path}"));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while call(Method::GET, "/v1/jobs", None, None).await.0 != 401 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Vec::new();
    let key = Some(canary.as_str());
    seen.push(
        call(
            Method::POST,
            "/v1/projects",
            key,
            Some(json!({"id": "birds"})),
        )
        .await,
    );
    let (status, second) = call(
        Method::POST,
        "/v1/keys",
        key,
        Some(json!({"project": "birds", "name": "second", "scopes": ["jobs:read"]})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let second: Value = serde_json::from_str(&second).unwrap();
    let second = second["key"].as_str().unwrap().to_string();
    let (status, job) = call(
        Method::POST,
        "/v1/jobs",
        key,
        Some(json!({"prompt": "FAKE text done", "metadata": {"note": "canary run"}})),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let job: Value = serde_json::from_str(&job).unwrap();
    let id = job["id"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, job) = call(Method::GET, &format!("/v1/jobs/{id}"), key, None).await;
        let done = serde_json::from_str::<Value>(&job).unwrap()["state"] == "completed";
        seen.push((200, job));
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen.push(
        call(
            Method::GET,
            &format!("/v1/jobs/{id}/events?format=json"),
            key,
            None,
        )
        .await,
    );
    seen.push(
        call(
            Method::POST,
            "/v1/jobs",
            Some(&second),
            Some(json!({"prompt": "x"})),
        )
        .await,
    );
    // A routine's trigger token and a webhook's secret are canaries too.
    let (status, r) = call(
        Method::POST,
        "/v1/routines",
        key,
        Some(json!({"name": "canary", "prompt": "FAKE text fired"})),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let rid = serde_json::from_str::<Value>(&r).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, t) = call(
        Method::POST,
        &format!("/v1/routines/{rid}/triggers"),
        key,
        Some(json!({"type": "api"})),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let t: Value = serde_json::from_str(&t).unwrap();
    let token = t["token"].as_str().unwrap().to_string();
    let hook_secret = "webhook-canary-5eb1d0c5a7e2";
    let (status, h) = call(
        Method::POST,
        &format!("/v1/routines/{rid}/triggers"),
        key,
        Some(json!({"type": "webhook", "secret": hook_secret})),
    )
    .await;
    assert_eq!(status, 201, "{h}");
    seen.push((status, h));
    let fired = http
        .post(t["fire_url"].as_str().unwrap())
        .bearer_auth(&token)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "experimental-cc-routine-2026-04-01")
        .json(&json!({"text": "canary fire"}))
        .send()
        .await
        .unwrap();
    seen.push((fired.status().as_u16(), fired.text().await.unwrap()));
    let wrong = http
        .post(t["fire_url"].as_str().unwrap())
        .bearer_auth(format!("{token}x"))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "experimental-cc-routine-2026-04-01")
        .send()
        .await
        .unwrap();
    seen.push((wrong.status().as_u16(), wrong.text().await.unwrap()));
    seen.push(call(Method::GET, &format!("/v1/routines/{rid}"), key, None).await);
    seen.push(call(Method::GET, &format!("/v1/routines/{rid}/runs"), key, None).await);
    seen.push(call(Method::GET, "/v1/routines", key, None).await);
    seen.push(call(Method::GET, "/v1/nowhere", key, None).await);
    seen.push(call(Method::GET, "/v1/jobs", Some(&format!("{canary}x")), None).await);
    seen.push(
        call(
            Method::GET,
            "/v1/jobs",
            Some(&canary[..canary.len() - 1]),
            None,
        )
        .await,
    );
    seen.push(call(Method::GET, "/v1/keys", key, None).await);
    seen.push(call(Method::GET, "/v1/audit?limit=500", key, None).await);
    seen.push(call(Method::GET, "/v1/health", key, None).await);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    server.child.wait().unwrap();
    let out = keys_cli(dir.path(), &["ls", "--json"]);
    seen.push((0, String::from_utf8_lossy(&out.stdout).into_owned()));

    let mut files = Vec::new();
    all_bytes(dir.path(), &mut files);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("DEBUG"), "the log ran at debug");
    // The webhook's secret is kept as given (an HMAC needs it), so only the database may
    // hold it: never the log, an audit record or an answer.
    assert!(!log.contains(hook_secret), "the webhook secret in the log");
    for (status, body) in &seen {
        assert!(
            !body.contains(hook_secret),
            "the webhook secret in an answer ({status}): {body}"
        );
    }
    for k in [&canary, &second, &token] {
        let secret = k.rsplit_once('_').unwrap().1;
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a key's secret in {}",
                path.display()
            );
        }
        for (status, body) in &seen {
            assert!(
                !body.contains(secret),
                "a key's secret in an answer ({status}): {body}"
            );
        }
    }
}

#[tokio::test]
async fn rate_limits_per_key_and_per_project_answer_429_with_their_headers() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let a = s.as_key(&admin);
    let (status, _) = a
        .post(
            "/v1/projects",
            json!({"id": "team-a", "quotas": {"requests_per_minute": 5}}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, k) = a
        .post(
            "/v1/keys",
            json!({"project": "team-a", "name": "slow", "scopes": ["jobs:read"], "requests_per_minute": 2}),
        )
        .await;
    assert_eq!(status, 201, "{k}");
    assert_eq!(k["requests_per_minute"], 2);
    let slow = k["key"].as_str().unwrap().to_string();
    let other = key_of(&s, &admin, "team-a", &["jobs:read"]).await;
    let get = |key: &str| {
        s.http
            .get(format!("{}/v1/jobs", s.base))
            .bearer_auth(key.to_string())
            .send()
    };
    // The key's own limit: two a minute.
    let first = get(&slow).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(get(&slow).await.unwrap().status(), 200);
    let refused = get(&slow).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "30");
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    assert!(refused.headers().contains_key("x-ratelimit-reset"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // The project's: five a minute over all its keys (two spent by the slow key).
    for i in 0..3 {
        let ok = get(&other).await.unwrap();
        assert_eq!(ok.status(), 200, "{i}");
    }
    let refused = get(&other).await.unwrap();
    assert_eq!(refused.status(), 429, "the project's five are spent");
    assert_eq!(refused.headers()["x-ratelimit-limit"], "5");
    // Another project, and an administrator, are not held back.
    assert_eq!(a.get("/v1/jobs").await.0, 200);
    let (status, err) = a
        .post(
            "/v1/keys",
            json!({"project": "team-a", "name": "z", "scopes": ["jobs:read"], "requests_per_minute": 0}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    s.stop().await;
}

/// Every operation the API documents, but health, refuses a request without a key once
/// one exists, and one with a key lacking the scope where a scope is needed.
#[tokio::test]
async fn every_documented_route_but_health_needs_a_key() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let reader = key_of(&s, &admin, "default", &["jobs:read"]).await;
    let mut checked = 0;
    for (method, path) in baton_api::openapi::operations() {
        let concrete = path.replace("{id}", "00000000-0000-7000-8000-000000000000");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = s.request(m.clone(), &concrete, Some(json!({}))).await;
        if path == "/v1/health" {
            assert_eq!(status, 200);
            continue;
        }
        // Routes with credentials of their own: a trigger's token, a webhook's signature,
        // a browser's session. A key is no use there, and none is asked for.
        match path.as_str() {
            "/v1/claude_code/routines/{trig_id}/fire" => {
                assert_eq!(status, 400, "no beta header: {body}");
                continue;
            }
            "/v1/hooks/{trig_id}" => {
                assert_eq!(status, 404, "no such trigger: {body}");
                continue;
            }
            // Each tool call is an API request with the caller's key: scopes are checked
            // there, per tool.
            "/mcp" => {
                assert_eq!(status, 401, "{body}");
                continue;
            }
            "/ui/sessions/{id}" => {
                // Redirected (and followed) to the sign-in form.
                assert_eq!(status, 200, "{body}");
                assert!(body.to_string().contains("Sign in to Baton"), "{body}");
                continue;
            }
            _ => {}
        }
        assert_eq!(status, 401, "{method} {path}: {body}");
        // A read-only key may read, never change or administer.
        let (status, body) = s
            .request_as(Some(&reader), m, &concrete, Some(json!({})))
            .await;
        // Usage and alerts need usage:read, which jobs:read does not give.
        let admin_only = path.starts_with("/v1/projects")
            || path.starts_with("/v1/keys")
            || path.starts_with("/v1/audit")
            || path.starts_with("/v1/callbacks")
            || path.starts_with("/v1/usage")
            || path.starts_with("/v1/alerts");
        if admin_only || method != "get" {
            assert_eq!(status, 403, "{method} {path}: {body}");
        } else {
            assert_ne!(status.as_u16(), 401, "{method} {path}: {body}");
            assert_ne!(status.as_u16(), 403, "{method} {path}: {body}");
        }
        checked += 1;
    }
    assert_eq!(
        checked, 54,
        "every operation but health and those with credentials of their own"
    );
    s.stop().await;
}
