//! Token counts and what they cost, in the shapes the CLI prints them: the `usage` of
//! messages and results, and `modelUsage` per model.

use crate::json::Json;
use crate::obj;

/// Every model the CLI 2.1.332 knows reports this context window (fixtures `m_model_*`).
pub const CONTEXT_WINDOW: u64 = 1_000_000;
/// And this output limit.
pub const MAX_OUTPUT_TOKENS: u64 = 128_000;

/// Token counts of one request, or summed over several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }

    pub fn is_empty(self) -> bool {
        self == Usage::default()
    }

    /// What the CLI charges locally for these tokens on `model`.
    pub fn cost_usd(self, model: &str) -> f64 {
        let (input, output) = price_per_token(model);
        self.input_tokens as f64 * input + self.output_tokens as f64 * output
    }
}

/// Dollars per input and output token. The recorded totals (fixtures `m_model_*`, 1,667
/// input and 3 output tokens each) fit these list prices per million: opus $4/$20, sonnet
/// $2/$10, haiku $0.10/$0.50, fable $8/$40. Other names are charged as opus.
fn price_per_token(model: &str) -> (f64, f64) {
    let per_million = if model.contains("sonnet") {
        (2.0, 10.0)
    } else if model.contains("haiku") {
        (0.1, 0.5)
    } else if model.contains("fable") {
        (8.0, 40.0)
    } else {
        (4.0, 20.0)
    };
    (per_million.0 / 1e6, per_million.1 / 1e6)
}

/// The `usage` of an assistant event: the request's input and a placeholder output of 1,
/// because the CLI emits each block before the final usage is known.
pub fn block_usage(input_tokens: u64) -> Json {
    obj! {
        "input_tokens" => input_tokens,
        "output_tokens" => 1,
        "cache_creation_input_tokens" => 0,
        "cache_read_input_tokens" => 0,
    }
}

fn server_tool_use() -> Json {
    obj! { "web_search_requests" => 0, "web_fetch_requests" => 0 }
}

fn cache_creation() -> Json {
    obj! { "ephemeral_1h_input_tokens" => 0, "ephemeral_5m_input_tokens" => 0 }
}

fn thinking_tokens() -> Json {
    obj! { "thinking_tokens" => 0 }
}

/// The `usage` of a result (and of transcript lines) that counts at least one answer.
pub fn full_usage(usage: Usage) -> Json {
    obj! {
        "input_tokens" => usage.input_tokens,
        "cache_creation_input_tokens" => 0,
        "cache_read_input_tokens" => 0,
        "output_tokens" => usage.output_tokens,
        "output_tokens_details" => thinking_tokens(),
        "server_tool_use" => server_tool_use(),
        "service_tier" => "standard",
        "cache_creation" => cache_creation(),
        "inference_geo" => "",
        "iterations" => Json::Arr(Vec::new()),
        "speed" => "standard",
        "fallback_credit" => Json::Null,
    }
}

/// The `usage` of a result that counts no answer (API errors, a failed resume): zeros,
/// and `output_tokens_details` first (h15, o3, e3b).
pub fn empty_usage() -> Json {
    obj! {
        "output_tokens_details" => thinking_tokens(),
        "input_tokens" => 0,
        "cache_creation_input_tokens" => 0,
        "cache_read_input_tokens" => 0,
        "output_tokens" => 0,
        "server_tool_use" => server_tool_use(),
        "service_tier" => "standard",
        "cache_creation" => cache_creation(),
        "inference_geo" => "",
        "iterations" => Json::Arr(Vec::new()),
        "speed" => "standard",
        "fallback_credit" => Json::Null,
    }
}

/// A result's `usage`: the empty shape when no answer was counted.
pub fn result_usage(usage: Usage) -> Json {
    if usage.is_empty() {
        empty_usage()
    } else {
        full_usage(usage)
    }
}

/// The usage of a synthetic (error) message: zeros, with nulls where a real answer has tiers.
pub fn synthetic_usage() -> Json {
    obj! {
        "output_tokens_details" => Json::Null,
        "input_tokens" => 0,
        "output_tokens" => 0,
        "cache_creation_input_tokens" => 0,
        "cache_read_input_tokens" => 0,
        "server_tool_use" => server_tool_use(),
        "service_tier" => Json::Null,
        "cache_creation" => cache_creation(),
        "inference_geo" => Json::Null,
        "iterations" => Json::Null,
        "speed" => Json::Null,
        "fallback_credit" => Json::Null,
    }
}

/// `modelUsage` (and `model_usage_since_last_result`): tokens and cost per model.
pub fn model_usage(spent: &[(String, Usage)]) -> Json {
    Json::Obj(
        spent
            .iter()
            .map(|(model, usage)| {
                let entry = obj! {
                    "inputTokens" => usage.input_tokens,
                    "outputTokens" => usage.output_tokens,
                    "cacheReadInputTokens" => 0,
                    "cacheCreationInputTokens" => 0,
                    "webSearchRequests" => 0,
                    "costUSD" => usage.cost_usd(model),
                    "contextWindow" => CONTEXT_WINDOW,
                    "maxOutputTokens" => MAX_OUTPUT_TOKENS,
                    "thinkingTokens" => 0,
                    "cacheCreationEphemeral5mInputTokens" => 0,
                    "cacheCreationEphemeral1hInputTokens" => 0,
                    "canonicalModel" => model.clone(),
                    "provider" => "firstParty",
                    "costBasis" => "list",
                };
                (model.clone(), entry)
            })
            .collect(),
    )
}

/// Adds `usage` to the entry of `model` in a per-model list.
pub fn record(spent: &mut Vec<(String, Usage)>, model: &str, usage: Usage) {
    match spent.iter_mut().find(|(m, _)| m == model) {
        Some((_, total)) => total.add(usage),
        None => spent.push((model.to_string(), usage)),
    }
}

/// The cost of a per-model list.
pub fn total_cost(spent: &[(String, Usage)]) -> f64 {
    spent.iter().map(|(model, u)| u.cost_usd(model)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_match_the_recorded_totals() {
        let usage = Usage {
            input_tokens: 1667,
            output_tokens: 3,
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(usage.cost_usd("claude-opus-5-5"), 0.006728));
        assert!(close(usage.cost_usd("claude-sonnet-5-5"), 0.003364));
        assert!(close(usage.cost_usd("claude-haiku-5-5"), 0.0001682));
        assert!(close(usage.cost_usd("claude-fable-5-2"), 0.013456));
    }

    #[test]
    fn empty_usage_puts_the_details_first() {
        assert_eq!(
            result_usage(Usage::default()).keys()[0],
            "output_tokens_details"
        );
        let one = Usage {
            input_tokens: 1,
            output_tokens: 1,
        };
        assert_eq!(result_usage(one).keys()[0], "input_tokens");
    }
}
