use std::path::PathBuf;

use anyhow::Context;
use baton::client::{self, Client, RunOptions};
use baton::config::LogFormat;
use baton::{App, Config};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Claude Code as a durable, observable worker behind an HTTP API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServerFlags {
    /// Configuration file (default: ./baton.toml if present).
    #[arg(long, env = "BATON_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (loopback only).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (default: $XDG_DATA_HOME/baton).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The claude executable (default: $CLAUDE_BIN, else claude on PATH).
    #[arg(long)]
    claude_bin: Option<PathBuf>,
    /// Attempts running at once.
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// A shared PostgreSQL database (postgres://user@host/db) instead of the embedded
    /// SQLite; the password goes in PGPASSWORD or ~/.pgpass, never here.
    #[arg(long)]
    database_url: Option<String>,
    /// all (default), api or worker.
    #[arg(long)]
    role: Option<String>,
    /// Any configuration key, as section.key=value (repeatable), e.g. runner.lease_seconds=20.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ServerFlags {
    fn load(&self) -> anyhow::Result<Config> {
        let mut flags: Vec<(String, String)> = Vec::new();
        if let Some(v) = &self.listen {
            flags.push(("server.listen".into(), v.clone()));
        }
        if let Some(v) = &self.data_dir {
            flags.push(("server.data_dir".into(), v.display().to_string()));
        }
        if let Some(v) = &self.claude_bin {
            flags.push(("runner.claude_bin".into(), v.display().to_string()));
        }
        if let Some(v) = self.max_concurrency {
            flags.push(("runner.max_concurrency".into(), v.to_string()));
        }
        if let Some(v) = &self.database_url {
            flags.push(("store.database_url".into(), v.clone()));
        }
        if let Some(v) = &self.role {
            flags.push(("server.role".into(), v.clone()));
        }
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
            flags.push((k.trim().into(), v.into()));
        }
        // Any user on the machine can read a process's argv.
        if let Some((_, url)) = flags.iter().find(|(k, _)| k == "store.database_url")
            && baton::config::url_has_password(url)
        {
            anyhow::bail!(
                "the database URL on the command line carries a password, which any user can read \
                 in the process list; put it in PGPASSWORD, ~/.pgpass, BATON_STORE_DATABASE_URL or baton.toml"
            );
        }
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::load(self.config.as_deref(), &env, &flags)
    }
}

/// The server the client commands talk to. Each setting comes from its flag, else its
/// environment variable, else the client configuration file
/// (`$XDG_CONFIG_HOME/baton/client.toml`: `server`, `api_key`, `ca_cert`).
#[derive(clap::Args)]
struct Remote {
    /// Baton's base URL (default http://127.0.0.1:7847).
    #[arg(long = "server", env = "BATON_SERVER", global = true)]
    url: Option<String>,
    /// The API key to send (never printed); needed once the server has keys.
    #[arg(long, env = "BATON_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// A CA certificate (PEM) to trust for an https server signed by a private CA.
    #[arg(long, env = "BATON_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
}

