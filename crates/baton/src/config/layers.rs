//! The layers of the configuration: defaults, the file, `BATON_<SECTION>_<KEY>`, flags.
//! Every layer names a key the same way (`section.key`, or `[section] key` in the file),
//! and every layer refuses a key of the flat layout with the key's new place.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::Config;

/// The sections whose keys are single values (`warm_pool` is an array of tables).
const SECTIONS: &[&str] = &[
    "server",
    "store",
    "runner",
    "limits",
    "retention",
    "outbound",
    "proxy",
];

/// Environment variables that belong to Baton but are not configuration keys. `BATON_LOG`
/// is a log filter read before the configuration, as `RUST_LOG` is elsewhere.
const NON_CONFIG_ENV: &[&str] = &[
    "BATON_SERVER",
    "BATON_CONFIG",
    "BATON_REQUIRE_ALL",
    "BATON_LOG",
    "BATON_API_KEY",
];

/// Flat keys whose name changed in their section; the rest kept their name.
const RENAMED: &[(&str, &str)] = &[
    ("database_max_connections", "store.max_connections"),
    ("retention_completed_days", "retention.completed_days"),
    ("retention_failed_days", "retention.failed_days"),
    ("retention_dead_days", "retention.dead_days"),
];

impl Config {
    /// Builds the configuration. `file` is `--config`; without it `$BATON_CONFIG`, else
    /// `baton.toml` in the working directory if present. `flags` are `section.key=value`
    /// overrides.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut table =
            toml::Table::try_from(Config::default()).context("default configuration")?;
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| {
                env.iter()
                    .find(|(k, _)| k == "BATON_CONFIG")
                    .map(|(_, v)| PathBuf::from(v))
            })
            .or_else(|| Some(PathBuf::from("baton.toml")).filter(|p| p.exists()));
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the configuration file {}", path.display()))?;
            let overlay: toml::Table = text
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?;
            merge_file(&mut table, overlay)
                .with_context(|| format!("the configuration file {}", path.display()))?;
        }
        if runner_str(&table, "claude_bin") == Some("")
            && let Some((_, v)) = env.iter().find(|(k, _)| k == "CLAUDE_BIN")
        {
            set(&mut table, "runner.claude_bin", v)?;
        }
        for (name, value) in env {
            if !name.starts_with("BATON_")
                || NON_CONFIG_ENV.contains(&name.as_str())
                || name.starts_with("BATON_TEST_")
            {
                continue;
            }
            let key =
                env_key(&table, name).with_context(|| format!("environment variable {name}"))?;
            set(&mut table, &key, value).with_context(|| format!("environment variable {name}"))?;
        }
        for (key, value) in flags {
            set(&mut table, key, value).with_context(|| format!("flag {key}"))?;
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        config.validate()?;
        config.file = file.and_then(|f| f.canonicalize().ok());
        Ok(config)
    }
}

fn runner_str<'a>(table: &'a toml::Table, key: &str) -> Option<&'a str> {
    table.get("runner")?.get(key)?.as_str()
}

/// Where a key of the flat layout lives now (`max_concurrency` → `runner.max_concurrency`).
fn new_place(table: &toml::Table, flat: &str) -> Option<String> {
    if let Some((_, new)) = RENAMED.iter().find(|(old, _)| *old == flat) {
        return Some(new.to_string());
    }
    SECTIONS
        .iter()
        .find(|s| table.get(**s).and_then(|t| t.get(flat)).is_some())
        .map(|s| format!("{s}.{flat}"))
}

fn moved(table: &toml::Table, flat: &str) -> anyhow::Error {
    match new_place(table, flat) {
        Some(new) => {
            let (section, key) = new.split_once('.').expect("section.key");
            anyhow::anyhow!(
                "{flat:?} has moved: it is now {new} (in the file, under [{section}] as {key}; \
                 in the environment, BATON_{}; as a flag, --set {new}=…)",
                new.replace('.', "_").to_ascii_uppercase()
            )
        }
        None => anyhow::anyhow!(
            "unknown configuration key {flat:?}; see the configuration reference in the README"
        ),
    }
}

/// Lays the file's sections over the defaults, refusing unknown and flat keys.
fn merge_file(table: &mut toml::Table, overlay: toml::Table) -> anyhow::Result<()> {
    for (k, v) in overlay {
        match (table.get_mut(&k), v) {
            (Some(toml::Value::Table(section)), toml::Value::Table(keys)) => {
                for (key, value) in keys {
                    if !section.contains_key(&key) {
                        bail!(
                            "unknown key {key:?} in [{k}]; see the configuration reference in the README"
                        );
                    }
                    section.insert(key, value);
                }
            }
            (Some(toml::Value::Table(_)), _) => bail!("{k} must be a section: [{k}]"),
            (Some(slot), value) => *slot = value,
            (None, _) => return Err(moved(table, &k)),
        }
    }
    Ok(())
}

/// The key a `BATON_<SECTION>_<KEY>` variable sets.
fn env_key(table: &toml::Table, name: &str) -> anyhow::Result<String> {
    let rest = name["BATON_".len()..].to_ascii_lowercase();
    for section in SECTIONS {
        if let Some(key) = rest.strip_prefix(&format!("{section}_"))
            && table.get(*section).and_then(|t| t.get(key)).is_some()
        {
            return Ok(format!("{section}.{key}"));
        }
    }
    if ["warm_pool", "policy", "mcp_server"].contains(&rest.as_str()) {
        return Ok(rest);
    }
    Err(moved(table, &rest))
}

