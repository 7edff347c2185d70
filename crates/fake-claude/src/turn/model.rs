//! A simulated model request: the assistant events of its content blocks (with the
//! `stream_event`s of `--include-partial-messages` around them), the token count and the
//! limits checked around it.

use std::time::Instant;

use super::{Runner, Stop, Turn, millis};
use crate::events::{self, AssistantBlock, Usage};
use crate::json::Json;
use crate::obj;
use crate::session::new_uuid;

/// A content block of an assistant message.
pub(super) enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: &'static str,
        input: Json,
    },
}

impl Block {
    pub(super) fn text(text: impl Into<String>) -> Block {
        Block::Text(text.into())
    }

    fn to_json(&self) -> Json {
        match self {
            Block::Text(text) => obj! { "type" => "text", "text" => text },
            Block::ToolUse { id, name, input } => obj! {
                "type" => "tool_use",
                "id" => id,
                "name" => *name,
                "input" => input.clone(),
            },
        }
    }

    fn chars(&self) -> u64 {
        match self {
            Block::Text(text) => text.chars().count() as u64,
            Block::ToolUse { input, .. } => input.to_compact().chars().count() as u64,
        }
    }
}

impl Runner {
    /// One simulated model request answered with `blocks`, `gap_ms` apart.
    pub(super) fn call(
        &mut self,
        turn: &mut Turn,
        blocks: Vec<Block>,
        stop_reason: &'static str,
        gap_ms: u64,
    ) -> Result<(), Stop> {
        if let Some(max) = self.config.max_turns
            && turn.num_turns > max
        {
            return Err(Stop::MaxTurns);
        }
        let started = Instant::now();
        turn.time_to_request_ms.get_or_insert(turn.elapsed_ms());
        let message_id = format!("msg_01{}", random_id(22));
        let request_id = format!("req_011{}", random_id(21));
        let usage = Usage {
            input_tokens: 100 + turn.prompt_chars / 4,
            output_tokens: 1 + blocks.iter().map(Block::chars).sum::<u64>() / 4,
        };
        let model = self.config.model.clone();
        let partial = self.config.partial_messages;
        if partial {
            turn.begun_message_ids.push(message_id.clone());
            self.out.event(events::status_requesting(&self.session_id));
            let start = obj! {
                "type" => "message_start",
                "message" => obj! {
                    "id" => message_id.clone(),
                    "type" => "message",
                    "role" => "assistant",
                    "model" => model.clone(),
                    "content" => Json::Arr(Vec::new()),
                    "stop_reason" => Json::Null,
                    "stop_sequence" => Json::Null,
                    "usage" => events::block_usage(usage.input_tokens),
                },
            };
            let extra = vec![
                ("ttft_ms", Json::from(millis(started.elapsed()) + 1)),
                ("thinking_display", Json::from("updates")),
            ];
            self.stream(start, &message_id, extra);
        }

        let count = blocks.len();
        for (index, block) in blocks.iter().enumerate() {
            if index > 0 && gap_ms > 0 {
                self.pause(gap_ms)?;
            }
            if partial {
                self.stream_block_deltas(index, block, &message_id);
            }
            let uuid = new_uuid();
            let assistant = AssistantBlock {
                message_id: &message_id,
                request_id: &request_id,
                model: &model,
                session_id: &self.session_id,
                uuid: &uuid,
                block: block.to_json(),
                input_tokens: usage.input_tokens,
            };
            self.out.event(assistant.event());
            turn.ttft_ms.get_or_insert(turn.elapsed_ms());
            let last = index + 1 == count;
            let stored = assistant.stored_message(last.then_some(stop_reason), usage);
            self.transcript.assistant(&uuid, stored, Some(&request_id));
            if partial {
                let stop = obj! { "type" => "content_block_stop", "index" => index };
                self.stream(stop, &message_id, Vec::new());
            }
        }
        if partial {
            let delta = obj! {
                "type" => "message_delta",
                "delta" => obj! { "stop_reason" => stop_reason, "stop_sequence" => Json::Null },
                "usage" => obj! { "output_tokens" => usage.output_tokens },
            };
            self.stream(delta, &message_id, Vec::new());
            self.stream(obj! { "type" => "message_stop" }, &message_id, Vec::new());
        }

        self.record_spend(turn, usage);
        turn.api_ms += millis(started.elapsed());
        turn.stop_reason = stop_reason;
        if let Some(budget) = self.config.max_budget_usd
            && self.total_cost() > budget
        {
            return Err(Stop::Budget);
        }
        Ok(())
    }

    fn stream(&mut self, event: Json, message_id: &str, extra: Vec<(&str, Json)>) {
        let event = events::stream_event(event, &self.session_id, message_id, extra);
        self.out.event(event);
    }

    /// `--include-partial-messages`: `content_block_start` and the deltas of one block.
    fn stream_block_deltas(&mut self, index: usize, block: &Block, message_id: &str) {
        let (start, deltas) = match block {
            Block::Text(text) => {
                let deltas = chunks(text)
                    .map(|piece| obj! { "type" => "text_delta", "text" => piece })
                    .collect::<Vec<_>>();
                (obj! { "type" => "text", "text" => "" }, deltas)
            }
            Block::ToolUse { id, name, input } => {
                let deltas = chunks(&input.to_compact())
                    .map(|piece| obj! { "type" => "input_json_delta", "partial_json" => piece })
                    .collect::<Vec<_>>();
                let start = obj! {
                    "type" => "tool_use",
                    "id" => id,
                    "name" => *name,
                    "input" => Json::Obj(Vec::new()),
                };
                (start, deltas)
            }
        };
        let start =
            obj! { "type" => "content_block_start", "index" => index, "content_block" => start };
        self.stream(start, message_id, Vec::new());
        for delta in deltas {
            let delta =
                obj! { "type" => "content_block_delta", "index" => index, "delta" => delta };
            self.stream(delta, message_id, Vec::new());
        }
    }
}

/// Splits text into stream deltas: 12 characters like the recorded streams, but never more
/// than about 64 deltas, so that `big_line` with partial messages stays reasonable.
fn chunks(text: &str) -> impl Iterator<Item = String> {
    let chars: Vec<char> = text.chars().collect();
    let size = (chars.len() / 64).max(12);
    let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    pieces.into_iter()
}

pub(super) fn random_id(len: usize) -> String {
    let mut id = String::with_capacity(len + 32);
    while id.len() < len {
        id.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    id.truncate(len);
    id
}

pub(super) fn tool_use_id() -> String {
    format!("toolu_01{}", random_id(22))
}
