//! Per-project job policies: what a tenant's job may ask for, refused with the rule named
//! on every route that makes jobs (nothing queued), filled in and recorded with the jobs
//! it admits; agents and routines checked when saved and again when run; the default
//! project's policy from `[policy]`; and the sandbox's default (`runner.sandbox = "auto"`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Keyed, Server, prompt};
use crate::tenancy::{admin_key, key_of};

/// Everything allowed, as an admin widens a project's policy.
pub fn open_policy() -> Value {
    json!({"tools": ["*"], "permission_modes": ["*"], "models": ["*"], "roots": ["*"],
           "mcp_servers": ["*"], "raw_mcp": true, "verify": true})
}

pub async fn set_policy(s: &Server, admin: &str, project: &str, policy: Value) -> Value {
    let (status, p) = s
        .as_key(admin)
        .request(
            Method::PUT,
            &format!("/v1/projects/{project}/policy"),
            Some(policy),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    p
}

/// A project and a key of it that may make jobs, agents and routines.
pub async fn project_with_key(s: &Server, admin: &str, project: &str) -> String {
    let (status, p) = s
        .as_key(admin)
        .post("/v1/projects", json!({"id": project}))
        .await;
    assert_eq!(status, 201, "{p}");
    key_of(
        s,
        admin,
        project,
        &["jobs:write", "agents:write", "routines:write"],
    )
    .await
}

/// `status` is a 403 `permission_error` naming `rule` and `value`.
#[track_caller]
fn refused(what: &str, status: reqwest::StatusCode, body: &Value, rule: &str, value: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    let text = body.to_string();
    assert!(text.contains("permission_error"), "{what}: {body}");
    assert!(
        text.contains(&format!("({rule})")) && text.contains(value),
        "{what}: the refusal names the rule {rule} and the value {value}: {body}"
    );
}

async fn job_count(k: &Keyed<'_>) -> usize {
    let (status, page) = k.get("/v1/jobs?limit=200").await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_tenants_forbidden_asks_are_refused_with_the_rule_named_on_every_route_that_makes_jobs() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let key = project_with_key(&s, &admin, "tenant-b").await;
    let b = s.as_key(&key);
    let root = s.roots.path().display().to_string();

    // While the project's policy is open, it saves an agent and a routine that ask for
    // Bash, and makes a job that fails (to retry later).
    set_policy(&s, &admin, "tenant-b", open_policy()).await;
    let (status, agent) = b
        .post(
            "/v1/agents",
            json!({"name": "shell", "prompt_template": "Run {{input.cmd}}",
                   "options": {"allowed_tools": ["Bash"]}}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let (status, routine) = b
        .post(
            "/v1/routines",
            json!({"name": "nightly", "prompt": "FAKE text ran",
                   "options": {"permission_mode": "bypassPermissions"}}),
        )
        .await;
    assert_eq!(status, 201, "{routine}");
    let (status, trigger) = b
        .post(
            &format!("/v1/routines/{}/triggers", routine["id"].as_str().unwrap()),
            json!({"type": "api"}),
        )
        .await;
    assert_eq!(status, 201, "{trigger}");
    let (status, failing) = b
        .post(
            "/v1/jobs",
            json!({"prompt": "FAKE crash", "allowed_tools": ["Bash"], "max_attempts": 1}),
        )
        .await;
    assert_eq!(status, 201, "{failing}");
    let failing_id = failing["id"].as_str().unwrap().to_string();
    s.as_key(&key)
        .wait_until(&failing_id, |j| j["state"] == "dead")
        .await;

    // Then the admin puts the project on the safe default.
    let p = set_policy(&s, &admin, "tenant-b", json!({})).await;
    assert_eq!(p["policy"]["tools"], json!(["Read", "Glob", "Grep"]), "{p}");
    assert_eq!(p["custom"], true);
    let before = job_count(&b).await;

    let raw_mcp =
        json!({"mcpServers": {"x": {"command": "sh", "args": ["-c", "cat /etc/passwd"]}}});
    let native = [
        (
            json!({"prompt": "x", "mcp_config": raw_mcp}),
            "raw_mcp",
            "mcp_config",
        ),
        (
            json!({"prompt": "x", "allowed_tools": ["Bash"]}),
            "tools",
            "Bash",
        ),
        (
            json!({"prompt": "x", "tools": ["Bash", "Read"]}),
            "tools",
            "Bash",
        ),
        (
            json!({"prompt": "x", "permission_mode": "bypassPermissions"}),
            "permission_modes",
            "bypassPermissions",
        ),
        (json!({"prompt": "x", "cwd": root}), "roots", &root),
        (json!({"prompt": "x", "add_dirs": [root]}), "roots", &root),
        (
            json!({"prompt": "x", "allowed_tools": ["mcp__evil__run"]}),
            "mcp_servers",
            "mcp__evil__run",
        ),
        // One item holding a list, which the CLI would split.
        (
            json!({"prompt": "x", "tools": ["Read", "Grep(x) Bash"]}),
            "tools",
            "Bash",
        ),
        (
            json!({"prompt": "x", "allowed_tools": ["Read(x),Write"]}),
            "tools",
            "Write",
        ),
    ];
    for (body, rule, value) in native {
        let (status, e) = b.post("/v1/jobs", body.clone()).await;
        refused(&format!("POST /v1/jobs {body}"), status, &e, rule, value);
        assert_eq!(e["error"]["rule"], rule, "{e}");
        assert_eq!(e["error"]["value"], value, "{e}");
    }
    // The compatible routes that take options.
    for (path, body, rule, value) in [
        (
            "/v1/chat",
            json!({"prompt": "x", "allowed_tools": ["Bash"]}),
            "tools",
            "Bash",
        ),
        (
            "/v1/chat/stream",
            json!({"prompt": "x", "permission_mode": "bypassPermissions"}),
            "permission_modes",
            "bypassPermissions",
        ),
        (
            "/v1/chat",
            json!({"prompt": "x", "cwd": root}),
            "roots",
            &root,
        ),
        (
            "/execute",
            json!({"prompt": "x", "allowed_tools": ["Write"]}),
            "tools",
            "Write",
        ),
    ] {
        let (status, e) = b.post(path, body).await;
        refused(path, status, &e, rule, value);
    }
    // Saving an agent or a routine that asks for too much.
    let (status, e) = b
        .post(
            "/v1/agents",
            json!({"name": "mcp", "prompt_template": "x", "options": {"mcp_config": raw_mcp}}),
        )
        .await;
    refused("POST /v1/agents", status, &e, "raw_mcp", "mcp_config");
    let (status, e) = b
        .post(
            "/v1/agents",
            json!({"name": "checked", "prompt_template": "x", "verify": {"command": ["sh", "-c", "id"]}}),
        )
        .await;
    refused("an agent's verify", status, &e, "verify", "verify");
    let (status, e) = b
        .request(
            Method::PUT,
            "/v1/agents/shell",
            Some(json!({"name": "shell", "prompt_template": "x", "options": {"permission_mode": "acceptEdits"}})),
        )
        .await;
    refused(
        "PUT /v1/agents/shell",
        status,
        &e,
        "permission_modes",
        "acceptEdits",
    );
    let (status, e) = b
        .post(
            "/v1/routines",
            json!({"name": "wide", "prompt": "x", "options": {"add_dirs": [root]}}),
        )
        .await;
    refused("POST /v1/routines", status, &e, "roots", &root);
    // Running what was saved before: the narrowed policy applies.
    let (status, e) = b
        .post("/v1/agents/shell/runs", json!({"input": {"cmd": "ls"}}))
        .await;
    refused("POST /v1/agents/shell/runs", status, &e, "tools", "Bash");
    let resp = s
        .http
        .post(format!("{}/", s.base))
        .bearer_auth(&key)
        .header("x-baton-agent", "tenant-b/shell")
        .json(&json!({"cmd": "ls"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let e: Value = resp.json().await.unwrap();
    refused("POST / (seed 004)", status, &e, "tools", "Bash");
    let resp = s
        .http
        .post(trigger["fire_url"].as_str().unwrap())
        .bearer_auth(trigger["token"].as_str().unwrap())
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "experimental-cc-routine-2026-04-01")
        .json(&json!({"text": "go"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let e: Value = resp.json().await.unwrap();
    refused(
        "a routine's fire",
        status,
        &e,
        "permission_modes",
        "bypassPermissions",
    );
    let (status, e) = b
        .post(&format!("/v1/jobs/{failing_id}/retry"), json!({}))
        .await;
    refused("POST /v1/jobs/{id}/retry", status, &e, "tools", "Bash");
    // The routes that take only a prompt get the project's defaults, which the policy
    // also holds to.
    let (status, p) = s
        .as_key(&admin)
        .request(
            Method::PATCH,
            "/v1/projects/tenant-b",
            Some(json!({"defaults": {"allowed_tools": ["Bash"]}})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    for path in ["/claude", "/claude/stream"] {
        let (status, e) = b.post(path, json!({"prompt": "x"})).await;
        refused(path, status, &e, "tools", "Bash");
    }
    assert_eq!(job_count(&b).await, before, "nothing was queued");
    s.stop().await;
}

#[tokio::test]
async fn an_admitted_job_gets_what_its_policy_fills_in_and_records_it() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let key = project_with_key(&s, &admin, "tenant-c").await;
    let b = s.as_key(&key);
    let workdir = s.roots.path().join("c");
    std::fs::create_dir_all(&workdir).unwrap();
    let workdir = workdir.display().to_string();
    let policy = json!({"tools": ["Read", "Bash(git log:*)"], "permission_modes": ["default", "plan"],
        "models": ["sonnet", "haiku"], "max_turns": 4, "max_timeout_ms": 60000,
        "max_budget_usd": 0.5, "roots": [workdir]});
    set_policy(&s, &admin, "tenant-c", policy).await;
    let job = b
        .run(
            json!({"prompt": "FAKE echo_env", "allowed_tools": ["Bash(git log:*)"],
                    "permission_mode": "plan", "cwd": workdir}),
        )
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    let o = &job["options"];
    assert_eq!(o["tools"], json!(["Read", "Bash"]), "{job}");
    assert_eq!(o["model"], "sonnet");
    assert_eq!(
        (o["max_turns"].clone(), o["max_budget_usd"].clone()),
        (json!(4), json!(0.5))
    );
    assert_eq!(o["timeout_ms"], 60000);
    assert_eq!(job["policy"]["roots"], json!([workdir]), "{job}");
    assert_eq!(job["sandboxed"], false, "runner.sandbox = none in tests");
    // The CLI was started with them.
    let report: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    let argv = report["argv"].to_string();
    for part in [
        r#""--tools","Read,Bash""#,
        r#""--model","sonnet""#,
        r#""--max-turns","4""#,
        // Not the settings of its working directory, nor its MCP servers.
        r#""--setting-sources","user""#,
        r#""--strict-mcp-config""#,
    ] {
        assert!(argv.contains(part), "{part} in {argv}");
    }
    // A root outside the policy's, a path out through a symbolic link, a model it does
    // not list, more turns than it allows.
    let outside = s.roots.path().join("d");
    std::fs::create_dir_all(&outside).unwrap();
    let link = std::path::Path::new(&workdir).join("out");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    for (body, rule) in [
        (json!({"prompt": "x", "cwd": outside}), "roots"),
        (json!({"prompt": "x", "cwd": link}), "roots"),
        (json!({"prompt": "x", "model": "opus"}), "models"),
        (json!({"prompt": "x", "max_turns": 5}), "max_turns"),
        (
            json!({"prompt": "x", "timeout_ms": 120000}),
            "max_timeout_ms",
        ),
        (
            json!({"prompt": "x", "allowed_tools": ["Bash(rm:*)"]}),
            "tools",
        ),
    ] {
        let (status, e) = b.post("/v1/jobs", body.clone()).await;
        assert_eq!(
            (status.as_u16(), e["error"]["rule"].as_str()),
            (403, Some(rule)),
            "{body}: {e}"
        );
    }
    // An admin's policy must be one Baton can keep.
    for (bad, says) in [
        (
            json!({"roots": ["/etc"]}),
            "outside the configured workspace roots",
        ),
        (
            json!({"permission_modes": ["yolo"]}),
            "not a permission mode",
        ),
        (json!({"mcp_servers": ["github"]}), "catalogue"),
        (json!({"tools": ["Read"], "extra": 1}), "extra"),
    ] {
        let (status, e) = s
            .as_key(&admin)
            .request(
                Method::PUT,
                "/v1/projects/tenant-c/policy",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {e}");
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
    // A project can be made with its policy; a bad one makes no project.
    let (status, p) = s
        .as_key(&admin)
        .post(
            "/v1/projects",
            json!({"id": "tenant-e", "policy": {"tools": ["Read", "Edit"]}}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), p["policy"]["tools"].clone()),
        (201, json!(["Read", "Edit"])),
        "{p}"
    );
    let (_, p) = s.as_key(&admin).get("/v1/projects/tenant-e/policy").await;
    assert_eq!(p["custom"], true, "{p}");
    let (status, p) = s
        .as_key(&admin)
        .post(
            "/v1/projects",
            json!({"id": "tenant-f", "policy": {"roots": ["/etc"]}}),
        )
        .await;
    assert_eq!(status, 400, "{p}");
    let (status, _) = s.as_key(&admin).get("/v1/projects/tenant-f").await;
    assert_eq!(status, 404);
    // Only an admin sets or reads a policy; another project's policy is not there.
    let (status, _) = b
        .request(Method::PUT, "/v1/projects/tenant-c/policy", Some(json!({})))
        .await;
    assert_eq!(status, 403);
    let (status, _) = s.as_key(&admin).get("/v1/projects/nope/policy").await;
    assert_eq!(status, 404);
    // The change is in the audit log.
    let (_, audit) = s.as_key(&admin).get("/v1/audit?project=tenant-c").await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "project.policy"),
        "{audit}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_default_projects_policy_comes_from_the_configuration_and_is_open_without_one() {
    // Without [policy]: a single user's Baton, as before.
    let s = Server::start().await;
    let job = s
        .run(json!({"prompt": "FAKE text ok", "allowed_tools": ["Bash"], "permission_mode": "acceptEdits"}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["policy"]["raw_mcp"], true, "{job}");
    assert!(job["options"].get("tools").is_none(), "{job}");
    s.stop().await;

    let s = Server::with(&[(
        "policy",
        r#"{tools = ["Read", "Grep"], permission_modes = ["default", "dontAsk"]}"#,
    )])
    .await;
    let (status, e) = s
        .post(
            "/v1/jobs",
            json!({"prompt": "x", "allowed_tools": ["Bash"]}),
        )
        .await;
    refused("the configured policy", status, &e, "tools", "Bash");
    let job = s
        .run(json!({"prompt": "FAKE text ok", "permission_mode": "dontAsk"}))
        .await;
    assert_eq!(job["options"]["tools"], json!(["Read", "Grep"]), "{job}");
    let (_, p) = s.get("/v1/projects/default/policy").await;
    assert_eq!(p["custom"], false, "{p}");
    s.stop().await;
}

#[tokio::test]
async fn the_sandbox_is_on_by_default_once_baton_is_shared_unless_a_project_opts_out() {
    let s = Server::with(&[("runner.sandbox", "auto")]).await;
    // One project on loopback: as before.
    let job = s.run(prompt("FAKE text alone")).await;
    assert_eq!(job["sandboxed"], false, "{job}");
    let (_, health) = s.get("/v1/health").await;
    assert_eq!(health["sandbox"]["mode"], "auto", "{health}");
    assert_eq!(health["sandbox"]["shared"], false, "{health}");
    // A second project makes Baton shared: every job must run in the sandbox, and this
    // one cannot make one (no proxy), so the job fails sandbox_failed, never runs bare.
    let admin = admin_key(&s).await;
    let key = project_with_key(&s, &admin, "tenant-d").await;
    let job = s.as_key(&key).run(prompt("FAKE text shared")).await;
    assert_eq!(job["sandboxed"], true, "{job}");
    assert_eq!(
        (job["state"].as_str(), job["error"]["type"].as_str()),
        (Some("failed"), Some("sandbox_failed")),
        "{job}"
    );
    assert!(job["result"].is_null(), "{job}");
    let job = s.as_key(&admin).run(prompt("FAKE text default")).await;
    assert_eq!(job["error"]["type"], "sandbox_failed", "{job}");
    // A project whose admin opts out runs bare, and says so in health.
    let mut off = open_policy();
    off["sandbox"] = json!("off");
    let p = set_policy(&s, &admin, "tenant-d", off).await;
    assert_eq!(
        (p["sandboxed"].clone(), p["sandbox_reason"].as_str()),
        (
            json!(false),
            Some("the project's policy says sandbox = \"off\"")
        )
    );
    let job = s.as_key(&key).run(prompt("FAKE text bare")).await;
    assert_eq!(
        (job["sandboxed"].clone(), job["state"].clone()),
        (json!(false), json!("completed")),
        "{job}"
    );
    let (_, health) = s.as_key(&admin).get("/v1/health").await;
    assert_eq!(health["sandbox"]["shared"], true, "{health}");
    assert_eq!(
        health["sandbox"]["off_for"],
        json!(["tenant-d"]),
        "{health}"
    );
    assert_eq!(health["sandbox"]["project_sandboxed"], true, "{health}");
    let (_, health) = s.as_key(&key).get("/v1/health").await;
    assert_eq!(health["sandbox"]["project_sandboxed"], false, "{health}");
    // Asking for a sandbox this Baton cannot make is refused when the policy is set.
    let (status, e) = s
        .as_key(&admin)
        .request(
            Method::PUT,
            "/v1/projects/tenant-d/policy",
            Some(json!({"sandbox": "on"})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    s.stop().await;
}

#[tokio::test]
async fn a_catalogue_server_outside_the_cli_is_bridged_without_a_sandbox_too() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("outside");
    std::fs::write(
        &script,
        "#!/bin/sh\nread request\necho \"secret=$OUTSIDE_SECRET cwd=$(pwd) home=$HOME\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let catalogue = format!(
        r#"[{{name = "outside", command = "{}", env = {{OUTSIDE_SECRET = "bridge-canary"}}, sandbox = false}}]"#,
        script.display()
    );
    let helper = crate::support::baton_bin().display().to_string();
    let s = Server::with(&[
        ("mcp_server", catalogue.as_str()),
        ("runner.sandbox_helper", helper.as_str()),
    ])
    .await;
    let job = s
        .run(json!({"prompt": "FAKE mcp outside", "mcp_servers": ["outside"]}))
        .await;
    let r = job["result"].as_str().unwrap_or_default().to_string();
    assert!(r.starts_with("secret=bridge-canary cwd="), "{job}");
    // It works in a directory of its own beside the attempt's, not in the CLI's.
    assert!(r.contains(".mcp/server home="), "{r}");
    let job = s
        .run(json!({"prompt": "FAKE cat ../mcp_config.json", "mcp_servers": ["outside"]}))
        .await;
    let config = job["result"].as_str().unwrap_or_default();
    assert!(
        config.contains("mcp-bridge") && !config.contains("bridge-canary"),
        "{config}"
    );
    // A name the catalogue does not have is refused before anything is queued.
    let (status, e) = s
        .post("/v1/jobs", json!({"prompt": "x", "mcp_servers": ["nope"]}))
        .await;
    assert_eq!(status, 400, "{e}");
    s.stop().await;
}
