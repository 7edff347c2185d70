//! A scripted Anthropic Messages API on loopback, to drive the real `claude` CLI offline.
//! Test support only.
//!
//! The mock speaks what `claude` 2.1.332 sends and expects (the request logs in
//! `crates/fake-claude/fixtures/2.1.332/*.requests.jsonl`, recorded with this mock; 2.1.197's
//! are in `crates/fake-claude/fixtures`): it answers the `HEAD /` preflight (2.1.197's),
//! `POST /v1/messages` (any query, e.g. `beta=true`) as SSE when the body says
//! `"stream": true` and as one JSON message otherwise, `POST /v1/messages/count_tokens`,
//! and `GET /v1/models`; anything else is an Anthropic-style 404. `GET /__mock/requests`
//! returns the request log as JSON and `POST /__mock/clear` empties it (handy with the
//! `mock-anthropic` binary).
//!
//! Each `POST /v1/messages` is answered, in order of precedence, by
//! 1. the auto-mode classifier answer (`<block>no</block>`) if the system prompt is the
//!    classifier's (2.1.197 asked it; 2.1.332 runs no classifier against a base URL that
//!    is not Anthropic's and refuses what would need it, fixtures `2.1.332/d16_*`, `d18_*`);
//! 2. the next [`Reply`] queued with [`MockAnthropic::push`];
//! 3. `MOCK_…` directives in the prompt (see [Directives](#directives)), which lets
//!    one mock serve many concurrent CLI processes;
//! 4. for a tool round trip, the text `done: <tool result>`;
//! 5. the text `mock answer`.
//!
//! ```no_run
//! use mock_anthropic::{MockAnthropic, Reply};
//!
//! # async fn example() {
//! let mock = MockAnthropic::start().await;
//! mock.push(Reply::tool_use("Bash", serde_json::json!({"command": "echo hi"})));
//! // Run `claude` with ANTHROPIC_BASE_URL=mock.base_url(); the tool result comes back as
//! // the final answer "done: hi".
//! assert_eq!(mock.messages_requests().len(), 0);
//! # }
//! ```
//!
//! # Directives
//!
//! Lines of the prompt starting with `MOCK_`, read from the *prompt message* (the newest
//! user message without tool results). When several action directives are present
//! (the CLI merges consecutive user turns), the last one wins.
//!
//! | directive | answer |
//! |---|---|
//! | `MOCK_TEXT <text>` | text |
//! | `MOCK_TOOL <Name> <json>` | a text preamble and a `tool_use` (prompt turn only) |
//! | `MOCK_STRUCTURED <json>` | a `StructuredOutput` tool call (prompt turn only) |
//! | `MOCK_LOOP <n>` | a Bash `tool_use` until `n` tool results came back |
//! | `MOCK_ERROR <status> [retry_after]` | HTTP error, every time |
//! | `MOCK_ERROR_ONCE [status]` | HTTP error (default 529) the first time this prompt is seen |
//! | `MOCK_ERROR_FOR_MODEL <substr> <status>` | HTTP error when the model name contains `substr` |
//! | `MOCK_STALL` (alias `MOCK_HANG_MIDSTREAM`) | stream stalls after 2 deltas; non-streaming: [`STALL_FALLBACK_TEXT`] |
//! | `MOCK_HANG` | never answer |
//! | `MOCK_SLOW <n> <ms>` | `n` text deltas `ms` apart |
//! | `MOCK_MAX_TOKENS [text]` | text with `stop_reason: max_tokens` |
//! | `MOCK_USAGE <in> <out>` | modifier: usage of the answer |
//! | `MOCK_CLASSIFIER_BLOCK` | the auto-mode classifier answers "block" |
//!
//! On a tool-result turn, only `MOCK_LOOP` and `MOCK_USAGE` still apply; otherwise the
//! answer is the final text `done: <tool result>`. Without directives: `mock answer`.
//!
//! `MOCK_ERROR_ONCE` is keyed by the prompt text across all clients of the mock: give
//! concurrent CLI processes distinct prompts if each should fail once.

mod conversation;
mod directive;
mod record;
mod render;
mod reply;
mod server;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use directive::{DEFAULT_TEXT, STALL_FALLBACK_TEXT};
pub use record::{RecordedRequest, fingerprint};
pub use reply::{
    ApiError, Block, DEFAULT_INPUT_TOKENS, Message, Reply, STALL_DELTAS, StopReason, Usage,
};

use server::Shared;

/// How long [`MockAnthropic::shutdown`] waits for open connections to close before it
/// stops the server task anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where and how to serve; see [`MockAnthropic::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Default `127.0.0.1:0` (a free loopback port).
    pub addr: SocketAddr,
    /// Keep only the newest this many requests in the log (long benchmark runs); `None`
    /// keeps all.
    pub max_logged_requests: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_logged_requests: None,
        }
    }
}

/// A running mock. Dropping it stops the server: hanging requests and stalled streams are
/// cut, idle connections closed, and the server task ends on its own.
#[derive(Debug)]
pub struct MockAnthropic {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl MockAnthropic {
    /// Serves on a free port of 127.0.0.1 until dropped.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound (a broken test environment).
    pub async fn start() -> Self {
        Self::start_with(Options::default())
            .await
            .expect("mock-anthropic: cannot bind a loopback port")
    }

    /// Serves as `options` say until dropped. Must be called within a Tokio runtime.
    pub async fn start_with(options: Options) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(options.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options.max_logged_requests));
        let app = server::router(Arc::clone(&shared));
        let stop = shared.shutdown.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            // Graceful: stop accepting, close idle keep-alive connections, and let the
            // in-flight responses end, which they do promptly because every hanging or
            // delayed response also watches the shutdown token.
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(%error, "mock-anthropic server failed");
            }
        });
        tracing::debug!(%addr, "mock-anthropic listening");
        Ok(Self {
            addr,
            shared,
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a reply for the next `POST /v1/messages` (classifier requests excepted).
    /// Replies are consumed in order, one per request.
    pub fn push(&self, reply: impl Into<Reply>) {
        self.shared.push(reply.into());
    }

    /// Replies still queued.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// Every request received (except `/__mock/…` control requests), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Only the `POST /v1/messages` requests.
    pub fn messages_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_messages)
            .collect()
    }

    /// Forgets the log, the queue and which prompts `MOCK_ERROR_ONCE` has failed.
    pub fn clear(&self) {
        self.shared.clear();
    }

    /// Waits until `count` `POST /v1/messages` have arrived since start or the last
    /// [`clear`](Self::clear). A request is counted (and logged) before it is answered, so
    /// this is the way to know a hanging or stalled request has reached the mock. Wrap it
    /// in a timeout.
    pub async fn wait_for_messages_requests(&self, count: usize) {
        self.shared.wait_for_messages(count).await;
    }

    /// Stops the server and waits for its task to end (at most a few seconds), for tests
    /// that want the port released before they go on. Dropping does the same without
    /// waiting.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
