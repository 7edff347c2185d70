//! `baton keys`, `baton projects` and `baton audit`. Keys are managed on the database
//! itself (the data directory or `store.database_url` the server uses), so the first key
//! can be made before any key exists and without a running server; projects and the audit
//! log go through the HTTP API with an administrator's key.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Config;
use crate::client::Client;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `baton keys create`: prints the key once (alone on stdout, or in `--json`), never again.
pub async fn keys_create(
    config: &Config,
    name: &str,
    project: &str,
    scopes: &[String],
    expires_at: Option<&str>,
    requests_per_minute: Option<u32>,
    json_out: bool,
) -> anyhow::Result<()> {
    if scopes.is_empty() {
        bail!("give --admin, or the key's scopes with --scope (jobs:write, jobs:read; repeatable)");
    }
    let req = baton_api::admin::check_key_request(
        project,
        name,
        scopes,
        expires_at,
        requests_per_minute,
        now_ms(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let store = crate::app::open_store(config).await?;
    match store.get_project(&req.project).await {
        Ok(_) => {}
        Err(baton_store::StoreError::NotFound(_)) => bail!(
            "no project with id {:?}; create it with `baton projects create {}` first",
            req.project.as_str(),
            req.project
        ),
        Err(e) => return Err(e).context("reading the project"),
    }
    let (record, key) = baton_api::admin::make_key(&store, &req, now_ms())
        .await
        .context("storing the key")?;
    if json_out {
        println!("{}", baton_api::admin::created_key_view(&record, key));
    } else {
        eprintln!(
            "made key {} ({}) in project {} with scopes {}; it is shown only this once:",
            record.id,
            record.name,
            record.project_id,
            record.scopes.join(", ")
        );
        println!("{key}");
    }
    Ok(())
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".into(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// `baton keys ls`: never a secret.
pub async fn keys_ls(config: &Config, project: Option<&str>, json_out: bool) -> anyhow::Result<()> {
    let project = project
        .map(baton_core::ProjectId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = crate::app::open_store(config).await?;
    let keys = store.list_keys(project.as_ref()).await?;
    if json_out {
        let rows: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.id, "project": k.project_id.as_str(), "name": k.name, "scopes": k.scopes,
                    "created_at": time(Some(k.created_at)), "expires_at": k.expires_at.map(|t| time(Some(t))),
                    "last_used_at": k.last_used_at.map(|t| time(Some(t))),
                    "revoked_at": k.revoked_at.map(|t| time(Some(t))),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16}  {:<12}  {:<20}  {:<22}  {:<20}  STATE",
        "ID", "PROJECT", "NAME", "SCOPES", "LAST USED"
    );
    let now = now_ms();
    for k in keys {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<16}  {:<12}  {:<20}  {:<22}  {:<20}  {state}",
            k.id,
            k.project_id,
            k.name,
            k.scopes.join(","),
            time(k.last_used_at)
        );
    }
    Ok(())
}

/// `baton keys revoke`: the key stops working at once.
pub async fn keys_revoke(config: &Config, id: &str) -> anyhow::Result<()> {
    let store = crate::app::open_store(config).await?;
    match store.revoke_key(id, now_ms()).await {
        Ok(k) => {
            println!("revoked {} ({})", k.id, k.name);
            Ok(())
        }
        Err(baton_store::StoreError::NotFound(_)) => bail!("no key with id {id:?}"),
        Err(e) => Err(e.into()),
    }
}

/// `baton projects create`.
pub async fn projects_create(
    client: &Client,
    id: &str,
    name: Option<&str>,
    quotas: Value,
) -> anyhow::Result<()> {
    let mut body = json!({"id": id, "quotas": quotas});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    let p = client.post("/v1/projects", &body).await?;
    println!("{}", serde_json::to_string_pretty(&p)?);
    Ok(())
}

pub async fn projects_ls(client: &Client) -> anyhow::Result<()> {
    let list = client.get("/v1/projects").await?;
    println!(
        "{:<20}  {:<24}  {:>11}  {:>10}  {:>9}",
        "ID", "NAME", "MAX_RUNNING", "MAX_QUEUED", "REQ/MIN"
    );
    let n = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    };
    for p in list["data"].as_array().into_iter().flatten() {
        println!(
            "{:<20}  {:<24}  {:>11}  {:>10}  {:>9}",
            p["id"].as_str().unwrap_or(""),
            p["name"].as_str().unwrap_or(""),
            n(&p["quotas"]["max_running"]),
            n(&p["quotas"]["max_queued"]),
            n(&p["quotas"]["requests_per_minute"]),
        );
    }
    Ok(())
}

