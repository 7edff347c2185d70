//! Routines: a saved prompt (and an agent, or inline options) that runs when one of its
//! triggers fires: an HTTP call with the trigger's own token, a cron schedule, or a
//! signed webhook. This module holds what can be decided without a database: the
//! definitions, their checks, the prompt a fire renders and the times a schedule fires.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::agent::{AgentError, environment, located};

/// The most characters a fire's `text` may have (the hosted API's limit).
pub const MAX_FIRE_TEXT_CHARS: usize = 65_536;
/// The daily allowance when a routine names none, and the most one may name.
pub const DEFAULT_DAILY_ALLOWANCE: u32 = 1_000;
pub const MAX_DAILY_ALLOWANCE: u32 = 1_000_000;
/// A routine may have this many triggers.
pub const MAX_TRIGGERS: usize = 32;
/// Variables a routine's prompt may name.
const PROMPT_VARIABLES: [&str; 5] = ["text", "event", "routine", "trigger", "fired_at"];

/// A routine as saved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutineDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A minijinja template over `text` (what a fire hands in), `event` (a webhook's
    /// payload), `routine`, `trigger` and `fired_at`. A fire's text that the prompt does
    /// not name is appended after it.
    #[serde(default)]
    pub prompt: String,
    /// The agent each run is a run of (in the routine's project), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent version to pin (default: its newest at each fire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<u32>,
    /// The agent's input: this object, with `prompt`, `text` and `event` added by each fire.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub input: Map<String, Value>,
    /// Job options when there is no agent (`POST /v1/jobs`'s fields, without `prompt`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub options: Map<String, Value>,
    /// Runs a day (UTC) before fires are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_allowance: Option<u32>,
    /// Where each run's summary is POSTed when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// What the routine's runs may cost a day (and a month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::Budget>,
}

impl RoutineDefinition {
    /// What can be checked when the routine is saved.
    pub fn check(&self) -> Result<(), AgentError> {
        let invalid = |m: String| AgentError::Invalid(m);
        crate::agent::check_name(&self.name)?;
        if self.description.chars().count() > 2000 {
            return Err(invalid("description: at most 2000 characters".into()));
        }
        if self.prompt.trim().is_empty() && self.agent.is_none() {
            return Err(invalid(
                "prompt must not be empty (only a routine with an agent may leave it out)".into(),
            ));
        }
        if self.prompt.chars().count() > 200_000 || self.prompt.contains('\0') {
            return Err(invalid("prompt: at most 200000 characters, no NUL".into()));
        }
        let env = environment();
        let template = env
            .template_from_str(&self.prompt)
            .map_err(|e| invalid(format!("prompt: {}", located(&self.prompt, &e))))?;
        let globals: Vec<&str> = env.globals().map(|(name, _)| name).collect();
        let mut names: Vec<String> = template.undeclared_variables(false).into_iter().collect();
        names.sort();
        if let Some(name) = names
            .iter()
            .find(|n| !PROMPT_VARIABLES.contains(&n.as_str()) && !globals.contains(&n.as_str()))
        {
            return Err(invalid(format!(
                "prompt names {name:?}; a routine's prompt may use {}",
                PROMPT_VARIABLES.join(", ")
            )));
        }
        if let Some(agent) = &self.agent {
            crate::agent::check_name(agent)?;
            if !self.options.is_empty() {
                return Err(invalid(
                    "options: a routine with an agent runs the agent's options; give one or the other".into(),
                ));
            }
        } else if self.agent_version.is_some() || !self.input.is_empty() {
            return Err(invalid(
                "agent_version and input belong to a routine with an agent".into(),
            ));
        }
        if let Some(k) = ["prompt", "session"]
            .iter()
            .find(|k| self.options.contains_key(**k))
        {
            return Err(invalid(format!("options.{k}: not a routine option")));
        }
        if let Some(n) = self.daily_allowance
            && !(1..=MAX_DAILY_ALLOWANCE).contains(&n)
        {
            return Err(invalid(format!(
                "daily_allowance must be between 1 and {MAX_DAILY_ALLOWANCE}"
            )));
        }
        if let Some(url) = &self.callback_url {
            crate::spec::check_callback_url(url).map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(b) = &self.budget {
            b.check("budget").map_err(invalid)?;
        }
        Ok(())
    }

    pub fn daily_allowance(&self) -> u32 {
        self.daily_allowance.unwrap_or(DEFAULT_DAILY_ALLOWANCE)
    }

    /// The prompt of one fire: the template rendered over what the fire brings; a `text`
    /// the template does not name follows it after a blank line. The text is a value,
    /// never a template.
    pub fn render(&self, fire: &FireContext) -> Result<String, AgentError> {
        let env = environment();
        let template = env
            .template_from_str(&self.prompt)
            .map_err(|e| AgentError::Template(located(&self.prompt, &e)))?;
        let mut prompt = template
            .render(minijinja::context! {
                text => fire.text.clone().unwrap_or_default(),
                event => minijinja::Value::from_serialize(&fire.event),
                routine => minijinja::context! { id => fire.routine_id.clone(), name => self.name.clone() },
                trigger => minijinja::context! { id => fire.trigger_id.clone(), type => fire.trigger_type.clone() },
                fired_at => fire.fired_at.clone(),
            })
            .map_err(|e| AgentError::Template(located(&self.prompt, &e)))?;
        let names_text = template.undeclared_variables(false).contains("text");
        if let Some(text) = fire
            .text
            .as_deref()
            .filter(|t| !t.is_empty() && !names_text)
        {
            if !prompt.is_empty() {
                prompt.push_str("\n\n");
            }
            prompt.push_str(text);
        }
        Ok(prompt)
    }

    /// The input of a fire's agent run: the routine's `input` with the rendered `prompt`,
    /// the fire's `text` and `event`.
    pub fn agent_input(&self, prompt: &str, fire: &FireContext) -> Value {
        let mut input = self.input.clone();
        input.insert("prompt".into(), Value::String(prompt.to_string()));
        input.insert(
            "text".into(),
            Value::String(fire.text.clone().unwrap_or_default()),
        );
        input.insert("event".into(), fire.event.clone());
        Value::Object(input)
    }
}

/// What one fire brings to the prompt.
#[derive(Debug, Clone, Default)]
pub struct FireContext {
    pub routine_id: String,
    pub trigger_id: String,
    pub trigger_type: String,
    pub text: Option<String>,
    pub event: Value,
    /// RFC 3339.
    pub fired_at: String,
}

/// What a cron trigger does when its previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// The slot passes without a run.
    #[default]
    Skip,
    /// The run waits for the previous one to end.
    Queue,
    /// The runs overlap.
    Allow,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Queue => "queue",
            Self::Allow => "allow",
        }
    }
}

