//! The directories of one attempt: a private `HOME` (so concurrent CLIs never share
//! `~/.claude.json`), a working directory, and the session transcript the CLI keeps there.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    /// The CLI's working directory, canonical (the CLI keys sessions by it).
    pub cwd: PathBuf,
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl Workspace {
    /// What a sandboxed process of the attempt may write: its root, and the job's `cwd`
    /// when that is elsewhere.
    pub fn writable(&self) -> Vec<&Path> {
        let mut dirs = vec![self.root.as_path()];
        if !self.cwd.starts_with(&self.root) {
            dirs.push(&self.cwd);
        }
        dirs
    }

    /// Creates `<attempts_dir>/<name>/{home,tmp,work}`. The job's `cwd`, when given and
    /// already checked against the roots, replaces `work`.
    pub fn create(attempts_dir: &Path, name: &str, cwd: Option<&Path>) -> std::io::Result<Self> {
        // One path resolution: everything below it is made here, free of symlinks, so the
        // paths the CLI sees (it keys sessions by its real cwd) are canonical by
        // construction.
        let base = match attempts_dir.canonicalize() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                private_dir(attempts_dir)?;
                attempts_dir.canonicalize()?
            }
            Err(e) => return Err(e),
        };
        let root = base.join(name);
        if root.exists() {
            // A leftover of an earlier run of the same attempt number: start clean.
            std::fs::remove_dir_all(&root)?;
        }
        let home = root.join("home");
        let tmp = root.join("tmp");
        let work = root.join("work");
        let mut dirs = std::fs::DirBuilder::new();
        dirs.mode(0o700);
        for d in [&root, &home, &tmp, &work] {
            dirs.create(d)?;
        }
        let cwd = match cwd {
            Some(c) => c.canonicalize()?,
            None => work,
        };
        Ok(Self {
            root,
            home,
            tmp,
            cwd,
        })
    }

    /// Writes a file only this user can read, for content that must stay out of argv.
    pub fn private_file(&self, name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.root.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(contents)?;
        Ok(path)
    }

    /// Where the CLI keeps the transcript of `session_id` for this working directory.
    /// Places `files` (relative path → contents) in the working directory: an agent's
    /// `CLAUDE.md` and files. A path that would leave the directory is refused.
    pub fn place_files(
        &self,
        files: &std::collections::BTreeMap<String, String>,
    ) -> std::io::Result<()> {
        for (relative, contents) in files {
            let rel = Path::new(relative);
            if !rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{relative:?} is not a path inside the workspace"),
                ));
            }
            let path = self.cwd.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, contents)?;
        }
        Ok(())
    }

    /// Clones `repo` (sharing its objects, so it is quick and the repository is only
    /// read) into the workspace at its `dir`, checked out at its `ref` (detached). Git runs
    /// with a clean environment (no credentials, no global configuration) and is killed
    /// after `timeout`.
    pub async fn checkout(
        &self,
        repo: &baton_core::agent::Repo,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let dest = self.cwd.join(repo.dir());
        if dest.symlink_metadata().is_ok() {
            return Err(format!("{} is already in the workspace", repo.dir()));
        }
        // An earlier checkout may hold a symbolic link where this one's folder goes: the
        // folder's parent, resolved, must still be inside the workspace.
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", repo.dir()))?;
            let (real, root) = (parent.canonicalize(), self.cwd.canonicalize());
            if !matches!((&real, &root), (Ok(r), Ok(w)) if r.starts_with(w)) {
                return Err(format!("{} leads outside the workspace", repo.dir()));
            }
        }
        let dest_text = dest.display().to_string();
        let safe = format!("safe.directory={}", repo.path.trim_end_matches('/'));
        let steps: [Vec<&str>; 2] = [
            vec![
                "-c",
                &safe,
                "clone",
                "--quiet",
                "--shared",
                "--no-checkout",
                "--",
                &repo.path,
                &dest_text,
            ],
            vec![
                "-C",
                &dest_text,
                "checkout",
                "--quiet",
                "--detach",
                repo.git_ref(),
                "--",
            ],
        ];
        let deadline = tokio::time::Instant::now() + timeout;
        for args in steps {
            let mut cmd = tokio::process::Command::new("git");
            cmd.args(&args)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", &self.home)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_TERMINAL_PROMPT", "0")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = tokio::time::timeout_at(deadline, cmd.output())
                .await
                .map_err(|_| format!("git took longer than {} s", timeout.as_secs()))?
                .map_err(|e| format!("git could not run: {e}"))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: String = err
                    .trim()
                    .chars()
                    .rev()
                    .take(500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(format!(
                    "git {}: {tail}",
                    args.iter()
                        .find(|a| matches!(**a, "clone" | "checkout"))
                        .unwrap_or(&"")
                ));
            }
        }
        Ok(())
    }

    pub fn transcript_path(&self, session_id: &str) -> PathBuf {
        self.home
            .join(".claude/projects")
            .join(project_dir_name(&self.cwd))
            .join(format!("{session_id}.jsonl"))
    }

    pub fn restore_transcript(&self, session_id: &str, transcript: &[u8]) -> std::io::Result<()> {
        let path = self.transcript_path(session_id);
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
        std::fs::write(path, transcript)
    }

    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(path = %self.root.display(), error = %e, "could not remove attempt workspace");
        }
    }
}

