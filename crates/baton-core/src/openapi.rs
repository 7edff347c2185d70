//! OpenAPI schemas of request strings that carry rules of their own (the `openapi`
//! feature): what the API's generated document says of tool names and paths.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

fn string(pattern: &str, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(crate::spec::MAX_ITEM_CHARS))
        .description(Some(description))
        .into()
}

/// A tool name or rule, e.g. `Read` or `Bash(git *)`.
pub struct ToolName;
impl utoipa::PartialSchema for ToolName {
    fn schema() -> RefOr<Schema> {
        string(
            r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$",
            "A tool name or rule, e.g. Read or Bash(git *).",
        )
    }
}
impl utoipa::ToSchema for ToolName {}

/// An absolute path without `..` segments.
pub struct AbsolutePath;
impl utoipa::PartialSchema for AbsolutePath {
    fn schema() -> RefOr<Schema> {
        string(
            r"^(/[^/\x00]*)+$",
            "An absolute path inside a configured workspace root, without .. segments.",
        )
    }
}
impl utoipa::ToSchema for AbsolutePath {}

/// The CLI's MCP configuration.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
pub struct McpConfig {
    #[schema(value_type = Object)]
    mcpServers: serde_json::Map<String, serde_json::Value>,
}