/// A trigger's settings as saved (its secret and token are kept apart, never shown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TriggerConfig {
    Api,
    Cron {
        schedule: String,
        #[serde(default = "utc")]
        timezone: String,
        /// After downtime, fire the latest missed slot once (else: none of them).
        #[serde(default)]
        catch_up: bool,
        #[serde(default)]
        overlap: Overlap,
    },
    Webhook {
        /// How far `X-Baton-Timestamp` may be from now.
        #[serde(default = "default_tolerance")]
        tolerance_seconds: u32,
    },
    Github {
        /// `event` or `event.action` names; empty: every event.
        #[serde(default)]
        events: Vec<String>,
    },
}

fn utc() -> String {
    "UTC".into()
}

fn default_tolerance() -> u32 {
    300
}

impl TriggerConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Cron { .. } => "cron",
            Self::Webhook { .. } => "webhook",
            Self::Github { .. } => "github",
        }
    }

    /// Whether a GitHub event (`X-GitHub-Event`, and the payload's `action`) is one the
    /// trigger wants.
    pub fn wants(&self, event: &str, action: Option<&str>) -> bool {
        match self {
            Self::Github { events } => {
                events.is_empty()
                    || events.iter().any(|e| match e.split_once('.') {
                        Some((name, act)) => name == event && action == Some(act),
                        None => e == event,
                    })
            }
            _ => false,
        }
    }

    /// Checks the settings; for a schedule, that it fires, and no more often than
    /// `min_interval_ms`.
    pub fn check(&self, min_interval_ms: i64, now_ms: i64) -> Result<(), String> {
        match self {
            Self::Cron {
                schedule, timezone, ..
            } => {
                let s = Schedule::parse(schedule, timezone)?;
                s.check_interval(min_interval_ms, now_ms)
            }
            Self::Webhook { tolerance_seconds } => {
                if (1..=86_400).contains(tolerance_seconds) {
                    Ok(())
                } else {
                    Err("tolerance_seconds must be between 1 and 86400".into())
                }
            }
            Self::Github { events } => {
                if events.len() > 64 {
                    return Err("events: at most 64".into());
                }
                match events.iter().find(|e| {
                    e.is_empty()
                        || e.len() > 100
                        || !e
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
                }) {
                    Some(e) => Err(format!(
                        "events: {e:?} is not an event name (pull_request, or pull_request.opened)"
                    )),
                    None => Ok(()),
                }
            }
            Self::Api => Ok(()),
        }
    }
}

