//! The one API call the fake makes for real (`FAKE api_calls`): a plain HTTP/1.1 POST to
//! `$ANTHROPIC_BASE_URL/v1/messages` with `$ANTHROPIC_API_KEY`, as the real CLI would, so
//! tests can watch what reaches the API (through Baton's proxy) and what is refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Posts one message asking `mock-anthropic` for `input`/`output` tokens of usage; the
/// answer's status and body.
pub fn post_message(input: u64, output: u64) -> Result<(u16, String), String> {
    let base = std::env::var("ANTHROPIC_BASE_URL")
        .map_err(|_| "ANTHROPIC_BASE_URL is not set".to_string())?;
    let key = std::env::var("ANTHROPIC_API_KEY").unwrap_or_default();
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// base URLs are supported, not {base}"))?
        .trim_end_matches('/');
    let body = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"MOCK_USAGE {input} {output}"}}]}}"#
    );
    let mut stream = TcpStream::connect(authority).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {authority}\r\nx-api-key: {key}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
