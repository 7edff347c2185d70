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

/// A string type's schema, from its doc comment, name, pattern and description.
macro_rules! string_schema {
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $description:expr) => {
        $(#[$doc])*
        pub struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string($pattern, $description)
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

string_schema! {
    /// A tool name or rule, e.g. `Read` or `Bash(git *)`.
    ToolName,
    r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$",
    "A tool name or rule, e.g. Read or Bash(git *)."
}

string_schema! {
    /// An absolute path without `..` segments.
    AbsolutePath,
    r"^(/[^/\x00]*)+$",
    "An absolute path inside a configured workspace root, without .. segments."
}

/// The CLI's MCP configuration.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
pub struct McpConfig {
    #[schema(value_type = Object)]
    mcpServers: serde_json::Map<String, serde_json::Value>,
}

string_schema! {
    /// A permission mode a policy allows, or `*`.
    PolicyMode,
    r"^(\*|default|acceptEdits|auto|bypassPermissions|dontAsk|plan)$",
    "A permission mode, or * for any."
}

string_schema! {
    /// A directory a policy allows jobs to work in, or `*`.
    PolicyRoot,
    r"^(\*|(/[^/\x00]*)+)$",
    "An absolute path inside a configured workspace root, without .. segments; or * for every workspace root."
}

string_schema! {
    /// A name of the admin's MCP server catalogue, or `*`.
    ServerName,
    r"^(\*|[A-Za-z0-9_-]{1,64})$",
    "The name of an MCP server of the catalogue ([[mcp_server]]), or * for all."
}

string_schema! {
    /// A name of the admin's MCP server catalogue.
    CatalogueName,
    r"^[A-Za-z0-9_-]{1,64}$",
    "The name of an MCP server of the admin's catalogue ([[mcp_server]])."
}
