//! Control requests of a warm process (`--input-format stream-json`): `initialize`,
//! `interrupt`, `set_model`, `set_permission_mode`, answered at once, even mid-turn.

use std::time::{Duration, Instant};

use super::{Runner, Stop};
use crate::config::resolve_model;
use crate::events;
use crate::interrupt;
use crate::json::Json;
use crate::obj;

impl Runner {
    /// Waits `ms`. In a warm process, control requests arriving meanwhile are answered at
    /// once (an interrupt ends the turn), and user lines wait for their own turn.
    /// A SIGINT ends the turn the same way.
    pub(super) fn pause(&mut self, ms: u64) -> Result<(), Stop> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        if self.input.is_none() {
            return if interrupt::sleep(Duration::from_millis(ms)) {
                Ok(())
            } else {
                Err(Stop::Interrupted)
            };
        }
        loop {
            if interrupt::received() {
                return Err(Stop::Interrupted);
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
            let slice = interrupt::slice_end(deadline);
            let Some(line) = self.input.as_mut().and_then(|i| i.wait_until(slice)) else {
                continue;
            };
            let request = Json::parse(line.trim())
                .ok()
                .filter(|m| m.get("type").and_then(Json::as_str) == Some("control_request"));
            match request {
                Some(request) => {
                    if self.answer_control(&request) {
                        return Err(Stop::Interrupted);
                    }
                }
                None => {
                    if let Some(input) = self.input.as_mut() {
                        input.defer(line);
                    }
                }
            }
        }
    }

    /// Answers a `control_request`; returns whether it was an interrupt.
    pub(super) fn answer_control(&mut self, message: &Json) -> bool {
        let request_id = message.get("request_id").cloned().unwrap_or(Json::Null);
        let request = message.get("request").cloned().unwrap_or(Json::Null);
        let subtype = request
            .get("subtype")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let success = |response: Option<Json>| {
            let mut body = obj! { "subtype" => "success", "request_id" => request_id.clone() };
            if let Some(response) = response {
                body.set("response", response);
            }
            body
        };
        let response = match subtype {
            "initialize" => {
                let mut body = success(Some(events::initialize_response(&self.config, &self.env)));
                body.set("pending_permission_requests", Json::Arr(Vec::new()));
                body.set("pending_user_dialog_requests", Json::Arr(Vec::new()));
                body
            }
            // Nothing is ever queued behind the interrupted turn here (f5).
            "interrupt" => success(Some(obj! { "still_queued" => Json::Arr(Vec::new()) })),
            "set_model" => {
                let model = request.get("model").and_then(Json::as_str);
                self.config.model = resolve_model(model);
                success(None)
            }
            "set_permission_mode" => {
                if let Some(mode) = request.get("mode").and_then(Json::as_str) {
                    self.config.permission_mode = mode.to_string();
                }
                success(None)
            }
            other => obj! {
                "subtype" => "error",
                "request_id" => request_id.clone(),
                "error" => format!("Unsupported control request subtype: {other}"),
            },
        };
        self.out
            .event(obj! { "type" => "control_response", "response" => response });
        subtype == "interrupt"
    }
}
