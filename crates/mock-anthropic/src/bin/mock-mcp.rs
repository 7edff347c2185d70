//! `mock-mcp`: the smallest useful MCP server over stdio, for tests that give the real CLI
//! an `mcp_config`. One tool, `upper`, returns its `text` argument in capitals. It answers
//! `initialize`, `tools/list` and `tools/call`, ignores notifications, and exits when stdin
//! closes. Each request it receives is appended to the file named by `MOCK_MCP_LOG`, if set.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

fn answer(request: &Value) -> Option<Value> {
    let id = request.get("id")?.clone();
    let result = match request["method"].as_str()? {
        "initialize" => json!({
            "protocolVersion": request["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mock-mcp", "version": "0.0.0"},
        }),
        "tools/list" => json!({"tools": [{
            "name": "upper",
            "description": "Returns the text in capitals.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        }]}),
        "tools/call" => {
            let text = request["params"]["arguments"]["text"]
                .as_str()
                .unwrap_or("");
            json!({"content": [{"type": "text", "text": text.to_uppercase()}], "isError": false})
        }
        "ping" => json!({}),
        other => {
            return Some(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("unknown method {other}")}}),
            );
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn main() {
    let log = std::env::var_os("MOCK_MCP_LOG");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(request) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(path) = &log
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(f, "{request}");
        }
        if let Some(reply) = answer(&request)
            && writeln!(stdout, "{reply}")
                .and_then(|()| stdout.flush())
                .is_err()
        {
            break;
        }
    }
}
