//! The sandbox's way to the rest of the Internet, when there is one: an HTTP `CONNECT`
//! proxy on a Unix socket (bound into each sandbox, where the forwarder serves it as
//! `HTTPS_PROXY`) that opens a tunnel only to the domains of an allow-list, on port 443,
//! and only to public addresses. Everything else is answered 403 and logged.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

/// The running egress proxy; stops when dropped.
pub struct Egress {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `host` is allowed: an exact entry, or an entry with a leading dot that it ends
/// with (`.npmjs.org` allows `registry.npmjs.org`).
pub fn allowed(allow: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allow.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.strip_prefix('.') {
            Some(suffix) => host == suffix || host.ends_with(&a),
            None => host == a,
        }
    })
}

impl Egress {
    /// Serves on `socket` (made afresh, mode 0600).
    pub fn start(socket: &Path, allow: Vec<String>, timeout: Duration) -> std::io::Result<Self> {
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(socket)?;
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let allow = allow.clone();
                tokio::spawn(async move {
                    if let Err(why) = tunnel(conn, &allow, timeout).await {
                        tracing::info!(refused = %why, "egress: a sandboxed connection was refused");
                    }
                });
            }
        });
        Ok(Self { task })
    }
}

async fn answer(conn: &mut UnixStream, status: &str) {
    let _ = conn
        .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
        .await;
}

/// One client: `CONNECT host:443`, checked, then bytes both ways.
async fn tunnel(mut conn: UnixStream, allow: &[String], timeout: Duration) -> Result<(), String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            answer(&mut conn, "431 Request Header Fields Too Large").await;
            return Err("a request head over 8 KiB".into());
        }
        match tokio::time::timeout(timeout, conn.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return Err("the request head did not arrive".into()),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method != "CONNECT" {
        answer(&mut conn, "405 Method Not Allowed").await;
        return Err(format!("{method} (only CONNECT tunnels are served)"));
    }
    let (host, port) = target.rsplit_once(':').unwrap_or((target, ""));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port != "443" || !allowed(allow, host) {
        answer(&mut conn, "403 Forbidden").await;
        return Err(format!("{target} is not on runner.egress_allow"));
    }
    let addrs: Vec<_> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host, 443))).await {
            Ok(Ok(a)) => a.filter(|a| baton_core::net::is_public(a.ip())).collect(),
            _ => Vec::new(),
        };
    let Some(addr) = addrs.first() else {
        answer(&mut conn, "502 Bad Gateway").await;
        return Err(format!("{host} has no public address"));
    };
    let mut upstream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        _ => {
            answer(&mut conn, "504 Gateway Timeout").await;
            return Err(format!("{host} could not be reached"));
        }
    };
    conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_matches_exact_names_and_dotted_suffixes() {
        let allow = vec!["github.com".to_string(), ".npmjs.org".to_string()];
        assert!(allowed(&allow, "github.com"));
        assert!(allowed(&allow, "GitHub.com."));
        assert!(!allowed(&allow, "api.github.com"));
        assert!(!allowed(&allow, "evilgithub.com"));
        assert!(allowed(&allow, "registry.npmjs.org"));
        assert!(allowed(&allow, "npmjs.org"));
        assert!(!allowed(&allow, "npmjs.org.evil.test"));
    }
}
