//! Baton end to end: a real server over HTTP, `fake-claude` as the CLI.

mod agents;
mod api;
mod compat;
mod dead;
mod facades;
mod nodes;
mod policy;
mod process;
mod real_cli;
mod routines;
mod sandbox;
mod scenarios;
mod schemathesis;
mod secrets;
mod seed004;
mod sessions;
mod spend;
mod sse;
mod storage_faults;
mod support;
mod tenancy;
mod tls;
mod warm;
