//! Agents: a named, versioned job configuration that a caller runs with only an input.
//! An agent's prompt is a template (minijinja, strict about undefined names, with a fuel
//! limit) over the run's `input`, which is checked against the agent's `input_schema`
//! before anything is queued.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::{JobRequest, Limits};

/// Which agent, and which version of it, a job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRef {
    pub name: String,
    pub version: u32,
}

/// An agent as saved: everything but its name and version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefinition {
    #[serde(default)]
    pub description: String,
    /// The prompt, rendered over `{"input": …}`.
    pub prompt_template: String,
    /// Job options, as in a job request (without `prompt`, `session` or `metadata`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub options: Map<String, Value>,
    /// A JSON Schema the run's input must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// A JSON Schema of the structured output the CLI is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// The media type of the run's output (default: `application/json` with an
    /// `output_schema`, else `text/plain; charset=utf-8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Written as `CLAUDE.md` into each run's workspace: the project context the CLI reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_md: Option<String>,
    /// Small files placed in each run's workspace (relative path → contents).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// A command run in the workspace after a successful result, its output checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// Local git repositories each run gets its own checkout of, in its workspace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<Repo>,
    /// CLI processes kept started for this agent's options on each node that runs jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<u32>,
    /// What the agent's runs may cost a day (and a month), over all its versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::Budget>,
}

/// The largest warm pool an agent may ask for (each real CLI holds about 300 MB).
pub const MAX_WARM_POOL: u32 = 16;

/// A local git repository (inside a workspace root) that each run of an agent works on:
/// cloned (sharing its objects) into the run's workspace at `ref`, so parallel runs never
/// share a checkout and the repository itself is never touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// The repository's absolute path, inside a configured workspace root.
    pub path: String,
    /// A branch, tag or commit (default: the repository's `HEAD`).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Where in the workspace (default: the repository's folder name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// Repositories an agent checks out at most.
pub const MAX_REPOS: usize = 16;

impl Repo {
    /// The folder of the workspace it is checked out into.
    pub fn dir(&self) -> String {
        self.dir.clone().unwrap_or_else(|| {
            self.path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".git")
                .to_string()
        })
    }

    /// The ref to check out.
    pub fn git_ref(&self) -> &str {
        self.git_ref.as_deref().unwrap_or("HEAD")
    }

    fn check(&self) -> Result<(), AgentError> {
        let invalid = |m: String| AgentError::Invalid(m);
        if !self.path.starts_with('/') || self.path.contains('\0') || self.path.len() > 4096 {
            return Err(invalid(format!(
                "repos: {:?} must be an absolute path",
                self.path
            )));
        }
        let dir = self.dir();
        let normal = !dir.is_empty()
            && dir.len() <= 255
            && dir
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !normal {
            return Err(invalid(format!(
                "repos: dir {dir:?} must be a relative path inside the workspace"
            )));
        }
        let r = self.git_ref();
        let ok_ref = !r.is_empty()
            && r.len() <= 255
            && !r.starts_with('-')
            && !r.contains("..")
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-^~@{}".contains(&b));
        if !ok_ref {
            return Err(invalid(format!("repos: ref {r:?} is not a git ref")));
        }
        Ok(())
    }
}

/// An agent's check of a run: `command` (an argv; a relative path with a `/` names a file
/// of the workspace) runs in the run's workspace after a successful result, with
/// `{"input", "output", "result"}` on its stdin. Its stdout becomes the run's output; a
/// non-zero exit fails the attempt as `verification_failed` with its stderr's tail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Verify {
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64))]
    pub command: Vec<String>,
}

/// What a run's attempt checks after a successful result: the command, and the input
/// it is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRun {
    pub command: Vec<String>,
    #[serde(default)]
    pub input: Value,
}

/// Files an agent places at most, and their bytes at most in all.
pub const MAX_FILES: usize = 64;
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Why an agent or a run of it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Invalid(String),
    /// The input does not satisfy `input_schema`, first at `pointer`.
    #[error("input{pointer}: {message}")]
    Input { pointer: String, message: String },
    /// The template failed while rendering (out of fuel, a type error).
    #[error("template_error: {0}")]
    Template(String),
}

