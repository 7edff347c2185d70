//! `mock-anthropic`: the mock as a process, answering from prompt directives only (no
//! queue), for manual runs and benchmarks with many concurrent `claude` processes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;
use mock_anthropic::{MockAnthropic, Options};
use tokio::signal::unix::{SignalKind, signal};

/// A scripted Anthropic Messages API on loopback, steered by `MOCK_…` prompt directives.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on; 0 picks a free one (see --port-file).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Write the bound port (decimal, with a newline) to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Keep only the newest N requests in the log served at /__mock/requests.
    #[arg(long, value_name = "N")]
    max_logged_requests: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Install the handlers before announcing the port, so a supervisor that signals as
    // soon as it reads the port file cannot kill us with the default disposition.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let mock = MockAnthropic::start_with(Options {
        addr: SocketAddr::new(args.host, args.port),
        max_logged_requests: args.max_logged_requests,
    })
    .await
    .with_context(|| format!("binding {}:{}", args.host, args.port))?;

    if let Some(path) = &args.port_file {
        write_port_file(path, mock.addr().port())?;
    }
    eprintln!("mock-anthropic listening on {}", mock.base_url());

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    mock.shutdown().await;
    Ok(())
}

/// Writes through a temporary file and a rename, so a reader polling for the file never
/// sees it empty or half-written.
fn write_port_file(path: &Path, port: u16) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{port}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
