//! What an attempt came to. The `result` event decides, never the exit code alone:
//! the CLI reports API failures as `subtype: "success"` with `is_error: true`.

use baton_core::ErrorKind;
use serde_json::{Value, json};

/// Classifies the CLI's `result` event. `Ok` means the job succeeded.
pub fn classify_result(result: &Value, wants_structured: bool) -> Result<(), (ErrorKind, String)> {
    let subtype = result.get("subtype").and_then(Value::as_str).unwrap_or("");
    let is_error = result
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let text = result.get("result").and_then(Value::as_str).unwrap_or("");
    let errors = result
        .get("errors")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    match (subtype, is_error) {
        ("success", false) => {
            if wants_structured && result.get("structured_output").is_none() {
                Err((
                    ErrorKind::StructuredOutputMissing,
                    "the CLI finished without calling StructuredOutput".into(),
                ))
            } else {
                Ok(())
            }
        }
        ("success", true) => {
            let status = result
                .get("api_error_status")
                .and_then(Value::as_u64)
                .map(|s| s as u16);
            let kind = if status.is_none() && text.starts_with("Not logged in") {
                ErrorKind::AuthenticationError
            } else {
                ErrorKind::from_api_status(status)
            };
            Err((kind, text.to_string()))
        }
        ("error_max_turns", _) => Err((ErrorKind::MaxTurns, errors)),
        ("error_max_budget_usd", _) => Err((ErrorKind::MaxBudget, errors)),
        ("error_max_structured_output_retries", _) => {
            Err((ErrorKind::StructuredOutputInvalid, errors))
        }
        ("error_during_execution", _) if errors.contains("No conversation found") => {
            Err((ErrorKind::SessionNotFound, errors))
        }
        _ => Err((
            ErrorKind::ExecutionError,
            if errors.is_empty() {
                format!("the CLI reported {subtype:?}")
            } else {
                errors
            },
        )),
    }
}

/// The fields of a `result` event (plus the model from `system/init`) kept as the job's
/// outcome. Accounting prefers `modelUsage` and `total_cost_usd`: after a stalled-stream
/// fallback the top-level `usage` is all zeros. But a resumed session's `total_cost_usd` and
/// `modelUsage` (claude 2.1.3xx) include what its earlier runs spent, restored with the
/// transcript; where the CLI says what this run alone used
/// (`model_usage_since_last_result`), the job's cost and model usage are that, and the
/// session's running total is kept beside them (`session_total_cost_usd`).
pub fn summarize(result: &Value, model: Option<&str>) -> Value {
    let pick = |k: &str| result.get(k).cloned().unwrap_or(Value::Null);
    let this_run = result
        .get("model_usage_since_last_result")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty());
    let (cost, model_usage) = match this_run {
        Some(usage) => (
            json!(
                usage
                    .values()
                    .filter_map(|u| u["costUSD"].as_f64())
                    .sum::<f64>()
            ),
            Value::Object(usage.clone()),
        ),
        None => (pick("total_cost_usd"), pick("modelUsage")),
    };
    json!({
        "subtype": pick("subtype"),
        "is_error": pick("is_error"),
        "result": pick("result"),
        "structured_output": pick("structured_output"),
        "session_id": pick("session_id"),
        "model": model,
        "total_cost_usd": cost,
        "session_total_cost_usd": pick("total_cost_usd"),
        "usage": pick("usage"),
        "model_usage": model_usage,
        "num_turns": pick("num_turns"),
        "duration_ms": pick("duration_ms"),
        "duration_api_ms": pick("duration_api_ms"),
        "stop_reason": pick("stop_reason"),
        "api_error_status": pick("api_error_status"),
        "permission_denials": result.get("permission_denials").cloned().unwrap_or_else(|| json!([])),
        "errors": pick("errors"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_result(name: &str) -> Value {
        // The real CLI's recorded output, kept with fake-claude.
        let path = format!(
            "{}/../fake-claude/fixtures/{name}.stdout",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "result")
            .unwrap_or_else(|| panic!("{path} has no result"))
    }

    #[test]
    fn real_cli_results_classify() {
        let cases = [
            ("b_stream_json_verbose", None),
            ("h1_http401_stream", Some(ErrorKind::AuthenticationError)),
            ("g1_max_turns_hit", Some(ErrorKind::MaxTurns)),
            ("d2_tool_bash_not_allowed", None),
            ("h12_http400_stream", Some(ErrorKind::InvalidRequest)),
            (
                "h11_connection_refused_retries_2",
                Some(ErrorKind::ApiError),
            ),
        ];
        // The previous pin's recordings (2.1.197) and the current one's.
        for version in ["", "2.1.332/"] {
            for (name, want) in cases {
                let name = format!("{version}{name}");
                assert_eq!(
                    classify_result(&fixture_result(&name), false)
                        .err()
                        .map(|e| e.0),
                    want,
                    "{name}"
                );
            }
        }
    }

    /// A resumed session's result counts the session's earlier runs in `total_cost_usd`;
    /// the job's cost is this run's.
    #[test]
    fn a_resumed_run_costs_what_it_spent_itself() {
        let resumed = fixture_result("2.1.332/e13_resume_budget_below_session_cost");
        let session_total = resumed["total_cost_usd"].as_f64().unwrap();
        let outcome = summarize(&resumed, None);
        let cost = outcome["total_cost_usd"].as_f64().unwrap();
        assert!(
            cost > 0.0 && cost < session_total,
            "{cost} vs {session_total}"
        );
        assert_eq!(outcome["session_total_cost_usd"], resumed["total_cost_usd"]);
        // A first run: the two agree.
        let fresh = fixture_result("2.1.332/b_stream_json_verbose");
        let outcome = summarize(&fresh, None);
        let (cost, total) = (
            outcome["total_cost_usd"].as_f64().unwrap(),
            fresh["total_cost_usd"].as_f64().unwrap(),
        );
        assert!((cost - total).abs() < 1e-9, "{cost} vs {total}");
    }

    #[test]
    fn synthetic_results_classify() {
        let ok = json!({"type":"result","subtype":"success","is_error":false,"result":"hi"});
        assert!(classify_result(&ok, false).is_ok());
        assert_eq!(
            classify_result(&ok, true).unwrap_err().0,
            ErrorKind::StructuredOutputMissing
        );
        let budget = json!({"subtype":"error_max_budget_usd","is_error":true,"errors":["Reached maximum budget ($0.015)"]});
        assert_eq!(
            classify_result(&budget, false).unwrap_err(),
            (
                ErrorKind::MaxBudget,
                "Reached maximum budget ($0.015)".into()
            )
        );
        let gone = json!({"subtype":"error_during_execution","is_error":true,"errors":["No conversation found with session ID: x"]});
        assert_eq!(
            classify_result(&gone, false).unwrap_err().0,
            ErrorKind::SessionNotFound
        );
        let login = json!({"subtype":"success","is_error":true,"api_error_status":null,"result":"Not logged in · Please run /login"});
        assert_eq!(
            classify_result(&login, false).unwrap_err().0,
            ErrorKind::AuthenticationError
        );
    }
}