pub async fn projects_show(client: &Client, id: &str) -> anyhow::Result<()> {
    let p = client.get(&format!("/v1/projects/{id}")).await?;
    println!("{}", serde_json::to_string_pretty(&p)?);
    Ok(())
}

/// What `baton usage` asks for.
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: String,
    pub project: Option<String>,
}

/// `baton usage`: the table `GET /v1/usage` answers, and its total.
pub async fn usage(client: &Client, q: &UsageQuery, json: bool) -> anyhow::Result<()> {
    let mut query = vec![format!("group_by={}", q.group_by)];
    for (name, value) in [("from", &q.from), ("to", &q.to), ("project", &q.project)] {
        if let Some(v) = value {
            query.push(format!("{name}={}", crate::client::encode(v)));
        }
    }
    let usage = client
        .get(&format!("/v1/usage?{}", query.join("&")))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    println!(
        "{} .. {}",
        usage["from"].as_str().unwrap_or(""),
        usage["to"].as_str().unwrap_or("")
    );
    println!(
        "{:<28}  {:>8}  {:>6}  {:>12}  {:>12}  {:>12}",
        q.group_by.to_uppercase(),
        "CALLS",
        "JOBS",
        "INPUT",
        "OUTPUT",
        "COST_USD"
    );
    let line = |name: &str, r: &serde_json::Value| {
        println!(
            "{:<28}  {:>8}  {:>6}  {:>12}  {:>12}  {:>12.6}",
            name,
            r["calls"],
            r["jobs"],
            r["input_tokens"],
            r["output_tokens"],
            r["cost_usd"].as_f64().unwrap_or(0.0)
        );
    };
    for r in usage["data"].as_array().into_iter().flatten() {
        line(r["group"].as_str().unwrap_or("-"), r);
    }
    line("TOTAL", &usage["total"]);
    Ok(())
}

