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

/// A permission mode a policy allows, or `*`.
pub struct PolicyMode;
impl utoipa::PartialSchema for PolicyMode {
    fn schema() -> RefOr<Schema> {
        string(
            r"^(\*|default|acceptEdits|auto|bypassPermissions|dontAsk|plan)$",
            "A permission mode, or * for any.",
        )
    }
}
impl utoipa::ToSchema for PolicyMode {}

/// A directory a policy allows jobs to work in, or `*`.
pub struct PolicyRoot;
impl utoipa::PartialSchema for PolicyRoot {
    fn schema() -> RefOr<Schema> {
        string(
            r"^(\*|(/[^/\x00]*)+)$",
            "An absolute path inside a configured workspace root, without .. segments; or * for every workspace root.",
        )
    }
}
impl utoipa::ToSchema for PolicyRoot {}

/// A name of the admin's MCP server catalogue, or `*`.
pub struct ServerName;
impl utoipa::PartialSchema for ServerName {
    fn schema() -> RefOr<Schema> {
        string(
            r"^(\*|[A-Za-z0-9_-]{1,64})$",
            "The name of an MCP server of the catalogue ([[mcp_server]]), or * for all.",
        )
    }
}
impl utoipa::ToSchema for ServerName {}

/// A name of the admin's MCP server catalogue.
pub struct CatalogueName;
impl utoipa::PartialSchema for CatalogueName {
    fn schema() -> RefOr<Schema> {
        string(
            r"^[A-Za-z0-9_-]{1,64}$",
            "The name of an MCP server of the admin's catalogue ([[mcp_server]]).",
        )
    }
}
impl utoipa::ToSchema for CatalogueName {}