/// Sets one key (`section.key`, or `warm_pool`) from a string: parsed as a TOML value when
/// it is one (numbers, booleans, arrays, inline tables), else taken as a string; a list key
/// also takes a comma-separated string.
pub(super) fn set(table: &mut toml::Table, key: &str, raw: &str) -> anyhow::Result<()> {
    let slot = match key.split_once('.') {
        Some((section, name)) => match table.get_mut(section) {
            Some(toml::Value::Table(t)) if t.contains_key(name) => t.get_mut(name),
            _ => None,
        },
        // `[policy]` has no default to overwrite.
        None if key == "policy" => Some(
            table
                .entry("policy")
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        ),
        None if !SECTIONS.contains(&key) => table.get_mut(key),
        None => None,
    };
    let Some(current) = slot else {
        let flat = key.rsplit('.').next().unwrap_or(key);
        return Err(if key.contains('.') {
            anyhow::anyhow!(
                "unknown configuration key {key:?}; see the configuration reference in the README"
            )
        } else {
            moved(table, flat)
        });
    };
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    *current = match (&*current, parsed) {
        (toml::Value::Array(_), Some(v @ toml::Value::Array(_))) => v,
        (toml::Value::Array(_), _) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
        (toml::Value::String(_), _) => toml::Value::String(raw.into()),
        (_, Some(v)) => v,
        (_, None) => toml::Value::String(raw.into()),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Role;
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flag(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(
            &file,
            "[runner]\nmax_concurrency = 2\n[server]\nlog = \"debug\"\n[retention]\ndead_days = 3\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            &env(&[
                ("BATON_RUNNER_MAX_CONCURRENCY", "6"),
                ("BATON_LIMITS_WORKSPACE_ROOTS", "/srv/a,/srv/b"),
                ("BATON_LOG", "trace"),
                ("BATON_SERVER", "http://elsewhere"),
            ]),
            &[flag("runner.max_concurrency", "9")],
        )
        .unwrap();
        assert_eq!(c.runner.max_concurrency, 9);
        assert_eq!(c.server.log, "debug");
        assert_eq!((c.retention.dead_days, c.retention.completed_days), (3, 7));
        assert_eq!(
            c.limits.workspace_roots,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
    }

    #[test]
    fn a_flat_key_is_refused_with_its_new_place_in_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "max_concurrency = 2\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&file), &[], &[]).unwrap_err());
        assert!(
            err.contains("\"max_concurrency\" has moved: it is now runner.max_concurrency")
                && err.contains("[runner]"),
            "{err}"
        );
        std::fs::write(&file, "retention_dead_days = 2\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&file), &[], &[]).unwrap_err());
        assert!(err.contains("retention.dead_days"), "{err}");
        let err =
            Config::load(None, &env(&[("BATON_DATABASE_URL", "postgres://h/d")]), &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("BATON_STORE_DATABASE_URL"),
            "{err:#}"
        );
        let err = Config::load(None, &[], &[flag("listen", "127.0.0.1:1")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("--set server.listen="),
            "{err:#}"
        );
        let err = Config::load(None, &[], &[flag("database_max_connections", "3")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("store.max_connections"),
            "{err:#}"
        );
    }

    #[test]
    fn database_urls_are_checked_and_never_shown_with_their_password() {
        use super::super::{redact_url, url_has_password};
        assert_eq!(
            redact_url("postgres://baton:s3cret@db.internal:5432/baton?sslmode=disable"),
            "postgres://baton:***@db.internal:5432/baton?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://db/baton?user=b&password=s3cret&x=1"),
            "postgres://db/baton?user=b&password=***&x=1"
        );
        assert!(!url_has_password("postgres://baton@db/baton"));
        let err = Config::load(
            None,
            &[],
            &[flag("store.database_url", "mysql://u:pw@h/db")],
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("postgres://") && !msg.contains("pw"), "{msg}");
        let err = Config::load(None, &[], &[flag("runner.workspace_dir", "scratch")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("runner.workspace_dir must be an absolute path"),
            "{err:#}"
        );
        let err = Config::load(None, &[], &[flag("server.role", "worker")]).unwrap_err();
        assert!(format!("{err:#}").contains("shared"), "{err:#}");
        let err = Config::load(None, &[], &[flag("server.role", "boss")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid configuration"),
            "{err:#}"
        );
        let c = Config::load(
            None,
            &env(&[("BATON_STORE_DATABASE_URL", "postgres://b@h/db")]),
            &[flag("server.role", "api")],
        )
        .unwrap();
        assert_eq!(
            (c.server.role, c.store.database_url.as_str()),
            (Role::Api, "postgres://b@h/db")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "[runner]\nmax_concurency = 2\n").unwrap();
        let err = Config::load(Some(&file), &[], &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown key \"max_concurency\" in [runner]"),
            "{err:#}"
        );
        std::fs::write(&file, "runner = 3\n").unwrap();
        let err = Config::load(Some(&file), &[], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("[runner]"), "{err:#}");
        let err = Config::load(None, &env(&[("BATON_FROBNICATE", "1")]), &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown configuration key"),
            "{err:#}"
        );
        let err = Config::load(None, &[], &[flag("runner.frobnicate", "1")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown configuration key"),
            "{err:#}"
        );
        let err = Config::load(None, &[], &[flag("server.auth", "maybe")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid configuration"),
            "{err:#}"
        );
        let err = Config::load(None, &[], &[flag("runner.max_concurrency", "many")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid configuration"),
            "{err:#}"
        );
    }

    #[test]
    fn warm_pools_come_from_the_file_or_a_flag() {
        let c = Config::load(
            None,
            &[],
            &[flag(
                "warm_pool",
                "[{size = 2, options = {model = \"sonnet\"}}]",
            )],
        )
        .unwrap();
        assert_eq!((c.warm_pool.len(), c.warm_pool[0].size), (1, 2));
    }
}
