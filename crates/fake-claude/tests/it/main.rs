//! Integration tests: spawn the `fake-claude` binary exactly as Baton spawns the real CLI
//! and check what a wrapper would observe, against the real CLI's recorded fixtures where
//! they exist (`crates/fake-claude/fixtures`).

mod cli;
mod output;
mod processes;
mod recorded;
mod sessions;
mod support;
mod warm;
