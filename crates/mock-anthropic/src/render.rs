//! Rendering a scripted [`Message`] as the Messages API does: one JSON object, or the SSE
//! event sequence `message_start`, `ping`, per block `content_block_start` /
//! `content_block_delta`… / `content_block_stop`, then `message_delta` and `message_stop`.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::reply::{Block, Message, StopReason, TEXT_DELTA_CHARS, split_chars};

/// Tool input JSON is streamed in `input_json_delta` pieces of this many characters, like
/// the fixtures' mock (`{"command": "echo hi`).
const JSON_DELTA_CHARS: usize = 20;

/// A new id such as `msg_mock0123…`: the API's prefix, plus `mock` so that ids in a CLI
/// transcript are recognisably scripted.
pub(crate) fn new_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_mock{}", &hex[..24])
}

/// A block with its per-response id and final text.
#[derive(Debug, Clone)]
enum Rendered {
    Text(Vec<String>),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
}

impl Rendered {
    fn to_wire(&self) -> WireBlock {
        match self {
            Self::Text(deltas) => WireBlock::Text {
                text: deltas.concat(),
            },
            Self::ToolUse { id, name, input } => WireBlock::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: input.clone(),
            },
            Self::Thinking {
                thinking,
                signature,
            } => WireBlock::Thinking {
                thinking: thinking.clone(),
                signature: signature.clone(),
            },
        }
    }

    /// The `content_block_start` payload: the block with its content still empty.
    fn start_wire(&self) -> WireBlock {
        match self {
            Self::Text(_) => WireBlock::Text {
                text: String::new(),
            },
            Self::ToolUse { id, name, .. } => WireBlock::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: Value::Object(serde_json::Map::new()),
            },
            Self::Thinking { .. } => WireBlock::Thinking {
                thinking: String::new(),
                signature: String::new(),
            },
        }
    }

    fn deltas(&self) -> Vec<WireDelta> {
        match self {
            Self::Text(deltas) => deltas
                .iter()
                .map(|text| WireDelta::Text { text: text.clone() })
                .collect(),
            Self::ToolUse { input, .. } => split_chars(&input.to_string(), JSON_DELTA_CHARS)
                .into_iter()
                .map(|partial_json| WireDelta::InputJson { partial_json })
                .collect(),
            Self::Thinking {
                thinking,
                signature,
            } => split_chars(thinking, JSON_DELTA_CHARS)
                .into_iter()
                .map(|thinking| WireDelta::Thinking { thinking })
                .chain([WireDelta::Signature {
                    signature: signature.clone(),
                }])
                .collect(),
        }
    }

    fn size(&self) -> usize {
        match self {
            Self::Text(deltas) => deltas.iter().map(String::len).sum(),
            Self::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
            Self::Thinking { thinking, .. } => thinking.len(),
        }
    }
}

// The wire types below are structs rather than `json!` values because serde keeps a
// struct's field order, while `serde_json::Value` sorts keys. The CLI copies these
// objects verbatim into its stream-json output (assistant events, `stream_event`s), so
// the API's key order (`type` first, `id`, `role`, `model`, …) keeps that output looking
// like a real run.

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<WireBlock>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'a str>,
    usage: WireUsage,
}

#[derive(Debug, Serialize)]
struct WireUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    /// Present in complete messages, absent from `message_start` (as in the fixtures).
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
}

/// A `content_block_delta` payload; the wire names all end in `_delta`.
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
enum WireDelta {
    #[serde(rename = "text_delta")]
    Text { text: String },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: String },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: String },
    #[serde(rename = "signature_delta")]
    Signature { signature: String },
}

#[derive(Debug, Serialize)]
struct WireStop<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct WireOutputUsage {
    output_tokens: u64,
}

/// One SSE event; its `type` is also the SSE event name.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent<'a> {
    MessageStart {
        message: WireMessage<'a>,
    },
    Ping,
    ContentBlockStart {
        index: usize,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: WireDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: WireStop<'a>,
        usage: WireOutputUsage,
    },
    MessageStop,
}

impl WireEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::Ping => "ping",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }

    fn frame(&self, delay: Duration) -> Frame {
        let data = serde_json::to_string(self).expect("wire types always serialise");
        Frame {
            delay,
            text: format!("event: {}\ndata: {data}\n\n", self.name()),
        }
    }
}

/// One SSE event, ready to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frame {
    /// Pause before sending this event.
    pub(crate) delay: Duration,
    pub(crate) text: String,
}

/// A message for one particular request: ids assigned, model echoed, the request's stop
/// sequences applied.
#[derive(Debug, Clone)]
pub(crate) struct RenderedMessage {
    id: String,
    model: String,
    content: Vec<Rendered>,
    stop_reason: StopReason,
    input_tokens: u64,
    output_tokens: u64,
    delta_delay: Duration,
    stall: bool,
}