/// `baton audit ls`, newest first.
pub async fn audit_ls(
    client: &Client,
    project: Option<&str>,
    action: Option<&str>,
    limit: u32,
) -> anyhow::Result<()> {
    let mut query = vec![format!("limit={limit}")];
    if let Some(p) = project {
        query.push(format!("project={p}"));
    }
    if let Some(a) = action {
        query.push(format!("action={a}"));
    }
    let list = client
        .get(&format!("/v1/audit?{}", query.join("&")))
        .await?;
    println!(
        "{:<24}  {:<12}  {:<16}  {:<16}  {:<7}  TARGET",
        "AT", "PROJECT", "KEY", "ACTION", "OUTCOME"
    );
    for r in list["data"].as_array().into_iter().flatten() {
        println!(
            "{:<24}  {:<12}  {:<16}  {:<16}  {:<7}  {}",
            r["at"].as_str().unwrap_or(""),
            r["project"].as_str().unwrap_or(""),
            r["key_id"].as_str().unwrap_or("-"),
            r["action"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}

/// `baton agents ls`.
pub async fn agents_ls(client: &Client) -> anyhow::Result<()> {
    let list = client.get("/v1/agents").await?;
    println!("{:<24}  {:>7}  DESCRIPTION", "NAME", "VERSION");
    for a in list["data"].as_array().into_iter().flatten() {
        println!(
            "{:<24}  {:>7}  {}",
            a["name"].as_str().unwrap_or(""),
            a["version"],
            a["description"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `baton agents run`: prints the result (or the structured output) and exits as
/// `baton run` does.
pub async fn agents_run(
    client: &Client,
    name: &str,
    input: &str,
    wait: u32,
) -> anyhow::Result<i32> {
    let text = if input == "-" {
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
            .context("reading the input from stdin")?;
        buf
    } else {
        input.to_string()
    };
    let input: Value = serde_json::from_str(&text).context("--input is not JSON")?;
    let job = client
        .post(
            &format!("/v1/agents/{name}/runs?wait={}", wait.min(300)),
            &json!({"input": input}),
        )
        .await?;
    match job["state"].as_str() {
        Some("completed") => {
            if job["structured_output"].is_null() {
                println!("{}", job["result"].as_str().unwrap_or_default());
            } else {
                println!("{}", job["structured_output"]);
            }
            Ok(crate::client::exit::COMPLETED)
        }
        Some("cancelled") => Ok(crate::client::exit::CANCELLED),
        Some("failed" | "dead") => {
            eprintln!(
                "baton: job {} ended {}: {}",
                job["id"].as_str().unwrap_or(""),
                job["state"].as_str().unwrap_or(""),
                job["error"]["message"]
                    .as_str()
                    .unwrap_or("no error message")
            );
            Ok(crate::client::exit::FAILED)
        }
        _ => {
            eprintln!(
                "baton: job {} still runs; follow it with baton jobs logs -f {}",
                job["id"].as_str().unwrap_or(""),
                job["id"].as_str().unwrap_or("")
            );
            Ok(crate::client::exit::FAILED)
        }
    }
}

/// One agent of a folder given to `baton apply`: its name and its body for the API.
struct Declared {
    name: String,
    body: Value,
}

/// Reads `dir/<name>/agent.toml` (with `CLAUDE.md` beside it as the agent's `claude_md`,
/// `.mcp.json` as its MCP configuration and a `verify` script as its check) for every
/// folder of `dir` that has one.
fn declared_agents(dir: &std::path::Path) -> anyhow::Result<Vec<Declared>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter(|e| e.path().join("agent.toml").is_file())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let folder = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = folder.join("agent.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let mut body = serde_json::to_value(&table)?;
        match body.get("name").and_then(Value::as_str) {
            Some(n) if n != name => bail!(
                "{}: name = {n:?}, but the folder is {name:?}; an agent is named by its folder",
                path.display()
            ),
            _ => body["name"] = json!(name),
        }
        // A `verify` script goes into each run's workspace and is the agent's check,
        // unless agent.toml names another command.
        let script = folder.join("verify");
        if script.is_file() {
            if body.get("files").is_none() {
                body["files"] = json!({});
            }
            body["files"]["verify"] = json!(
                std::fs::read_to_string(&script)
                    .with_context(|| format!("reading {}", script.display()))?
            );
            if body.get("verify").is_none() {
                body["verify"] = json!({"command": ["sh", "verify"]});
            }
        }
        let md = folder.join("CLAUDE.md");
        if md.is_file() {
            body["claude_md"] = json!(
                std::fs::read_to_string(&md)
                    .with_context(|| format!("reading {}", md.display()))?
            );
        }
        let mcp = folder.join(".mcp.json");
        if mcp.is_file() {
            let config: Value = serde_json::from_str(&std::fs::read_to_string(&mcp)?)
                .with_context(|| format!("{} is not JSON", mcp.display()))?;
            if body.get("options").is_none() {
                body["options"] = json!({});
            }
            body["options"]["mcp_config"] = config;
        }
        out.push(Declared { name, body });
    }
    Ok(out)
}

/// Whether the saved agent `saved` already is what `body` declares.
fn same_agent(saved: &Value, body: &Value) -> bool {
    let declared_ct = body["content_type"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            if body.get("output_schema").is_some_and(|s| !s.is_null()) {
                "application/json".into()
            } else {
                "text/plain; charset=utf-8".into()
            }
        });
    let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let or_empty = |v: Value, empty: Value| if v.is_null() { empty } else { v };
    field(saved, "prompt_template") == field(body, "prompt_template")
        && or_empty(field(saved, "description"), json!(""))
            == or_empty(field(body, "description"), json!(""))
        && or_empty(field(saved, "options"), json!({}))
            == or_empty(field(body, "options"), json!({}))
        && field(saved, "input_schema") == field(body, "input_schema")
        && field(saved, "output_schema") == field(body, "output_schema")
        && field(saved, "claude_md") == field(body, "claude_md")
        && or_empty(field(saved, "files"), json!({})) == or_empty(field(body, "files"), json!({}))
        && field(saved, "verify") == field(body, "verify")
        && saved["content_type"].as_str() == Some(declared_ct.as_str())
}

/// `baton apply DIR`: makes the server's agents what the folder declares, creating or
/// changing each as needed and leaving the ones already so; it never deletes. Every
/// folder is read and checked before anything is sent.
pub async fn apply(client: &Client, dir: &std::path::Path) -> anyhow::Result<()> {
    let policies = declared_policies(dir)?;
    let declared = declared_agents(dir)?;
    let routines = declared_routines(dir)?;
    if declared.is_empty() && routines.is_empty() && policies.is_empty() {
        bail!(
            "{} holds no <agent>/agent.toml, no routines/<routine>.toml and no policies/<project>.toml",
            dir.display()
        );
    }
    // Policies first: an agent is checked against its project's policy when it is saved.
    for (project, policy) in policies {
        let path = format!("/v1/projects/{project}/policy");
        let saved = client
            .send(reqwest::Method::GET, &path, None)
            .await
            .with_context(|| format!("reading project {project}'s policy"))?;
        let line = if saved["custom"] == json!(true) && saved["policy"] == policy {
            format!("unchanged policy of {project}")
        } else {
            client
                .send(reqwest::Method::PUT, &path, Some(&policy))
                .await
                .with_context(|| format!("setting project {project}'s policy"))?;
            format!("updated   policy of {project}")
        };
        println!("{line}");
    }
    for d in declared {
        let path = format!("/v1/agents/{}", d.name);
        let saved = client.send(reqwest::Method::GET, &path, None).await;
        let line = match saved {
            Ok(saved) if same_agent(&saved, &d.body) => {
                format!("unchanged {} (version {})", d.name, saved["version"])
            }
            Ok(_) => {
                let a = client
                    .send(reqwest::Method::PUT, &path, Some(&d.body))
                    .await?;
                format!("updated   {} (version {})", d.name, a["version"])
            }
            Err(e) if e.to_string().starts_with("404") => {
                let a = client.post("/v1/agents", &d.body).await?;
                format!("created   {} (version {})", d.name, a["version"])
            }
            Err(e) => return Err(e.context(format!("reading agent {}", d.name))),
        };
        println!("{line}");
    }
    // Routines after agents: a routine may name an agent the folder just made.
    if !routines.is_empty() {
        apply_routines(client, routines).await?;
    }
    Ok(())
}

/// Every `*.toml` of `folder` (none if it does not exist), in name order: its name without
/// the extension, its path and its text.
fn toml_files(
    folder: &std::path::Path,
) -> anyhow::Result<Vec<(String, std::path::PathBuf, String)>> {
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok((stem, path, text))
        })
        .collect()
}

/// Reads `dir/policies/<project>.toml`: each project's policy (as `PUT
/// /v1/projects/{id}/policy` takes it), checked here before anything is sent.
fn declared_policies(dir: &std::path::Path) -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for (project, path, text) in toml_files(&dir.join("policies"))? {
        baton_core::ProjectId::parse(&project)
            .with_context(|| format!("{}: the file is named by its project", path.display()))?;
        let policy: baton_core::Policy =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        policy
            .check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        out.push((project, serde_json::to_value(&policy)?));
    }
    Ok(out)
}

/// One routine of `DIR/routines/<name>.toml`: its body for the API and its triggers.
struct DeclaredRoutine {
    name: String,
    body: Value,
    triggers: Vec<Value>,
}

/// Routine fields compared to decide whether a saved routine is what a file declares.
const ROUTINE_FIELDS: [&str; 8] = [
    "description",
    "prompt",
    "agent",
    "agent_version",
    "input",
    "options",
    "daily_allowance",
    "callback_url",
];

/// Reads `dir/routines/*.toml`. A trigger's secret is never in the file: `secret_env`
/// names the environment variable that holds it.
fn declared_routines(dir: &std::path::Path) -> anyhow::Result<Vec<DeclaredRoutine>> {
    let mut out = Vec::new();
    for (name, path, text) in toml_files(&dir.join("routines"))? {
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let mut body = serde_json::to_value(&table)?;
        let triggers = match body.as_object_mut().and_then(|o| o.remove("triggers")) {
            Some(Value::Array(t)) => t,
            None => Vec::new(),
            Some(_) => bail!("{}: triggers must be a list ([[triggers]])", path.display()),
        };
        match body.get("name").and_then(Value::as_str) {
            Some(n) if n != name => bail!(
                "{}: name = {n:?}, but the file is {name:?}.toml; a routine is named by its file",
                path.display()
            ),
            _ => body["name"] = json!(name),
        }
        let mut resolved = Vec::with_capacity(triggers.len());
        for mut t in triggers {
            if let Some(var) = t.as_object_mut().and_then(|o| o.remove("secret_env")) {
                let var = var.as_str().unwrap_or_default().to_string();
                let secret = std::env::var(&var).with_context(|| {
                    format!(
                        "{}: secret_env = {var:?} is not set in the environment",
                        path.display()
                    )
                })?;
                t["secret"] = json!(secret);
            } else if t.get("secret").is_some() {
                bail!(
                    "{}: a trigger's secret does not belong in a file; name its environment variable with secret_env",
                    path.display()
                );
            }
            resolved.push(t);
        }
        out.push(DeclaredRoutine {
            name,
            body,
            triggers: resolved,
        });
    }
    Ok(out)
}

/// Whether a saved trigger is the declared one (secrets cannot be compared: a webhook or
/// GitHub trigger of the same kind and settings is taken as it).
fn same_trigger(saved: &Value, declared: &Value) -> bool {
    let kind = declared["type"].as_str().unwrap_or_default();
    if saved["type"] != declared["type"] {
        return false;
    }
    let config = &saved["config"];
    let get = |k: &str, default: Value| declared.get(k).cloned().unwrap_or(default);
    match kind {
        "cron" => {
            config["schedule"] == declared["schedule"]
                && config["timezone"] == get("timezone", json!("UTC"))
                && config["catch_up"] == get("catch_up", json!(false))
                && config["overlap"] == get("overlap", json!("skip"))
        }
        "github" => config["events"] == get("events", json!([])),
        "webhook" => config["tolerance_seconds"] == get("tolerance_seconds", json!(300)),
        _ => true,
    }
}

async fn apply_routines(client: &Client, routines: Vec<DeclaredRoutine>) -> anyhow::Result<()> {
    let listed = client
        .send(reqwest::Method::GET, "/v1/routines", None)
        .await
        .context("listing routines")?;
    let saved: Vec<Value> = listed["data"].as_array().cloned().unwrap_or_default();
    for d in routines {
        let existing = saved.iter().find(|r| r["name"] == json!(d.name)).cloned();
        let (routine, line) = match existing {
            None => {
                let r = client.post("/v1/routines", &d.body).await?;
                let line = format!(
                    "created   routine {} ({})",
                    d.name,
                    r["id"].as_str().unwrap_or_default()
                );
                (r, line)
            }
            Some(r) => {
                let mut patch = serde_json::Map::new();
                for f in ROUTINE_FIELDS {
                    let declared = d.body.get(f).cloned().unwrap_or(Value::Null);
                    let default = match f {
                        "description" => json!(""),
                        "input" | "options" => json!({}),
                        "daily_allowance" => json!(baton_core::routine::DEFAULT_DAILY_ALLOWANCE),
                        _ => Value::Null,
                    };
                    let want = if declared.is_null() {
                        default
                    } else {
                        declared.clone()
                    };
                    if r[f] != want {
                        patch.insert(f.to_string(), declared);
                    }
                }
                if patch.is_empty() {
                    let line = format!("unchanged routine {}", d.name);
                    (r, line)
                } else {
                    let id = r["id"].as_str().unwrap_or_default();
                    let changed = client
                        .send(
                            reqwest::Method::PATCH,
                            &format!("/v1/routines/{id}"),
                            Some(&Value::Object(patch)),
                        )
                        .await?;
                    (changed, format!("updated   routine {}", d.name))
                }
            }
        };
        println!("{line}");
        let id = routine["id"].as_str().unwrap_or_default().to_string();
        let have: Vec<Value> = routine["triggers"].as_array().cloned().unwrap_or_default();
        let mut matched = vec![false; have.len()];
        for t in &d.triggers {
            if let Some(i) = (0..have.len()).find(|&i| !matched[i] && same_trigger(&have[i], t)) {
                matched[i] = true;
                continue;
            }
            let made = client
                .post(&format!("/v1/routines/{id}/triggers"), t)
                .await
                .with_context(|| format!("adding a trigger to routine {}", d.name))?;
            let mut line = format!(
                "  added   {} trigger {}",
                made["type"].as_str().unwrap_or_default(),
                made["id"].as_str().unwrap_or_default()
            );
            if let Some(token) = made["token"].as_str() {
                line.push_str(&format!(
                    "\n          fire_url {}\n          token    {token}  (shown once)",
                    made["fire_url"].as_str().unwrap_or_default()
                ));
            }
            if let Some(url) = made["hook_url"].as_str() {
                line.push_str(&format!("\n          hook_url {url}"));
            }
            println!("{line}");
        }
        for (t, used) in have.iter().zip(&matched) {
            if !used {
                println!(
                    "  left    {} trigger {}: not declared; remove it with DELETE /v1/triggers/{}",
                    t["type"].as_str().unwrap_or_default(),
                    t["id"].as_str().unwrap_or_default(),
                    t["id"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