impl Remote {
    fn client(&self) -> anyhow::Result<Client> {
        let file = baton::client::ClientFile::load()?;
        let url = self
            .url
            .clone()
            .or(file.server)
            .unwrap_or_else(|| "http://127.0.0.1:7847".into());
        let key = self.api_key.clone().or(file.api_key);
        let ca = self.ca_cert.clone().or(file.ca_cert);
        Client::with_ca(&url, key.as_deref(), ca.as_deref())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (API and workers) on this machine.
    Serve(ServerFlags),
    /// Submit a prompt, follow it, print the result. Exit 0 completed, 1 failed, 3 cancelled.
    Run {
        #[command(flatten)]
        options: RunOptions,
        #[command(flatten)]
        remote: Remote,
    },
    /// Inspect and control jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// The dead-letter queue.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check the CLI, credentials, data directory and database.
    Doctor(ServerFlags),
    /// Serve MCP on stdin and stdout, as a client of a Baton server: its jobs and agents
    /// as tools. Only JSON-RPC goes to stdout; logs go to stderr.
    Mcp {
        #[command(flatten)]
        remote: Remote,
    },
    /// API keys, managed on the database the server uses (works without a server, so the
    /// first key can be made).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Projects: the tenant boundary (needs an admin key).
    Projects {
        #[command(subcommand)]
        command: ProjectsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Agents: saved, versioned job configurations run with an input.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make the server's agents what a folder declares (DIR/<agent>/agent.toml, and
    /// .mcp.json beside it); prints what changed, never deletes.
    Apply {
        dir: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// What the API calls cost (GET /v1/usage; needs usage:read): tokens, cost, jobs and
    /// calls, grouped.
    Usage {
        /// From this day (2026-12-01) or RFC 3339 time; default: the start of this month.
        #[arg(long)]
        from: Option<String>,
        /// Until this day or time (exclusive); default: now.
        #[arg(long)]
        to: Option<String>,
        /// day, project, key, agent, routine or model.
        #[arg(long, default_value = "day")]
        group_by: String,
        /// Another project (an admin key), or every project when an admin key names none.
        #[arg(long)]
        project: Option<String>,
        /// The answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit log of changes (needs an admin key).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key and print it, once: alone on stdout, or as JSON with --json.
    Create {
        /// A name to know the key by.
        #[arg(long)]
        name: String,
        /// The admin scope: every project, projects, keys, the audit log.
        #[arg(long)]
        admin: bool,
        /// A scope (jobs:write, jobs:read, admin); repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The project the key acts in.
        #[arg(long, default_value = "default")]
        project: String,
        /// When the key stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        /// The key's own rate limit (its project's applies as well).
        #[arg(long)]
        requests_per_minute: Option<u32>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerFlags,
    },
    /// List keys (never their secrets).
    Ls {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerFlags,
    },
    /// Revoke a key by its id: it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        server: ServerFlags,
    },
}

#[derive(Subcommand)]
enum ProjectsCommand {
    /// Create a project.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Attempts running at once, across nodes.
        #[arg(long)]
        max_running: Option<u32>,
        /// Jobs queued or running at once; more are refused with 429.
        #[arg(long)]
        max_queued: Option<u32>,
        /// Requests a minute over all the project's keys.
        #[arg(long)]
        requests_per_minute: Option<u32>,
    },
    /// List projects.
    Ls,
    /// Show one project as JSON.
    Show { id: String },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// List the project's agents.
    Ls,
    /// Show an agent as JSON (its newest version, or --version).
    Show {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Run an agent with a JSON input, wait for it, print its result.
    Run {
        name: String,
        /// The input, as JSON (`-` reads it from stdin).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Seconds to wait for the run (at most 300).
        #[arg(long, default_value_t = 300)]
        wait: u32,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit records, newest first.
    Ls {
        #[arg(long)]
        project: Option<String>,
        /// e.g. job.create, key.revoke.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum DeadCommand {
    /// List dead jobs with their last error.
    Ls {
        #[arg(long)]
        error_type: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Replay dead jobs, oldest first.
    Replay {
        #[arg(long)]
        error_type: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs, newest first.
    Ls {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one job as JSON.
    Show { id: String },
    /// Cancel a job.
    Cancel { id: String },
    /// Replay a failed or dead job.
    Retry { id: String },
    /// Print a job's events; -f follows them live.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
}

fn init_tracing(filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes are for a person at a terminal; in a file or a pipe they are noise.
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

/// Each attempt holds three pipes; raise the soft limit on open files to the hard limit so
/// a few hundred concurrent attempts never fail with EMFILE.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
    }
}

fn main() {
    // Inside an attempt's sandbox: the forwarder, which needs nothing else of Baton.
    let mut argv = std::env::args_os().skip(1);
    match argv.next() {
        Some(a) if a == "sandbox-init" => {
            std::process::exit(baton_runner::forwarder::main(argv.collect()));
        }
        // Inside a sandbox: a catalogue MCP server that runs outside it.
        Some(a) if a == "mcp-bridge" => {
            std::process::exit(baton_runner::forwarder::mcp_bridge(argv.collect()));
        }
        _ => {}
    }
    // Before any thread starts: a credential in the environment is taken out of it, and out
    // of the copy /proc/<pid>/environ shows.
    baton::proxy::take_from_environment();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("baton: cannot start the runtime: {e}");
            std::process::exit(client::exit::USAGE);
        }
    };
    let code = runtime.block_on(async {
        match dispatch(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("baton: {e:#}");
                client::exit::USAGE
            }
        }
    });
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(flags) => {
            let config = flags.load()?;
            init_tracing(&config.server.log, config.server.log_format);
            raise_open_file_limit();
            let app = App::build(config).await?;
            tracing::info!(address = %app.local_addr(), scheme = app.scheme(), "baton listening");
            let stop = CancellationToken::new();
            let signal_stop = stop.clone();
            tokio::spawn(async move {
                baton::app::shutdown_signal().await;
                signal_stop.cancel();
            });
            app.run_until_stopped(stop).await?;
            Ok(0)
        }
        Command::Mcp { remote } => {
            init_tracing("warn", LogFormat::Text);
            let client = remote.client()?;
            let api = baton_mcp::Transport::Remote {
                http: client.http().clone(),
                base: client.base().to_string(),
            };
            baton_mcp::serve_stdio(api, tokio_util::sync::CancellationToken::new())
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            Ok(0)
        }
        Command::Run {
            mut options,
            remote,
        } => {
            if options.prompt == "-" {
                options.prompt.clear();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut options.prompt)
                    .context("reading the prompt from stdin")?;
            }
            let client = remote.client()?;
            client::run(&client, options).await
        }
        Command::Jobs { command, remote } => {
            let client = remote.client()?;
            match command {
                JobsCommand::Ls { state, limit } => client::jobs_ls(&client, state, limit).await?,
                JobsCommand::Show { id } => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &client.get(&format!("/v1/jobs/{id}")).await?
                        )?
                    )
                }
                JobsCommand::Cancel { id } => {
                    let job = client
                        .post(&format!("/v1/jobs/{id}/cancel"), &serde_json::json!({}))
                        .await?;
                    println!(
                        "{} {}",
                        job["id"].as_str().unwrap_or(&id),
                        job["state"].as_str().unwrap_or("?")
                    );
                }
                JobsCommand::Logs { id, follow } => client::jobs_logs(&client, &id, follow).await?,
                JobsCommand::Retry { id } => {
                    let job = client
                        .post(&format!("/v1/jobs/{id}/retry"), &serde_json::json!({}))
                        .await?;
                    println!(
                        "{} {}",
                        job["id"].as_str().unwrap_or(&id),
                        job["state"].as_str().unwrap_or("?")
                    );
                }
            }
            Ok(0)
        }
        Command::Dead { command, remote } => {
            let client = remote.client()?;
            match command {
                DeadCommand::Ls { error_type, limit } => {
                    client::dead_ls(&client, error_type, limit).await?
                }
                DeadCommand::Replay { error_type, limit } => {
                    let mut body = serde_json::json!({"limit": limit});
                    if let Some(t) = error_type {
                        body["error_type"] = serde_json::json!(t);
                    }
                    let result = client.post("/v1/dead/replay", &body).await?;
                    println!("replayed {}", result["count"]);
                    for id in result["job_ids"].as_array().into_iter().flatten() {
                        println!("{}", id.as_str().unwrap_or(""));
                    }
                }
            }
            Ok(0)
        }
        Command::Keys { command } => {
            match command {
                KeysCommand::Create {
                    name,
                    admin,
                    mut scopes,
                    project,
                    expires_at,
                    requests_per_minute,
                    json,
                    server,
                } => {
                    if admin && !scopes.iter().any(|s| s == "admin") {
                        scopes.insert(0, "admin".into());
                    }
                    let config = server.load()?;
                    baton::manage::keys_create(
                        &config,
                        &name,
                        &project,
                        &scopes,
                        expires_at.as_deref(),
                        requests_per_minute,
                        json,
                    )
                    .await?
                }
                KeysCommand::Ls {
                    project,
                    json,
                    server,
                } => baton::manage::keys_ls(&server.load()?, project.as_deref(), json).await?,
                KeysCommand::Revoke { id, server } => {
                    baton::manage::keys_revoke(&server.load()?, &id).await?
                }
            }
            Ok(0)
        }
        Command::Projects { command, remote } => {
            let client = remote.client()?;
            match command {
                ProjectsCommand::Create {
                    id,
                    name,
                    max_running,
                    max_queued,
                    requests_per_minute,
                } => {
                    let quotas = serde_json::json!({
                        "max_running": max_running,
                        "max_queued": max_queued,
                        "requests_per_minute": requests_per_minute,
                    });
                    baton::manage::projects_create(&client, &id, name.as_deref(), quotas).await?
                }
                ProjectsCommand::Ls => baton::manage::projects_ls(&client).await?,
                ProjectsCommand::Show { id } => baton::manage::projects_show(&client, &id).await?,
            }
            Ok(0)
        }
        Command::Agents { command, remote } => {
            let client = remote.client()?;
            match command {
                AgentsCommand::Ls => baton::manage::agents_ls(&client).await?,
                AgentsCommand::Show { name, version } => {
                    let path = match version {
                        Some(v) => format!("/v1/agents/{name}?version={v}"),
                        None => format!("/v1/agents/{name}"),
                    };
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&client.get(&path).await?)?
                    );
                }
                AgentsCommand::Run { name, input, wait } => {
                    return baton::manage::agents_run(&client, &name, &input, wait).await;
                }
            }
            Ok(0)
        }
        Command::Apply { dir, remote } => {
            baton::manage::apply(&remote.client()?, &dir).await?;
            Ok(0)
        }
        Command::Usage {
            from,
            to,
            group_by,
            project,
            json,
            remote,
        } => {
            let query = baton::manage::UsageQuery {
                from,
                to,
                group_by,
                project,
            };
            baton::manage::usage(&remote.client()?, &query, json).await?;
            Ok(0)
        }
        Command::Audit { command, remote } => {
            let client = remote.client()?;
            match command {
                AuditCommand::Ls {
                    project,
                    action,
                    limit,
                } => {
                    baton::manage::audit_ls(&client, project.as_deref(), action.as_deref(), limit)
                        .await?
                }
            }
            Ok(0)
        }
        Command::Doctor(flags) => {
            let config = flags.load()?;
            Ok(if baton::doctor::doctor(&config).await {
                0
            } else {
                1
            })
        }
    }
}
