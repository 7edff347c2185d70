//! The `baton` binary's library half: configuration, wiring and the command-line client,
//! kept out of `main` so tests can build a server in process.
//!
//! **Architecture invariant:** no business logic lives here; it wires the other crates.

pub mod app;
pub mod client;
pub mod config;
pub mod doctor;
pub mod manage;
pub mod proxy;
pub mod tls;

pub use app::App;
pub use config::Config;
