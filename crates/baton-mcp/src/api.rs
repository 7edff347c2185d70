//! How the MCP server reaches Baton: through its HTTP API, so every tool call is admitted,
//! scoped, audited and isolated exactly as the same request from any client would be.
//! Inside the server the API is called in process (its router, no socket); `baton mcp`
//! calls a server over the network.

use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, header};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tower::ServiceExt;

/// Where API requests go.
#[derive(Clone)]
pub enum Transport {
    /// The server's own router (`/mcp` on the server), and what marks a request as made
    /// inside Baton (so it is not held to the rate limits again).
    Local {
        router: axum::Router,
        mark: fn(&mut Request<Body>),
    },
    /// A server at `base`, through a client that sends its key (`baton mcp`).
    Remote { http: reqwest::Client, base: String },
}

/// The credentials a request carries: the MCP client's own (`Authorization` or
/// `x-api-key`), forwarded as they came.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials(pub Vec<(header::HeaderName, HeaderValue)>);

impl Credentials {
    /// The credential headers of an MCP HTTP request.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut out = Vec::new();
        for name in [
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-api-key"),
        ] {
            if let Some(v) = headers.get(&name) {
                out.push((name, v.clone()));
            }
        }
        Self(out)
    }
}

/// An API answer: its status and its JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The envelope's message, for a refusal.
    pub fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .map_or_else(|| format!("Baton answered {}", self.status), str::to_string)
    }
}

type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

impl Transport {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        creds: &Credentials,
        accept: &str,
    ) -> Result<(u16, Chunks), String> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        match self {
            Self::Local { router, mark } => {
                let mut req = Request::builder().method(method).uri(path);
                for (name, value) in &creds.0 {
                    req = req.header(name, value);
                }
                if body.is_some() {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                }
                let mut req = req
                    .header(header::ACCEPT, accept)
                    .body(Body::from(bytes))
                    .map_err(|e| e.to_string())?;
                mark(&mut req);
                let resp = router
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let chunks = resp
                    .into_body()
                    .into_data_stream()
                    .map(|c| c.map_err(|e| e.to_string()));
                Ok((status, Box::pin(chunks)))
            }
            Self::Remote { http, base } => {
                let mut req = http
                    .request(method, format!("{base}{path}"))
                    .header(header::ACCEPT, accept);
                if body.is_some() {
                    req = req
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(bytes);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| format!("could not reach Baton: {e}"))?;
                let status = resp.status().as_u16();
                let chunks = resp.bytes_stream().map(|c| c.map_err(|e| e.to_string()));
                Ok((status, Box::pin(chunks)))
            }
        }
    }

    /// One request and its JSON answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        creds: &Credentials,
    ) -> Result<Reply, String> {
        let (status, mut chunks) = self
            .send(method, path, body, creds, "application/json")
            .await?;
        let mut all = Vec::new();
        while let Some(c) = chunks.next().await {
            all.extend_from_slice(&c?);
        }
        let body = serde_json::from_slice(&all).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// A job's events as they are written, each `(kind, data)`, until its last.
    pub async fn events(
        &self,
        job: &str,
        creds: &Credentials,
    ) -> Result<impl Stream<Item = (String, Value)> + Send + use<>, String> {
        let path = format!("/v1/jobs/{job}/events");
        let (status, chunks) = self
            .send(Method::GET, &path, None, creds, "text/event-stream")
            .await?;
        if !(200..300).contains(&status) {
            return Err(format!("Baton answered {status} for the job's events"));
        }
        Ok(sse(chunks))
    }
}

/// Server-sent events, parsed: each event's `event:` and its `data:` as JSON. Frames are
/// cut from the bytes before they are decoded, so a character split across two chunks
/// stays whole.
fn sse(chunks: Chunks) -> impl Stream<Item = (String, Value)> + Send {
    futures_util::stream::unfold(
        (chunks, Vec::<u8>::new()),
        |(mut chunks, mut buf)| async move {
            loop {
                if let Some(end) = frame_end(&buf) {
                    let frame: Vec<u8> = buf.drain(..end).collect();
                    let frame = String::from_utf8_lossy(&frame).replace("\r\n", "\n");
                    let mut kind = String::from("message");
                    let mut data = String::new();
                    for line in frame.lines() {
                        if let Some(k) = line.strip_prefix("event:") {
                            kind = k.trim().to_string();
                        } else if let Some(d) = line.strip_prefix("data:") {
                            data.push_str(d.trim_start());
                        }
                    }
                    if data.is_empty() {
                        continue;
                    }
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    return Some(((kind, value), (chunks, buf)));
                }
                match chunks.next().await {
                    Some(Ok(c)) => buf.extend_from_slice(&c),
                    _ => return None,
                }
            }
        },
    )
}

/// Where the first frame of `buf` ends (after its blank line), if it is all there.
fn frame_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_sent_events_are_parsed_across_chunks() {
        // "é" is split across the first two chunks.
        let parts: [&[u8]; 3] = [
            b"event: system\ndata: {\"a\":\"\xc3",
            b"\xa9\"}\n\n: keep-alive\n\nid: 2\nevent: job.completed\r\n",
            b"data: {}\r\n\r\n",
        ];
        let chunks: Chunks = Box::pin(futures_util::stream::iter(
            parts.map(|p| Ok(Bytes::copy_from_slice(p))),
        ));
        let got: Vec<_> = sse(chunks).collect().await;
        assert_eq!(
            got,
            vec![
                ("system".to_string(), serde_json::json!({"a": "é"})),
                ("job.completed".to_string(), serde_json::json!({})),
            ]
        );
    }
}