/// A parsed cron schedule in its time zone: 5 fields (minute first) or 6 (second first);
/// day of month and day of week combine with OR.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Schedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        let nickname = expr.trim().starts_with('@') && fields == 1;
        if !nickname && !(5..=6).contains(&fields) {
            return Err(format!(
                "schedule {expr:?} has {fields} fields; give 5 (minute hour day month weekday) or 6 (second first)"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("schedule {expr:?}: {e}"))?;
        let tz = chrono_tz::Tz::from_str(timezone)
            .map_err(|_| format!("timezone {timezone:?} is not an IANA time zone name"))?;
        Ok(Self { cron, tz })
    }

    /// The first fire time strictly after `after_ms`, if the schedule ever fires again.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = self.tz.from_utc_datetime(&utc_of(after_ms)?.naive_utc());
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The latest fire time at or before `at_ms`.
    pub fn latest_at(&self, at_ms: i64) -> Option<i64> {
        let start = self.tz.from_utc_datetime(&utc_of(at_ms)?.naive_utc());
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The next `n` fire times after `after_ms`.
    pub fn upcoming(&self, after_ms: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut at = after_ms;
        while out.len() < n {
            match self.next_after(at) {
                Some(t) => {
                    out.push(t);
                    at = t;
                }
                None => break,
            }
        }
        out
    }

    /// Refuses a schedule that never fires, or fires twice within `min_interval_ms`
    /// (over the coming year's first 1000 fires).
    pub fn check_interval(&self, min_interval_ms: i64, now_ms: i64) -> Result<(), String> {
        let times = self.upcoming(now_ms, 1000);
        if times.is_empty() {
            return Err("the schedule never fires".into());
        }
        if let Some(w) = times.windows(2).find(|w| w[1] - w[0] < min_interval_ms) {
            return Err(format!(
                "the schedule fires {} s apart, more often than min_cron_interval ({} s)",
                (w[1] - w[0]) / 1000,
                min_interval_ms / 1000
            ));
        }
        Ok(())
    }
}

fn utc_of(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    utc_of(ms).map_or_else(String::new, |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    })
}

/// The start of the UTC day `ms` falls in, and of the next.
pub fn utc_day(ms: i64) -> (i64, i64) {
    let start = ms - ms.rem_euclid(86_400_000);
    (start, start + 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn schedules_fire_in_their_zone_and_are_checked() {
        let s = Schedule::parse("*/15 * * * *", "UTC").unwrap();
        // 2026-01-01T00:00:00Z
        let t0 = 1_767_225_600_000;
        assert_eq!(s.next_after(t0), Some(t0 + 15 * MIN));
        assert_eq!(s.latest_at(t0 + 20 * MIN), Some(t0 + 15 * MIN));
        assert_eq!(
            s.upcoming(t0, 3),
            vec![t0 + 15 * MIN, t0 + 30 * MIN, t0 + 45 * MIN]
        );
        let berlin = Schedule::parse("0 9 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            berlin.next_after(t0),
            Some(t0 + 8 * 60 * MIN),
            "09:00 CET is 08:00Z"
        );
        let six = Schedule::parse("30 * * * * *", "UTC").unwrap();
        assert_eq!(six.next_after(t0), Some(t0 + 30_000));
        assert!(s.check_interval(15 * MIN, t0).is_ok());
        let e = s.check_interval(60 * MIN, t0).unwrap_err();
        assert!(e.contains("900 s apart"), "{e}");
        assert!(
            Schedule::parse("0 0 31 2 *", "UTC")
                .unwrap()
                .check_interval(MIN, t0)
                .unwrap_err()
                .contains("never")
        );
        assert!(
            Schedule::parse("* * *", "UTC")
                .unwrap_err()
                .contains("3 fields")
        );
        assert!(
            Schedule::parse("* * * * *", "Mars/Olympus")
                .unwrap_err()
                .contains("time zone")
        );
        assert!(Schedule::parse("61 * * * *", "UTC").is_err());
        let daily = Schedule::parse("@daily", "UTC").unwrap();
        assert_eq!(daily.next_after(t0), Some(t0 + 24 * 60 * MIN));
    }

    #[test]
    fn a_fire_renders_its_text_as_a_value_and_appends_what_the_prompt_leaves_out() {
        let r = RoutineDefinition {
            name: "triage".into(),
            prompt: "Triage this.".into(),
            ..Default::default()
        };
        r.check().unwrap();
        let fire = FireContext {
            text: Some("{{ boom }} alert".into()),
            ..Default::default()
        };
        assert_eq!(r.render(&fire).unwrap(), "Triage this.\n\n{{ boom }} alert");
        let named = RoutineDefinition {
            prompt: "PR: {{ event.pull_request.title }} / {{ text }}".into(),
            ..r.clone()
        };
        let fire = FireContext {
            text: Some("t".into()),
            event: serde_json::json!({"pull_request": {"title": "Fix it"}}),
            ..Default::default()
        };
        assert_eq!(named.render(&fire).unwrap(), "PR: Fix it / t");
        let bad = RoutineDefinition {
            prompt: "{{ input.x }}".into(),
            ..r.clone()
        };
        assert!(bad.check().unwrap_err().to_string().contains("\"input\""));
        let unparsable = RoutineDefinition {
            prompt: "line\n{{ text ".into(),
            ..r
        };
        assert!(
            unparsable
                .check()
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
    }

    #[test]
    fn github_filters_match_events_and_actions() {
        let t = TriggerConfig::Github {
            events: vec!["pull_request.opened".into(), "push".into()],
        };
        assert!(t.wants("pull_request", Some("opened")));
        assert!(!t.wants("pull_request", Some("closed")));
        assert!(t.wants("push", None));
        assert!(!t.wants("issues", Some("opened")));
        assert!(TriggerConfig::Github { events: vec![] }.wants("issues", None));
    }

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(86_400_000 + 5), (86_400_000, 172_800_000));
    }
}
