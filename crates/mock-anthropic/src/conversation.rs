//! Reading a `POST /v1/messages` body the way the CLI writes it.
//!
//! Shapes seen in the recorded requests (README §4.1, §16):
//! * `messages[]` may hold `role:"system"` entries; only `user` messages matter here;
//! * `content` is a string or a list of blocks; the first user message is
//!   `[<system-reminder> text, <prompt> text]`;
//! * consecutive user turns are merged into one message (several prompt blocks);
//! * the user message after a tool call holds `tool_result` blocks whose `content` is a
//!   string or a list of text blocks;
//! * `system` is a string or a list of text blocks.

use serde_json::Value;

/// The system prompt of the auto-mode permission classifier starts like this.
const CLASSIFIER_SYSTEM_PREFIX: &str = "You are a security monitor";

/// The parts of a request body the mock decides on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conversation<'a> {
    body: &'a Value,
}

impl<'a> Conversation<'a> {
    pub(crate) fn new(body: &'a Value) -> Self {
        Self { body }
    }

    pub(crate) fn model(&self) -> Option<&'a str> {
        self.body.get("model").and_then(Value::as_str)
    }

    pub(crate) fn is_streaming(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    pub(crate) fn stop_sequences(&self) -> Vec<&'a str> {
        self.body
            .get("stop_sequences")
            .and_then(Value::as_array)
            .map(|seqs| seqs.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether this is one of the auto-mode classifier's side requests (README §4.1).
    pub(crate) fn is_classifier(&self) -> bool {
        let starts = |text: &str| text.trim_start().starts_with(CLASSIFIER_SYSTEM_PREFIX);
        match self.body.get("system") {
            Some(Value::String(text)) => starts(text),
            Some(Value::Array(blocks)) => blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .any(starts),
            _ => false,
        }
    }

    fn user_messages(&self) -> impl DoubleEndedIterator<Item = &'a Value> {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map(|messages| messages.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    }

    /// The user message that started the current turn: the newest user message without
    /// `tool_result` blocks. Directives are read from it.
    pub(crate) fn prompt_message(&self) -> Option<&'a Value> {
        self.user_messages().rev().find(|m| !has_tool_result(m))
    }

    /// How many tool round trips happened since the prompt message: the number of user
    /// messages holding `tool_result` blocks after it. Zero means the newest user message
    /// is the prompt itself.
    pub(crate) fn tool_turns(&self) -> usize {
        self.user_messages()
            .rev()
            .take_while(|m| has_tool_result(m))
            .count()
    }

    /// The text blocks of the prompt message, in order.
    pub(crate) fn prompt_texts(&self) -> Vec<&'a str> {
        self.prompt_message().map(text_blocks).unwrap_or_default()
    }

    /// The prompt as the user typed it: the last text block of the prompt message (the
    /// first one is the CLI's `<system-reminder>`).
    pub(crate) fn prompt(&self) -> Option<&'a str> {
        self.prompt_texts().last().copied()
    }

    /// The text of every `tool_result` block in the newest user message, joined by
    /// newlines; `None` if it holds no tool result.
    pub(crate) fn latest_tool_result(&self) -> Option<String> {
        let newest = self.user_messages().next_back()?;
        let results: Vec<String> = blocks(newest)
            .iter()
            .filter(|b| block_type(b) == Some("tool_result"))
            .map(|b| match b.get("content") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            })
            .collect();
        (!results.is_empty()).then(|| results.join("\n"))
    }

    /// All text in user messages, tool results included (the classifier's transcript is
    /// plain text blocks).
    pub(crate) fn all_user_text(&self) -> String {
        self.user_messages()
            .flat_map(text_blocks)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A rough token estimate for `count_tokens`: four bytes per token, like the usual
    /// rule of thumb.
    pub(crate) fn estimated_input_tokens(&self) -> u64 {
        let size = ["system", "messages", "tools"]
            .iter()
            .filter_map(|key| self.body.get(key))
            .map(|v| v.to_string().len())
            .sum::<usize>();
        u64::try_from(size.div_ceil(4)).unwrap_or(u64::MAX).max(1)
    }
}

fn blocks(message: &Value) -> &[Value] {
    message
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

fn has_tool_result(message: &Value) -> bool {
    blocks(message)
        .iter()
        .any(|b| block_type(b) == Some("tool_result"))
}

fn text_blocks(message: &Value) -> Vec<&str> {
    match message.get("content") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| block_type(b) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reminder() -> Value {
        json!({"type": "text", "text": "<system-reminder>\nctx\n</system-reminder>\n\n"})
    }

    #[test]
    fn prompt_is_the_last_text_block_and_system_messages_are_skipped() {
        let body = json!({"messages": [
            {"role": "user", "content": [reminder(), {"type": "text", "text": "say hi"}]},
            {"role": "system", "content": "Available agent types"},
        ]});
        let conv = Conversation::new(&body);
        assert_eq!(conv.prompt(), Some("say hi"));
        assert_eq!(conv.tool_turns(), 0);
        assert_eq!(conv.latest_tool_result(), None);
    }

    #[test]
    fn tool_results_are_counted_and_read() {
        let body = json!({"messages": [
            {"role": "user", "content": [reminder(), {"type": "text", "text": "MOCK_LOOP 3"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "one"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2",
                "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "lines"}]}]},
        ]});
        let conv = Conversation::new(&body);
        assert_eq!(conv.prompt(), Some("MOCK_LOOP 3"));
        assert_eq!(conv.tool_turns(), 2);
        assert_eq!(conv.latest_tool_result().as_deref(), Some("two\nlines"));
    }

    #[test]
    fn string_content_and_classifier_system() {
        let body = json!({
            "system": [{"type": "text", "text": "x-anthropic-billing-header: …"},
                       {"type": "text", "text": "You are a security monitor for autonomous AI coding agents."}],
            "messages": [{"role": "user", "content": "plain"}],
        });
        let conv = Conversation::new(&body);
        assert!(conv.is_classifier());
        assert_eq!(conv.prompt(), Some("plain"));
        assert!(!Conversation::new(&json!({"system": "You are Claude"})).is_classifier());
    }
}
