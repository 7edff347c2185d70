//! Tool round trips: the model's `tool_use`, what the CLI does with it (run it, refuse
//! it, or find no such tool), and the user event that carries the result back.

use std::fs;
use std::path::Path;

use super::model::{Block, tool_use_id};
use super::{Ending, Runner, Stop, Turn};
use crate::events::{self, Permission};
use crate::json::Json;
use crate::obj;
use crate::session::new_uuid;

impl Runner {
    /// A Bash tool call and its result. `echo` needs no permission (d0); without the Bash
    /// tool (`--tools`, `--disallowedTools`) the call fails as in d5/d14.
    pub(super) fn bash_round_trip(
        &mut self,
        turn: &mut Turn,
        command: &str,
        description: &str,
        stdout: &str,
    ) -> Result<(), Stop> {
        let id = tool_use_id();
        let input = obj! { "command" => command, "description" => description };
        let block = Block::ToolUse {
            id: id.clone(),
            name: "Bash",
            input,
        };
        self.call(turn, vec![block], "tool_use", 0)?;
        if self.has_tool("Bash") {
            let result = obj! {
                "stdout" => stdout,
                "stderr" => "",
                "interrupted" => false,
                "isImage" => false,
                "noOutputExpected" => false,
            };
            // Allowed by an --allowedTools rule (d1), else as a read-only command (d0).
            let reason = if self.allowed_by_rule("Bash") {
                "rule"
            } else {
                "subcommandResults"
            };
            let meta = events::tool_result_meta(&id, Permission::Accepted(Some(reason)));
            self.tool_result(events::tool_result_ok(&id, stdout), result, Some(meta));
        } else {
            self.no_such_tool(&id, "Bash");
        }
        turn.num_turns += 1;
        Ok(())
    }

    /// `FAKE deny`: a Write into the cwd. Denied unless the permission mode or
    /// `--allowedTools` allows it, in which case the file really is written (d4, d10).
    pub(super) fn write_file(&mut self, turn: &mut Turn) -> Result<Ending, Stop> {
        let path = Path::new(&self.env.cwd)
            .join("w.txt")
            .to_string_lossy()
            .into_owned();
        let id = tool_use_id();
        let input = obj! { "file_path" => path.clone(), "content" => "x" };
        let block = Block::ToolUse {
            id: id.clone(),
            name: "Write",
            input: input.clone(),
        };
        self.call(turn, vec![block], "tool_use", 0)?;

        let answer = if !self.has_tool("Write") {
            self.no_such_tool(&id, "Write");
            "I could not write the file."
        } else if self.config.write_allowed() {
            match fs::write(&path, "x") {
                Ok(()) => {
                    let message = format!(
                        "File created successfully at: {path} (file state is current in your context — no need to Read it back)"
                    );
                    let result = obj! {
                        "type" => "create",
                        "filePath" => path.clone(),
                        "content" => "x",
                        "structuredPatch" => Json::Arr(Vec::new()),
                        "originalFile" => Json::Null,
                        "userModified" => false,
                    };
                    let reason = if self.allowed_by_rule("Write") {
                        "rule"
                    } else {
                        "mode"
                    };
                    let meta = events::tool_result_meta(&id, Permission::Accepted(Some(reason)));
                    self.tool_result(events::tool_result_plain(&id, &message), result, Some(meta));
                    "I wrote the file."
                }
                Err(e) => {
                    let message = format!("Error writing file {path}: {e}");
                    let result = Json::from(format!("Error: {message}"));
                    self.tool_result(events::tool_result_error(&id, &message), result, None);
                    "I could not write the file."
                }
            }
        } else {
            let message = format!(
                "Claude requested permissions to write to {path}, but you haven't granted it yet."
            );
            self.out.event(events::permission_denied(
                "Write",
                &id,
                &message,
                &self.session_id,
            ));
            let result = Json::from(format!("Error: {message}"));
            let meta = events::tool_result_meta(&id, Permission::Rejected);
            self.tool_result(events::tool_result_error(&id, &message), result, Some(meta));
            turn.denials.push(obj! {
                "tool_name" => "Write",
                "tool_use_id" => id,
                "tool_input" => input,
            });
            "I could not write the file."
        };
        turn.num_turns += 1;
        self.final_text(turn, answer)
    }

    /// `FAKE structured`: a StructuredOutput call, which ends the turn without asking the
    /// model again (i1, i3).
    pub(super) fn structured_output(
        &mut self,
        turn: &mut Turn,
        value: &Json,
    ) -> Result<Ending, Stop> {
        let id = tool_use_id();
        let block = Block::ToolUse {
            id: id.clone(),
            name: "StructuredOutput",
            input: value.clone(),
        };
        self.call(turn, vec![block], "tool_use", 0)?;
        let message = "Structured output provided successfully";
        let meta = events::tool_result_meta(&id, Permission::Accepted(None));
        self.tool_result(
            events::tool_result_plain(&id, message),
            Json::from(message),
            Some(meta),
        );
        turn.num_turns += 1;
        Ok(Ending::Success {
            result: value.to_compact(),
            structured: Some(value.clone()),
        })
    }

    fn has_tool(&self, name: &str) -> bool {
        self.config.tools.iter().any(|t| t == name)
    }

    fn allowed_by_rule(&self, name: &str) -> bool {
        self.config
            .allowed_tools
            .iter()
            .any(|t| t == name || t.starts_with(&format!("{name}(")))
    }

    /// A call to a tool this session does not offer (d5, d14): no `tool_result_meta`.
    fn no_such_tool(&mut self, id: &str, name: &str) {
        let message = format!(
            "No such tool available: {name}. {name} is disabled for this session, in subagents as well as here."
        );
        let block = events::tool_result_error(
            id,
            &format!("<tool_use_error>Error: {message}</tool_use_error>"),
        );
        self.tool_result(block, Json::from(format!("Error: {message}")), None);
    }

    /// A user event carrying one tool result, also written to the transcript.
    fn tool_result(&mut self, block: Json, tool_use_result: Json, meta: Option<Json>) {
        let uuid = new_uuid();
        let content = Json::Arr(vec![block]);
        let mut extra = vec![("tool_use_result", tool_use_result.clone())];
        if let Some(meta) = meta {
            extra.push(("tool_result_meta", meta));
        }
        self.out.event(events::user_event(
            &self.session_id,
            &uuid,
            content.clone(),
            extra,
        ));
        self.transcript
            .user_message(&uuid, content, Some(tool_use_result));
    }

    /// A user event with one text block (interruptions, synthetic nudges).
    pub(super) fn user_text(&mut self, text: &str, extra: Vec<(&str, Json)>) {
        let uuid = new_uuid();
        let content = Json::Arr(vec![obj! { "type" => "text", "text" => text }]);
        self.out.event(events::user_event(
            &self.session_id,
            &uuid,
            content.clone(),
            extra,
        ));
        self.transcript.user_message(&uuid, content, None);
    }
}
