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
    /// The server's own router (`/mcp` on the server).
    Local(axum::Router),
    /// A server at `base`, through a client that sends its key (`baton mcp`).
    Remote { http: reqwest::Client, base: String },
}

/// The credentials a request carries: the MCP client's own (`Authorization` or
/// `x-api-key`), forwarded as they came.
#[derive(Clone, Default)]
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
            Self::Local(router) => {
                let mut req = Request::builder().method(method).uri(path);
                for (name, value) in &creds.0 {
                    req = req.header(name, value);
                }
                if body.is_some() {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                }
                let req = req
                    .header(header::ACCEPT, accept)
                    .body(Body::from(bytes))
                    .map_err(|e| e.to_string())?;
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

/// Server-sent events, parsed: each event's `event:` and its `data:` as JSON.
fn sse(chunks: Chunks) -> impl Stream<Item = (String, Value)> + Send {
    futures_util::stream::unfold(
        (chunks, String::new(), false),
        |(mut chunks, mut buf, ended)| async move {
            loop {
                if let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
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
                    return Some(((kind, value), (chunks, buf, ended)));
                }
                if ended {
                    return None;
                }
                match chunks.next().await {
                    Some(Ok(c)) => buf.push_str(&String::from_utf8_lossy(&c).replace("\r\n", "\n")),
                    _ => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_sent_events_are_parsed_across_chunks() {
        let parts = [
            "event: system\ndata: {\"a\"",
            ":1}\n\n: keep-alive\n\nid: 2\nevent: job.completed\r\ndata: {}\r\n\r\n",
        ];
        let chunks: Chunks = Box::pin(futures_util::stream::iter(
            parts.map(|p| Ok(Bytes::from(p.to_string()))),
        ));
        let got: Vec<_> = sse(chunks).collect().await;
        assert_eq!(
            got,
            vec![
                ("system".to_string(), serde_json::json!({"a": 1})),
                ("job.completed".to_string(), serde_json::json!({})),
            ]
        );
    }
}