impl RenderedMessage {
    pub(crate) fn new(message: &Message, model: &str, stop_sequences: &[&str]) -> Self {
        let mut content = Vec::new();
        let mut stop_reason = message.stop_reason.clone();
        for block in &message.content {
            match block {
                Block::Text { deltas } => {
                    let text = deltas.concat();
                    // Like the API: generation ends at the first stop sequence, which is
                    // not included in the text; nothing after it is produced.
                    let hit = stop_sequences
                        .iter()
                        .filter_map(|seq| text.find(seq).map(|at| (at, *seq)))
                        .min_by_key(|(at, _)| *at);
                    if let Some((at, seq)) = hit {
                        content.push(Rendered::Text(split_chars(&text[..at], TEXT_DELTA_CHARS)));
                        stop_reason = StopReason::StopSequence(seq.to_owned());
                        break;
                    }
                    content.push(Rendered::Text(deltas.clone()));
                }
                Block::ToolUse { name, input } => content.push(Rendered::ToolUse {
                    id: new_id("toolu"),
                    name: name.clone(),
                    input: input.clone(),
                }),
                Block::Thinking {
                    thinking,
                    signature,
                } => content.push(Rendered::Thinking {
                    thinking: thinking.clone(),
                    signature: signature.clone(),
                }),
            }
        }
        let derived = content
            .iter()
            .map(Rendered::size)
            .sum::<usize>()
            .div_ceil(4);
        let output_tokens = message
            .usage
            .output_tokens
            .unwrap_or_else(|| u64::try_from(derived).unwrap_or(u64::MAX).max(1));
        Self {
            id: new_id("msg"),
            model: model.to_owned(),
            content,
            stop_reason,
            input_tokens: message.usage.input_tokens,
            output_tokens,
            delta_delay: message.delta_delay,
            stall: message.stall,
        }
    }

    fn stop_sequence(&self) -> Option<&str> {
        match &self.stop_reason {
            StopReason::StopSequence(seq) => Some(seq),
            _ => None,
        }
    }

    /// How long a non-streaming answer waits: the same as the stream would take.
    pub(crate) fn total_delay(&self) -> Duration {
        let deltas: usize = self.content.iter().map(|b| b.deltas().len()).sum();
        self.delta_delay
            .saturating_mul(u32::try_from(deltas.saturating_sub(1)).unwrap_or(u32::MAX))
    }

    pub(crate) fn stalls(&self) -> bool {
        self.stall
    }

    /// The non-streaming response body.
    pub(crate) fn to_json(&self) -> String {
        let message = WireMessage {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: self.content.iter().map(Rendered::to_wire).collect(),
            stop_reason: Some(self.stop_reason.as_str()),
            stop_sequence: self.stop_sequence(),
            usage: WireUsage {
                input_tokens: self.input_tokens,
                output_tokens: self.output_tokens,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                service_tier: Some("standard"),
            },
        };
        serde_json::to_string(&message).expect("wire types always serialise")
    }

    /// The SSE events, in order. A stalling message ends right after its last delta.
    pub(crate) fn to_frames(&self) -> Vec<Frame> {
        let start = WireMessage {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: WireUsage {
                input_tokens: self.input_tokens,
                output_tokens: 1,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                service_tier: None,
            },
        };
        let mut frames = vec![
            WireEvent::MessageStart { message: start }.frame(Duration::ZERO),
            WireEvent::Ping.frame(Duration::ZERO),
        ];
        let mut first_delta = true;
        for (index, block) in self.content.iter().enumerate() {
            frames.push(
                WireEvent::ContentBlockStart {
                    index,
                    content_block: block.start_wire(),
                }
                .frame(Duration::ZERO),
            );
            for delta in block.deltas() {
                let delay = if first_delta {
                    Duration::ZERO
                } else {
                    self.delta_delay
                };
                first_delta = false;
                frames.push(WireEvent::ContentBlockDelta { index, delta }.frame(delay));
            }
            if self.stall && index + 1 == self.content.len() {
                return frames;
            }
            frames.push(WireEvent::ContentBlockStop { index }.frame(Duration::ZERO));
        }
        if self.stall {
            return frames;
        }
        frames.push(
            WireEvent::MessageDelta {
                delta: WireStop {
                    stop_reason: self.stop_reason.as_str(),
                    stop_sequence: self.stop_sequence(),
                },
                usage: WireOutputUsage {
                    output_tokens: self.output_tokens,
                },
            }
            .frame(Duration::ZERO),
        );
        frames.push(WireEvent::MessageStop.frame(Duration::ZERO));
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Reply;

    fn rendered(reply: Reply, stop_sequences: &[&str]) -> RenderedMessage {
        let Reply::Message(message) = reply else {
            panic!("not a message")
        };
        RenderedMessage::new(&message, "claude-test", stop_sequences)
    }

    #[test]
    fn stop_sequence_cuts_text() {
        let msg = rendered(Reply::text("<block>no</block> trailing"), &["</block>"]);
        let json: Value = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(json["content"][0]["text"], "<block>no");
        assert_eq!(json["stop_reason"], "stop_sequence");
        assert_eq!(json["stop_sequence"], "</block>");
    }

    #[test]
    fn stalled_stream_ends_after_last_delta() {
        let msg = rendered(Reply::stall(["a", "b"]), &[]);
        let events: Vec<String> = msg
            .to_frames()
            .iter()
            .map(|f| f.text.lines().next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            events,
            [
                "event: message_start",
                "event: ping",
                "event: content_block_start",
                "event: content_block_delta",
                "event: content_block_delta",
            ]
        );
    }

    #[test]
    fn keys_keep_the_apis_order() {
        let msg = rendered(Reply::tool_use("Bash", serde_json::json!({})), &[]);
        assert!(msg.to_json().starts_with(r#"{"id":"msg_mock"#));
        let frames = msg.to_frames();
        assert!(frames[0].text.starts_with(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"
        ));
        assert!(
            frames[2]
                .text
                .contains(r#"{"type":"tool_use","id":"toolu_mock"#)
        );
        assert!(
            frames
                .last()
                .unwrap()
                .text
                .ends_with("data: {\"type\":\"message_stop\"}\n\n")
        );
    }

    #[test]
    fn ids_look_like_the_apis() {
        let id = new_id("toolu");
        assert!(id.starts_with("toolu_mock"));
        assert_eq!(id.len(), "toolu_mock".len() + 24);
    }
}
