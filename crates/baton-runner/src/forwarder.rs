//! The forwarder, run as `baton sandbox-init`: the first program in an attempt's sandbox. It serves Baton's proxy
//! (a Unix socket bound into the sandbox) on a loopback port inside, where the CLI's
//! `ANTHROPIC_BASE_URL` points, and the egress proxy likewise when there is one; runs the
//! CLI; and exits as the CLI did. The sandbox has no other network.
//!
//! Usage (Baton's runner writes it): `baton sandbox-init --api-socket S --api-port P
//! [--egress-socket S2 --egress-port P2] -- PROGRAM ARGS…`

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::sandbox::{HELPER_PREFIX, SETUP_FAILED};

fn fail(message: String) -> i32 {
    eprintln!("{HELPER_PREFIX} {message}");
    SETUP_FAILED
}

extern "C" fn ignore(_: libc::c_int) {}

/// Runs the forwarder with the arguments after `sandbox-init`; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut routes: Vec<(PathBuf, u16)> = Vec::new();
    let mut socket = None;
    let mut it = args.into_iter();
    let program = loop {
        let Some(a) = it.next() else {
            return fail("no program to run (expected -- PROGRAM ARGS…)".into());
        };
        match a.to_str() {
            Some("--") => match it.next() {
                Some(p) => break p,
                None => return fail("no program after --".into()),
            },
            Some("--api-socket" | "--egress-socket") => socket = it.next().map(PathBuf::from),
            Some("--api-port" | "--egress-port") => {
                let port = it.next().and_then(|p| p.to_str()?.parse().ok());
                match (socket.take(), port) {
                    (Some(s), Some(p)) => routes.push((s, p)),
                    _ => return fail("each --*-port needs its socket first".into()),
                }
            }
            _ => return fail(format!("unknown argument {a:?}")),
        }
    };
    for (socket, port) in routes {
        let listener = match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on 127.0.0.1:{port}: {e}")),
        };
        std::thread::spawn(move || serve(listener, socket));
    }
    // A stop is the CLI's to handle: the forwarder outlives it, to exit as it did. (A
    // handler, unlike an ignored signal, does not pass on to the CLI.)
    // SAFETY: installing a handler that does nothing.
    unsafe {
        libc::signal(libc::SIGTERM, ignore as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, ignore as *const () as libc::sighandler_t);
    }
    let status = match std::process::Command::new(&program).args(it).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{HELPER_PREFIX} could not start {}: {e}",
                program.to_string_lossy()
            );
            return 127;
        }
    };
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}

fn serve(listener: TcpListener, socket: PathBuf) {
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let socket = socket.clone();
        std::thread::spawn(move || {
            let Ok(unix) = UnixStream::connect(&socket) else {
                let _ = tcp.shutdown(Shutdown::Both);
                return;
            };
            let _ = tcp.set_nodelay(true);
            pipe(tcp, unix);
        });
    }
}

/// Copies both ways until each side has ended.
fn pipe(tcp: TcpStream, unix: UnixStream) {
    let (Ok(mut tcp_r), Ok(mut unix_w)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        copy(&mut tcp_r, &mut unix_w);
        let _ = unix_w.shutdown(Shutdown::Write);
    });
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    copy(&mut unix_r, &mut tcp_w);
    let _ = tcp_w.shutdown(Shutdown::Write);
    let _ = up.join();
}

fn copy(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// `baton mcp-bridge SOCKET`: run inside a sandbox as a catalogue MCP server that runs
/// outside it. Joins its stdin and stdout to `SOCKET`, where Baton starts the server.
pub fn mcp_bridge(args: Vec<OsString>) -> i32 {
    let [socket] = args.as_slice() else {
        return fail("usage: baton mcp-bridge SOCKET".into());
    };
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            return fail(format!(
                "cannot reach {}: {e}",
                PathBuf::from(socket).display()
            ));
        }
    };
    let Ok(mut up) = stream.try_clone() else {
        return fail("cannot share the socket".into());
    };
    // Requests in (until the CLI closes stdin), answers out (until the server is done).
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match down.read(&mut buf) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return 0;
                }
            }
        }
    }
}