/// The CLI names a project directory after the cwd with every non-alphanumeric character
/// replaced by '-' (observed: `/tmp/lab/my_dir.x y` → `-tmp-lab-my-dir-x-y`).
pub fn project_dir_name(cwd: &Path) -> String {
    cwd.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Whether `path` lies inside one of `roots`, after resolving symlinks and `..`.
pub fn inside_roots(path: &Path, roots: &[PathBuf]) -> std::io::Result<PathBuf> {
    let real = path.canonicalize()?;
    if !real.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            path.display()
        )));
    }
    for root in roots {
        if let Ok(root) = root.canonicalize()
            && real.starts_with(&root)
        {
            return Ok(real);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} is outside the configured workspace roots",
            path.display()
        ),
    ))
}

/// Gives `root` and everything in it to `uid:gid` (the CLI's user, `runner.run_as`),
/// never following a symbolic link.
pub fn give(root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(root)?.is_dir() {
        for entry in std::fs::read_dir(root)? {
            give(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_dir_matches_the_cli() {
        assert_eq!(
            project_dir_name(Path::new("/tmp/lab/my_dir.x y")),
            "-tmp-lab-my-dir-x-y"
        );
    }

    #[test]
    fn an_attempt_gets_private_canonical_directories_even_under_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let real = top.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, top.path().join("link")).unwrap();
        let attempts = top.path().join("link/attempts");
        let ws = Workspace::create(&attempts, "job-1", None).unwrap();
        let canonical = real.canonicalize().unwrap().join("attempts/job-1");
        assert_eq!(ws.root, canonical);
        assert_eq!(ws.cwd, canonical.join("work"));
        assert_eq!(ws.cwd, ws.cwd.canonicalize().unwrap());
        for d in [&ws.root, &ws.home, &ws.tmp, &ws.cwd] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", d.display());
        }
        // The same attempt again starts from an empty directory.
        std::fs::write(ws.cwd.join("left-over"), b"x").unwrap();
        let again = Workspace::create(&attempts, "job-1", None).unwrap();
        assert!(std::fs::read_dir(&again.cwd).unwrap().next().is_none());
    }

    #[test]
    fn roots_are_enforced_after_resolving() {
        let root = tempfile::tempdir().unwrap();
        let inner = root.path().join("a");
        std::fs::create_dir(&inner).unwrap();
        let roots = vec![root.path().to_path_buf()];
        assert!(inside_roots(&inner, &roots).is_ok());
        let escape = inner.join("../..");
        assert!(inside_roots(&escape, &roots).is_err());
        assert!(inside_roots(Path::new("/definitely/missing"), &roots).is_err());
    }
}
