//! Metering: the usage of one API call, read from its response as it passes (the
//! `message_start` and `message_delta` events of a stream, or the `usage` of a JSON
//! answer), and its price.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tokens of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Takes what a usage object says (a later report of a field replaces an earlier one:
    /// `message_delta` counts are cumulative).
    fn take(&mut self, usage: &Value) {
        let field = |name: &str, slot: &mut u64| {
            if let Some(n) = usage.get(name).and_then(Value::as_u64) {
                *slot = n;
            }
        };
        field("input_tokens", &mut self.input_tokens);
        field("output_tokens", &mut self.output_tokens);
        field(
            "cache_creation_input_tokens",
            &mut self.cache_creation_input_tokens,
        );
        field("cache_read_input_tokens", &mut self.cache_read_input_tokens);
    }
}

/// Reads a response's usage from its bytes as they pass, without holding them: server-sent
/// events line by line, or (for a JSON answer) the body, kept up to a bound.
#[derive(Debug, Default)]
pub struct Meter {
    sse: bool,
    line: Vec<u8>,
    body: Vec<u8>,
    pub usage: Usage,
}

/// The most of a JSON answer kept to read its usage.
const MAX_JSON_BODY: usize = 8 * 1024 * 1024;
/// The longest SSE line kept to parse.
const MAX_LINE: usize = 1024 * 1024;

impl Meter {
    pub fn new(content_type: &str) -> Self {
        Self {
            sse: content_type.starts_with("text/event-stream"),
            ..Self::default()
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.sse {
            if self.body.len() + chunk.len() <= MAX_JSON_BODY {
                self.body.extend_from_slice(chunk);
            }
            return;
        }
        for &b in chunk {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.sse_line(&line);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let Ok(v) = serde_json::from_slice::<Value>(data.trim_ascii()) else {
            return;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = &v["message"];
                if let Some(model) = m.get("model").and_then(Value::as_str) {
                    self.usage.model = Some(model.to_string());
                }
                self.usage.take(&m["usage"]);
            }
            Some("message_delta") => self.usage.take(&v["usage"]),
            _ => {}
        }
    }

    /// The usage, once the response has ended.
    pub fn finish(mut self) -> Usage {
        if !self.sse {
            if let Ok(v) = serde_json::from_slice::<Value>(&self.body) {
                if let Some(model) = v.get("model").and_then(Value::as_str) {
                    self.usage.model = Some(model.to_string());
                }
                self.usage.take(&v["usage"]);
            }
        } else if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.sse_line(&line);
        }
        self.usage
    }
}

/// Dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Writing the prompt cache (default: 1.25 × input).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Reading it (default: 0.1 × input).
    #[serde(default)]
    pub cache_read: Option<f64>,
}

impl Price {
    const fn new(input: f64, output: f64) -> Self {
        Self {
            input,
            output,
            cache_write: None,
            cache_read: None,
        }
    }

    /// What `usage` costs, in millionths of a dollar (rounded up: never free).
    pub fn micro_usd(&self, u: &Usage) -> i64 {
        let dollars_per_mtok_times_tokens = self.input * u.input_tokens as f64
            + self.output * u.output_tokens as f64
            + self.cache_write.unwrap_or(self.input * 1.25) * u.cache_creation_input_tokens as f64
            + self.cache_read.unwrap_or(self.input * 0.1) * u.cache_read_input_tokens as f64;
        // $/MTok × tokens = micro-dollars.
        dollars_per_mtok_times_tokens.ceil() as i64
    }
}

/// Prices by model: the longest name in the table that the model's name starts with (or,
/// failing that, contains) sets its price. A model the table does not know is priced at
/// the dearest known price, field by field: never as free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Prices(pub BTreeMap<String, Price>);

impl Default for Prices {
    fn default() -> Self {
        Self(
            [
                ("claude-opus-4-5", Price::new(5.0, 25.0)),
                ("claude-opus-4", Price::new(15.0, 75.0)),
                ("claude-sonnet-4", Price::new(3.0, 15.0)),
                ("claude-3-7-sonnet", Price::new(3.0, 15.0)),
                ("claude-haiku-4", Price::new(1.0, 5.0)),
                ("claude-3-5-haiku", Price::new(0.8, 4.0)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        )
    }
}

impl Prices {
    /// The price of `model`, and whether the table knew it.
    pub fn of(&self, model: Option<&str>) -> (Price, bool) {
        let model = model.unwrap_or_default();
        let best = |matches: &dyn Fn(&str) -> bool| {
            self.0
                .iter()
                .filter(|(name, _)| matches(name))
                .max_by_key(|(name, _)| name.len())
                .map(|(_, p)| *p)
        };
        if let Some(p) =
            best(&|name| model.starts_with(name)).or_else(|| best(&|name| model.contains(name)))
        {
            return (p, true);
        }
        let dearest = self.0.values().fold(Price::new(0.0, 0.0), |a, p| Price {
            input: a.input.max(p.input),
            output: a.output.max(p.output),
            cache_write: Some(
                a.cache_write
                    .unwrap_or(0.0)
                    .max(p.cache_write.unwrap_or(p.input * 1.25)),
            ),
            cache_read: Some(
                a.cache_read
                    .unwrap_or(0.0)
                    .max(p.cache_read.unwrap_or(p.input * 0.1)),
            ),
        });
        (dearest, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_metered_across_chunk_boundaries() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":120,\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n",
        );
        let mut m = Meter::new("text/event-stream; charset=utf-8");
        for chunk in stream.as_bytes().chunks(7) {
            m.feed(chunk);
        }
        let u = m.finish();
        assert_eq!(
            u,
            Usage {
                model: Some("claude-sonnet-4-5".into()),
                input_tokens: 120,
                output_tokens: 42,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 30,
            }
        );
        let (price, known) = Prices::default().of(u.model.as_deref());
        assert!(known);
        // 120 × 3 + 42 × 15 + 30 × 0.3 = 999 micro-dollars.
        assert_eq!(price.micro_usd(&u), 999);
    }

    #[test]
    fn a_json_answer_is_metered_and_an_unknown_model_costs_the_dearest_price() {
        let mut m = Meter::new("application/json");
        m.feed(br#"{"model":"claude-mystery-9","usage":{"input_tokens":10,"output_tokens":10}}"#);
        let u = m.finish();
        assert_eq!((u.input_tokens, u.output_tokens), (10, 10));
        let (price, known) = Prices::default().of(u.model.as_deref());
        assert!(!known);
        assert_eq!((price.input, price.output), (15.0, 75.0));
        assert_eq!(
            Prices::default()
                .of(Some("claude-opus-4-5-20251101"))
                .0
                .input,
            5.0
        );
    }
}