/// Names an agent may take: as a project id.
pub fn check_name(name: &str) -> Result<(), AgentError> {
    crate::ProjectId::parse(name).map(drop).map_err(|_| {
        AgentError::Invalid(format!(
            "agent name {name:?}: 1 to 63 lower-case letters, digits, '-' or '_', starting with a letter or digit"
        ))
    })
}

/// Template instructions a render may spend (a loop over a huge input runs out).
const FUEL: u64 = 100_000;
/// Fields a run's job options may not take from an agent: they belong to one run.
const NOT_AGENT_OPTIONS: [&str; 4] = ["prompt", "session", "metadata", "json_schema"];

pub(crate) fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
}

/// A template error with where it is: `line L, column C: …`.
pub(crate) fn located(source: &str, e: &minijinja::Error) -> String {
    let detail = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    match (e.line(), e.range()) {
        (Some(line), Some(range)) => {
            let start = source[..range.start.min(source.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let column = source[start..range.start.min(source.len())].chars().count() + 1;
            format!("line {line}, column {column}: {detail}")
        }
        (Some(line), None) => format!("line {line}: {detail}"),
        _ => detail,
    }
}

impl AgentDefinition {
    /// Checks everything that can be checked before any run: the template parses and names
    /// only `input` (and, with an `input_schema` that lists its properties, only those);
    /// the schemas are schemas; the options are job options a request could set.
    pub fn check(&self, limits: &Limits) -> Result<(), AgentError> {
        let invalid = |m: String| AgentError::Invalid(m);
        if self.prompt_template.trim().is_empty() {
            return Err(invalid("prompt_template must not be empty".into()));
        }
        if self.description.chars().count() > 2000 {
            return Err(invalid("description: at most 2000 characters".into()));
        }
        let env = environment();
        let template = env.template_from_str(&self.prompt_template).map_err(|e| {
            invalid(format!(
                "prompt_template: {}",
                located(&self.prompt_template, &e)
            ))
        })?;
        let known: Option<Vec<&str>> = self
            .input_schema
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().map(String::as_str).collect());
        let globals: Vec<&str> = env.globals().map(|(name, _)| name).collect();
        let mut names: Vec<String> = template
            .undeclared_variables(true)
            .into_iter()
            .filter(|n| !globals.contains(&n.split('.').next().unwrap_or_default()))
            .collect();
        names.sort();
        for name in names {
            let mut parts = name.split('.');
            if parts.next() != Some("input") {
                return Err(invalid(format!(
                    "prompt_template names {name:?}; a template may use only input (e.g. {{{{ input.want }}}})"
                )));
            }
            if let (Some(known), Some(field)) = (&known, parts.next())
                && !known.contains(&field)
            {
                return Err(invalid(format!(
                    "prompt_template names input.{field}, which input_schema does not define"
                )));
            }
        }
        for (field, schema) in [
            ("input_schema", &self.input_schema),
            ("output_schema", &self.output_schema),
        ] {
            if let Some(s) = schema {
                jsonschema::validator_for(s)
                    .map_err(|e| invalid(format!("{field} is not a JSON Schema: {e}")))?;
            }
        }
        if let Some(k) = NOT_AGENT_OPTIONS
            .iter()
            .find(|k| self.options.contains_key(**k))
        {
            return Err(invalid(format!(
                "options.{k}: not an agent option (json_schema is output_schema)"
            )));
        }
        if let Some(ct) = &self.content_type
            && (ct.is_empty() || ct.len() > 200 || !ct.is_ascii() || !ct.contains('/'))
        {
            return Err(invalid(format!("content_type {ct:?} is not a media type")));
        }
        self.check_files()?;
        if let Some(b) = &self.budget {
            b.check("budget").map_err(invalid)?;
        }
        if self.repos.len() > MAX_REPOS {
            return Err(invalid(format!("repos: at most {MAX_REPOS}")));
        }
        let mut dirs = std::collections::BTreeSet::new();
        for r in &self.repos {
            r.check()?;
            if !dirs.insert(r.dir())
                || self
                    .workspace_files()
                    .keys()
                    .any(|f| f.split('/').next() == Some(&r.dir()))
            {
                return Err(invalid(format!(
                    "repos: two things want the workspace's {:?}; give each repo its own dir",
                    r.dir()
                )));
            }
        }
        if let Some(n) = self.warm_pool {
            if n > MAX_WARM_POOL {
                return Err(invalid(format!("warm_pool: at most {MAX_WARM_POOL}")));
            }
            let own_workspace = !self.workspace_files().is_empty()
                || self.verify.is_some()
                || !self.repos.is_empty()
                || self.options.contains_key("cwd");
            if n > 0 && own_workspace {
                return Err(invalid(
                    "warm_pool: a warm process starts before its run, so an agent with claude_md, files, verify, repos or a cwd cannot use one".into(),
                ));
            }
        }
        if !self.repos.is_empty() && self.options.contains_key("cwd") {
            return Err(invalid(
                "repos are checked out into each run's own workspace; an agent with them cannot set options.cwd".into(),
            ));
        }
        if let Some(v) = &self.verify {
            let bad = v.command.is_empty()
                || v.command.len() > 64
                || v.command[0].is_empty()
                || v.command.iter().any(|a| a.contains('\0') || a.len() > 4096);
            if bad {
                return Err(invalid(
                    "verify.command must be 1 to 64 arguments, the first a program, none with NUL"
                        .into(),
                ));
            }
            if self.options.contains_key("cwd") {
                return Err(invalid(
                    "verify runs in each run's own workspace; an agent with it cannot set options.cwd".into(),
                ));
            }
        }
        self.request("a prompt".into())
            .and_then(|r| {
                r.parse(limits)
                    .map_err(|e| invalid(format!("options: {e}")))
            })
            .map(drop)
    }

    fn check_files(&self) -> Result<(), AgentError> {
        let invalid = AgentError::Invalid;
        if self.files.is_empty() && self.claude_md.is_none() {
            return Ok(());
        }
        if self.options.contains_key("cwd") {
            return Err(invalid(
                "claude_md and files go into each run's own workspace; an agent with them cannot set options.cwd".into(),
            ));
        }
        if self.files.contains_key("CLAUDE.md") && self.claude_md.is_some() {
            return Err(invalid(
                "files.CLAUDE.md and claude_md are the same file; give one".into(),
            ));
        }
        if self.files.len() > MAX_FILES {
            return Err(invalid(format!("files: at most {MAX_FILES}")));
        }
        let bytes: usize = self
            .workspace_files()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if bytes > MAX_FILE_BYTES {
            return Err(invalid(format!(
                "claude_md and files: at most {MAX_FILE_BYTES} bytes in all"
            )));
        }
        for path in self.files.keys() {
            let normal = !path.is_empty()
                && !path.starts_with('/')
                && !path.contains('\0')
                && path.len() <= 255
                && path
                    .split('/')
                    .all(|part| !part.is_empty() && part != "." && part != "..");
            if !normal {
                return Err(invalid(format!(
                    "files: {path:?} must be a relative path inside the workspace (no '..', no leading '/')"
                )));
            }
        }
        Ok(())
    }

    /// What each run finds in its workspace: `files`, and `claude_md` as `CLAUDE.md`.
    pub fn workspace_files(&self) -> BTreeMap<String, String> {
        let mut all = self.files.clone();
        if let Some(md) = &self.claude_md {
            all.insert("CLAUDE.md".into(), md.clone());
        }
        all
    }

    /// The run's prompt: `input` checked against `input_schema`, then the template
    /// rendered over it.
    pub fn render(&self, input: &Value) -> Result<String, AgentError> {
        if let Some(schema) = &self.input_schema {
            let validator = jsonschema::validator_for(schema)
                .map_err(|e| AgentError::Invalid(format!("input_schema: {e}")))?;
            if let Some(e) = validator.iter_errors(input).next() {
                return Err(AgentError::Input {
                    pointer: e.instance_path.to_string(),
                    message: e.to_string(),
                });
            }
        }
        let env = environment();
        let template = env
            .template_from_str(&self.prompt_template)
            .map_err(|e| AgentError::Template(located(&self.prompt_template, &e)))?;
        template
            .render(minijinja::context! { input => minijinja::Value::from_serialize(input) })
            .map_err(|e| AgentError::Template(located(&self.prompt_template, &e)))
    }

    /// The job request of a run with `prompt`: the agent's options, its output schema as
    /// the structured output asked for.
    pub fn request(&self, prompt: String) -> Result<JobRequest, AgentError> {
        let mut fields = self.options.clone();
        fields.insert("prompt".into(), Value::String(prompt));
        if let Some(schema) = &self.output_schema {
            fields.insert("json_schema".into(), schema.clone());
        }
        serde_json::from_value(Value::Object(fields))
            .map_err(|e| AgentError::Invalid(format!("options: {e}")))
    }

    /// The output's media type.
    pub fn content_type(&self) -> &str {
        match (&self.content_type, &self.output_schema) {
            (Some(ct), _) => ct,
            (None, Some(_)) => "application/json",
            (None, None) => "text/plain; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(template: &str) -> AgentDefinition {
        AgentDefinition {
            prompt_template: template.into(),
            input_schema: Some(json!({
                "type": "object",
                "required": ["want"],
                "properties": {"want": {"type": "string"}, "items": {"type": "array"}}
            })),
            ..AgentDefinition::default()
        }
    }

    #[test]
    fn a_template_is_checked_when_saved_and_rendered_over_checked_input() {
        let limits = Limits::default();
        let a = agent("Find {{ input.want }} in {{ input.items | join(', ') }}.");
        a.check(&limits).unwrap();
        let prompt = a
            .render(&json!({"want": "carol", "items": ["a", "b"]}))
            .unwrap();
        assert_eq!(prompt, "Find carol in a, b.");
        let err = a.render(&json!({"items": []})).unwrap_err();
        assert!(
            matches!(&err, AgentError::Input { pointer, .. } if pointer.is_empty()),
            "{err}"
        );
        let err = a.render(&json!({"want": 3})).unwrap_err();
        assert!(
            matches!(&err, AgentError::Input { pointer, .. } if pointer == "/want"),
            "{err}"
        );

        let err = agent("Hello\n  {{ input.want ").check(&limits).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = agent("{{ input.nope }}").check(&limits).unwrap_err();
        assert!(err.to_string().contains("input.nope"), "{err}");
        let err = agent("{{ secrets }}").check(&limits).unwrap_err();
        assert!(err.to_string().contains("only input"), "{err}");
        let mut bad = agent("x");
        bad.input_schema = Some(json!({"type": "no such type"}));
        assert!(bad.check(&limits).is_err());
        let mut bad = agent("x");
        bad.options.insert("timeout_ms".into(), json!(-1));
        assert!(
            bad.check(&limits)
                .unwrap_err()
                .to_string()
                .contains("timeout_ms")
        );
        let mut bad = agent("x");
        bad.options.insert("session".into(), json!({}));
        assert!(bad.check(&limits).is_err());
        for path in ["../up", "/abs", "a//b", "", "a/./b"] {
            let mut bad = agent("x");
            bad.files.insert(path.into(), "x".into());
            assert!(bad.check(&limits).is_err(), "{path:?}");
        }
        let mut ok = agent("x");
        ok.claude_md = Some("# Context".into());
        ok.files.insert("data/people.json".into(), "[]".into());
        ok.check(&limits).unwrap();
        assert_eq!(ok.workspace_files().len(), 2);
        ok.options.insert("cwd".into(), json!("/tmp"));
        assert!(
            ok.check(&limits).is_err(),
            "files need the run's own workspace"
        );
    }

    #[test]
    fn a_render_that_runs_out_of_fuel_is_a_template_error() {
        let a = AgentDefinition {
            prompt_template:
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                    .into(),
            ..AgentDefinition::default()
        };
        a.check(&Limits::default()).unwrap();
        let err = a.render(&json!({})).unwrap_err();
        assert!(matches!(err, AgentError::Template(_)), "{err}");
    }
}
