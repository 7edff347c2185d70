//! Agents over HTTP: saved and versioned, run by name with an input, and called as a task
//! agent (`POST /` with `X-Baton-Agent` or seed 001's `X-Clrk-TaskAgent`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::Server;
use crate::tenancy::{admin_key, key_of, tenant};

fn echo_agent() -> Value {
    json!({
        "name": "echo",
        "description": "says what it is asked",
        "prompt_template": "FAKE text {{ input.want }}",
        "input_schema": {"type": "object", "required": ["want"],
                         "properties": {"want": {"type": "string", "maxLength": 100}}},
        "options": {"max_attempts": 1, "timeout_ms": 60000}
    })
}

#[tokio::test]
async fn agents_are_saved_in_versions_and_refused_when_they_cannot_work() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let writer = key_of(&s, &admin, "default", &["agents:write"]).await;
    let runner = key_of(&s, &admin, "default", &["jobs:write"]).await;
    let w = s.as_key(&writer);

    let (status, a) = w.post("/v1/agents", echo_agent()).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(
        (a["version"].clone(), a["object"].clone()),
        (json!(1), json!("agent"))
    );
    assert_eq!(a["content_type"], "text/plain; charset=utf-8");
    assert_eq!(w.post("/v1/agents", echo_agent()).await.0, 409);
    let (status, _) = s.as_key(&runner).post("/v1/agents", echo_agent()).await;
    assert_eq!(status, 403, "jobs:write does not change agents");
    let (status, list) = s.as_key(&runner).get("/v1/agents").await;
    assert_eq!(
        (status.as_u16(), list["data"].as_array().unwrap().len()),
        (200, 1)
    );

    let mut v2 = echo_agent();
    v2["prompt_template"] = json!("FAKE text v2 {{ input.want }}");
    let (status, a) = w.request(Method::PUT, "/v1/agents/echo", Some(v2)).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["version"], 2);
    let (_, versions) = w.get("/v1/agents/echo/versions").await;
    let numbers: Vec<Value> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(numbers, [json!(2), json!(1)]);
    let (_, v1) = w.get("/v1/agents/echo?version=1").await;
    assert_eq!(v1["prompt_template"], "FAKE text {{ input.want }}");

    for (body, needle) in [
        (
            json!({"name": "t1", "prompt_template": "Hi\n {{ input.want "}),
            "line 2",
        ),
        (
            json!({"name": "t2", "prompt_template": "{{ input.nope }}",
                "input_schema": {"type": "object", "properties": {"want": {}}}}),
            "input.nope",
        ),
        (
            json!({"name": "t3", "prompt_template": "{{ env }}"}),
            "only input",
        ),
        (
            json!({"name": "t4", "prompt_template": "x", "input_schema": {"type": 7}}),
            "input_schema",
        ),
        (json!({"name": "T 5", "prompt_template": "x"}), "agent name"),
        (
            json!({"name": "t6", "prompt_template": "x", "options": {"timeout_ms": 1}}),
            "timeout_ms",
        ),
        (
            json!({"name": "t7", "prompt_template": "x", "options": {"session": {}}}),
            "options.session",
        ),
        (json!({"prompt_template": "x"}), "name is required"),
    ] {
        let (status, err) = w.post("/v1/agents", body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {err}"
        );
    }
    let (_, list) = w.get("/v1/agents").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "a refused agent writes nothing"
    );

    let (status, _) = w.request(Method::DELETE, "/v1/agents/echo", None).await;
    assert_eq!(status, 200);
    assert_eq!(w.get("/v1/agents/echo").await.0, 404);
    assert_eq!(
        w.request(Method::DELETE, "/v1/agents/echo", None).await.0,
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn a_run_renders_its_input_and_records_its_agent_version() {
    let s = Server::start().await;
    let (status, _) = s.post("/v1/agents", echo_agent()).await;
    assert_eq!(status, 201);
    let (status, job) = s
        .post(
            "/v1/agents/echo/runs?wait=30",
            json!({"input": {"want": "carol"}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "carol");
    assert_eq!(job["agent"], json!({"name": "echo", "version": 1}));
    assert_eq!(
        job["options"]["max_attempts"],
        json!(null),
        "retry is in the schedule: {job}"
    );

    // Input is checked before anything is queued: the pointer of the first violation.
    let before = s.job_count().await;
    for (input, pointer) in [(json!({}), ""), (json!({"want": 7}), "/want")] {
        let (status, err) = s
            .post("/v1/agents/echo/runs", json!({"input": input}))
            .await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["pointer"], pointer, "{err}");
    }
    assert_eq!(s.job_count().await, before, "a refused run queues nothing");
    assert_eq!(
        s.post("/v1/agents/nobody/runs", json!({"input": {}}))
            .await
            .0,
        404
    );

    // A run may pin an older version.
    let mut v2 = echo_agent();
    v2["prompt_template"] = json!("FAKE text new {{ input.want }}");
    s.request(Method::PUT, "/v1/agents/echo", Some(v2)).await;
    let (_, old) = s
        .post(
            "/v1/agents/echo/runs?wait=30",
            json!({"input": {"want": "x"}, "version": 1}),
        )
        .await;
    assert_eq!(
        (old["result"].clone(), old["agent"]["version"].clone()),
        (json!("x"), json!(1))
    );
    let (_, new) = s
        .post(
            "/v1/agents/echo/runs?wait=30",
            json!({"input": {"want": "x"}}),
        )
        .await;
    assert_eq!(
        (new["result"].clone(), new["agent"]["version"].clone()),
        (json!("new x"), json!(2))
    );

    // Through POST /v1/jobs, with the settings a run may add.
    let (status, job) = s
        .post(
            "/v1/jobs?wait=30",
            json!({"agent": "echo", "input": {"want": "y"}, "priority": 5,
                   "metadata": {"ticket": "T-1"}, "version": 1}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(
        (job["result"].clone(), job["priority"].clone()),
        (json!("y"), json!(5))
    );
    assert_eq!(job["metadata"], json!({"ticket": "T-1"}));
    assert_eq!(job["agent"], json!({"name": "echo", "version": 1}));
    let (status, err) = s
        .post(
            "/v1/jobs",
            json!({"agent": "echo", "input": {"want": "y"}, "model": "x"}),
        )
        .await;
    assert_eq!(
        status, 400,
        "a run does not change the agent's options: {err}"
    );

    // From the command line.
    let out = s
        .cli(&["agents", "run", "echo", "--input", r#"{"want": "zed"}"#])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "new zed");
    let out = s.cli(&["agents", "run", "echo", "--input", "{}"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a refused input is a usage error"
    );
    let out = s.cli(&["agents", "ls"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo"));
    s.stop().await;
}

/// Seed 001's call: the body is the input, the answer the output, stderr never shown.
#[tokio::test]
async fn the_task_agent_call_answers_with_the_agents_output() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let team = tenant(&s, &admin, "team-a").await;
    let agents = key_of(&s, &admin, "team-a", &["agents:write"]).await;
    let mut structured = echo_agent();
    structured["name"] = json!("picker");
    structured["prompt_template"] = json!("FAKE structured {\"output\": [\"{{ input.want }}\"]}");
    structured["output_schema"] = json!({"type": "object"});
    for agent in [echo_agent(), structured] {
        let (status, a) = s.as_key(&agents).post("/v1/agents", agent).await;
        assert_eq!(status, 201, "{a}");
    }
    let call = |header: &'static str, agent: &'static str, key: &str, body: Value| {
        s.http
            .post(format!("{}/", s.base))
            .bearer_auth(key.to_string())
            .header(header, agent)
            .json(&body)
            .send()
    };
    let resp = call(
        "X-Clrk-TaskAgent",
        "team-a/echo",
        &team,
        json!({"want": "alice"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(resp.headers().contains_key("baton-job-id"));
    assert_eq!(resp.text().await.unwrap(), "alice");
    let resp = call(
        "X-Baton-Agent",
        "team-a/picker",
        &team,
        json!({"want": "carol"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out, json!({"output": ["carol"]}));

    // Refusals: no header 400, unknown agent 404, another project's agent 404, bad input 400.
    let resp = s
        .http
        .post(format!("{}/", s.base))
        .bearer_auth(&team)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        call("X-Baton-Agent", "team-a/nobody", &team, json!({}))
            .await
            .unwrap()
            .status(),
        404
    );
    let other = tenant(&s, &admin, "team-b").await;
    let resp = call("X-Baton-Agent", "team-a/echo", &other, json!({"want": "x"}))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "another project's agent does not exist for B"
    );
    assert_eq!(
        call("X-Baton-Agent", "team-a/echo", &team, json!({"want": 1}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(s.as_key(&other).get("/v1/agents/echo").await.0, 404);
    assert_eq!(
        s.as_key(&other)
            .post("/v1/agents/echo/runs", json!({"input": {"want": "x"}}))
            .await
            .0,
        404
    );
    let (_, list) = s.as_key(&other).get("/v1/agents").await;
    assert_eq!(list["data"], json!([]));
    // Nor by any other agent route: B (even with agents:write) finds nothing of A's.
    let b_agents = key_of(&s, &admin, "team-b", &["agents:write"]).await;
    let b = s.as_key(&b_agents);
    assert_eq!(b.get("/v1/agents/echo/versions").await.0, 404);
    assert_eq!(b.get("/v1/agents/echo?version=1").await.0, 404);
    assert_eq!(
        b.request(Method::PUT, "/v1/agents/echo", Some(echo_agent()))
            .await
            .0,
        404
    );
    assert_eq!(
        b.request(Method::DELETE, "/v1/agents/echo", None).await.0,
        404
    );
    let (status, mine) = b.post("/v1/agents", echo_agent()).await;
    assert_eq!(
        (status.as_u16(), mine["version"].clone()),
        (201, json!(1)),
        "a name is per project"
    );
    let (_, still) = s.as_key(&agents).get("/v1/agents/echo").await;
    assert_eq!(still["version"], 1, "A's agent is untouched: {still}");

    // A failed run: the envelope, with the job.
    let mut crashing = echo_agent();
    crashing["name"] = json!("crasher");
    crashing["prompt_template"] = json!("FAKE crash\n{{ input.want }}");
    s.as_key(&agents).post("/v1/agents", crashing).await;
    let resp = call(
        "X-Baton-Agent",
        "team-a/crasher",
        &team,
        json!({"want": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 502);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["job_id"].is_string(), "{err}");
    s.stop().await;
}

/// `baton apply DIR`: a folder per agent, applied idempotently.
#[tokio::test]
async fn baton_apply_makes_the_agents_a_folder_declares_and_says_what_changed() {
    let s = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let echo = dir.path().join("echo");
    std::fs::create_dir(&echo).unwrap();
    let toml = r#"description = "says what it is asked"
prompt_template = "FAKE text {{ input.want }}"

[options]
max_attempts = 1

[input_schema]
type = "object"
required = ["want"]

[input_schema.properties.want]
type = "string"
"#;
    std::fs::write(echo.join("agent.toml"), toml).unwrap();
    std::fs::write(echo.join(".mcp.json"), r#"{"mcpServers": {}}"#).unwrap();
    std::fs::create_dir(dir.path().join("not-an-agent")).unwrap();
    let folder = dir.path().display().to_string();
    let apply = || async {
        let out = s.cli(&["apply", &folder]).await;
        Ok::<_, ()>((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, out, err) = apply().await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "created   echo (version 1)");
    let (_, agent) = s.get("/v1/agents/echo").await;
    assert_eq!(agent["options"]["mcp_config"], json!({"mcpServers": {}}));
    let (_, out, _) = apply().await.unwrap();
    assert_eq!(
        out.trim(),
        "unchanged echo (version 1)",
        "applying twice changes nothing"
    );
    std::fs::write(
        echo.join("agent.toml"),
        toml.replace("FAKE text", "FAKE text again"),
    )
    .unwrap();
    let (_, out, _) = apply().await.unwrap();
    assert_eq!(out.trim(), "updated   echo (version 2)");
    let (_, job) = s
        .post(
            "/v1/agents/echo/runs?wait=30",
            json!({"input": {"want": "w"}}),
        )
        .await;
    assert_eq!(job["result"], "again w");

    // CLAUDE.md beside agent.toml is the agent's claude_md.
    std::fs::write(echo.join("CLAUDE.md"), "# context").unwrap();
    let (_, out, _) = apply().await.unwrap();
    assert_eq!(out.trim(), "updated   echo (version 3)");
    let (_, agent) = s.get("/v1/agents/echo").await;
    assert_eq!(agent["claude_md"], "# context");

    // A folder that cannot be applied stops the whole apply before anything is sent.
    std::fs::write(
        echo.join("agent.toml"),
        format!(
            "name = \"other\"\n{}",
            toml.replace("FAKE text", "FAKE text third")
        ),
    )
    .unwrap();
    let (code, _, err) = apply().await.unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("named by its folder"), "{err}");
    let (_, agent) = s.get("/v1/agents/echo").await;
    assert_eq!(agent["version"], 3);

    // policies/<project>.toml is the project's policy, applied before the agents.
    std::fs::write(
        echo.join("agent.toml"),
        toml.replace("FAKE text", "FAKE text again"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let policy = dir.path().join("policies/default.toml");
    std::fs::write(
        &policy,
        "tools = [\"Read\"]\nraw_mcp = true\nmax_turns = 3\n",
    )
    .unwrap();
    let (code, out, err) = apply().await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "updated   policy of default\nunchanged echo (version 3)"
    );
    let (_, p) = s.get("/v1/projects/default/policy").await;
    assert_eq!(
        (p["custom"].clone(), p["policy"]["tools"].clone()),
        (json!(true), json!(["Read"])),
        "{p}"
    );
    let (_, out, _) = apply().await.unwrap();
    assert_eq!(
        out.trim(),
        "unchanged policy of default\nunchanged echo (version 3)"
    );
    let (_, job) = s
        .post(
            "/v1/agents/echo/runs?wait=30",
            json!({"input": {"want": "w"}}),
        )
        .await;
    assert_eq!(
        (job["result"].as_str(), job["options"]["max_turns"].as_u64()),
        (Some("again w"), Some(3)),
        "{job}"
    );
    // A policy file that is not one is refused before anything is sent.
    std::fs::write(&policy, "tools = [\"Read\"]\nraw_mcp = \"yes\"\n").unwrap();
    let (code, _, err) = apply().await.unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("policies/default.toml"), "{err}");
    s.stop().await;
}

/// An agent's `claude_md` and `files` are in every run's own workspace.
#[tokio::test]
async fn an_agents_files_are_in_each_runs_workspace() {
    let s = Server::start().await;
    let (status, a) = s
        .post(
            "/v1/agents",
            json!({"name": "reader", "prompt_template": "FAKE cat {{ input.path }}",
                   "claude_md": "# The team's conventions",
                   "files": {"data/people.json": "[\"carol\", \"alice\"]"}}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["files"]["data/people.json"], "[\"carol\", \"alice\"]");
    for (path, expected) in [
        ("CLAUDE.md", "# The team's conventions"),
        ("data/people.json", "[\"carol\", \"alice\"]"),
    ] {
        let (_, job) = s
            .post(
                "/v1/agents/reader/runs?wait=30",
                json!({"input": {"path": path}}),
            )
            .await;
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["result"], expected);
    }
    let (status, err) = s
        .post(
            "/v1/agents",
            json!({"name": "escaper", "prompt_template": "x", "files": {"../out": "x"}}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    s.stop().await;
}

/// Seed 001's call, as written, against its jq-bot kept as files and applied with
/// `baton apply`: the model proposes a filter, the `verify` script runs it with jq.
#[tokio::test]
async fn seed_001s_jq_bot_answers_its_curl_call_with_a_checked_filter() {
    if !crate::support::have_jq() {
        return;
    }
    let s = Server::start().await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents");
    let out = s.cli(&["apply", &fixtures.display().to_string()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "created   jq-bot (version 1)"
    );
    // The seed's curl call, with Baton's URL.
    let url = format!("{}/", s.base);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", &url, "-H", "content-type: application/json",
                   "-H", "X-Clrk-TaskAgent: default/jq-bot", "--data"])
            .arg(r#"{ "input": [ {"name":"alice","age":30,"role":"eng"}, {"name":"bob","age":42,"role":"pm"}, {"name":"carol","age":25,"role":"eng"} ], "want": "names of engineers, ascending by age" }"#)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        answer,
        json!({"filter": "[.[] | select(.role == \"eng\")] | sort_by(.age) | map(.name)",
               "output": ["carol", "alice"]})
    );
    // A filter jq rejects fails verification, once per attempt.
    let mut broken = serde_json::to_value(s.get("/v1/agents/jq-bot").await.1).unwrap();
    for k in ["name", "object", "version", "created_at"] {
        broken.as_object_mut().unwrap().remove(k);
    }
    broken["prompt_template"] = json!("FAKE structured {\"filter\": \"][\"}\n{{ input.want }}");
    let (status, saved) = s
        .request(Method::PUT, "/v1/agents/jq-bot", Some(broken))
        .await;
    assert_eq!(status, 200, "{saved}");
    let (_, job) = s
        .post(
            "/v1/agents/jq-bot/runs?wait=60",
            json!({"input": {"input": [], "want": "x"}}),
        )
        .await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["error"]["type"], "verification_failed", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("verify exited"),
        "{job}"
    );
    let job = s.job(job["id"].as_str().unwrap()).await;
    let errors: Vec<&str> = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        ["verification_failed", "verification_failed"],
        "retried once"
    );
    s.stop().await;
}

/// The verify command gets no credentials: the CLI's environment carries a key, the
/// check's does not.
#[tokio::test]
async fn a_verify_command_runs_without_credentials() {
    let s = Server::with(&[(
        "runner.env",
        r#"{ANTHROPIC_API_KEY = "sk-canary-verify", ANTHROPIC_BASE_URL = "http://127.0.0.1:9"}"#,
    )])
    .await;
    let (status, a) = s
        .post(
            "/v1/agents",
            json!({"name": "env", "prompt_template": "FAKE text ok",
                   "verify": {"command": ["sh", "-c", "cat >/dev/null; env; pwd"]}}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let (_, job) = s
        .post("/v1/agents/env/runs?wait=30", json!({"input": {}}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    let printed = job["verified_output"].as_str().unwrap();
    assert!(printed.contains("HOME="), "{printed}");
    assert!(
        !printed.contains("sk-canary-verify"),
        "a credential reached verify: {printed}"
    );
    assert!(!printed.contains("ANTHROPIC"), "{printed}");
    s.stop().await;
}

/// Runs git in `dir`, for a test repository.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn each_run_of_an_agent_with_repos_works_in_its_own_checkout_at_the_ref() {
    let s = Server::start().await;
    let repo = s.roots.path().join("app");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("VERSION"), "one\n").unwrap();
    git(&repo, &["add", "VERSION"]);
    git(&repo, &["commit", "--quiet", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("VERSION"), "two\n").unwrap();
    git(&repo, &["commit", "--quiet", "-am", "two"]);
    let path = repo.display().to_string();
    let (status, a) = s
        .post(
            "/v1/agents",
            json!({"name": "reader", "prompt_template": "FAKE cat src/VERSION",
                   "repos": [{"path": path, "ref": first, "dir": "src"}]}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    // Parallel runs: each its own clone at the pinned commit.
    let runs: Vec<_> = (0..3)
        .map(|_| s.post("/v1/agents/reader/runs?wait=30", json!({"input": {}})))
        .collect();
    for r in futures_util::future::join_all(runs).await {
        let (status, job) = r;
        assert_eq!(status, 201, "{job}");
        assert_eq!(
            (job["state"].as_str(), job["result"].as_str()),
            (Some("completed"), Some("one")),
            "{job}"
        );
    }
    // The repository itself is untouched: its working tree and its branches.
    assert_eq!(
        std::fs::read_to_string(repo.join("VERSION")).unwrap(),
        "two\n"
    );
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1);
    // Refused when saved: outside the workspace roots, not a repository, a bad ref.
    let outside = tempfile::tempdir().unwrap();
    for (repos, needle) in [
        (
            json!([{"path": outside.path().display().to_string()}]),
            "workspace root",
        ),
        (
            json!([{"path": s.roots.path().display().to_string()}]),
            "not a git repository",
        ),
        (
            json!([{"path": path, "ref": "--upload-pack=x"}]),
            "not a git ref",
        ),
        (
            json!([{"path": path, "dir": "../up"}]),
            "inside the workspace",
        ),
    ] {
        let (status, e) = s
            .post(
                "/v1/agents",
                json!({"name": "bad", "prompt_template": "x", "repos": repos}),
            )
            .await;
        assert_eq!(status, 400, "{repos}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{repos}: {e}"
        );
    }
    // A ref that is not there fails the run, clearly, without retrying.
    let (status, _) = s
        .request(
            reqwest::Method::PUT,
            "/v1/agents/reader",
            Some(json!({"prompt_template": "FAKE cat src/VERSION", "repos": [{"path": path, "ref": "no-such-branch", "dir": "src"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, job) = s
        .post("/v1/agents/reader/runs?wait=30", json!({"input": {}}))
        .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-branch"),
        "{job}"
    );
    s.stop().await;
}
