//! Integration tests: the mock driven over HTTP, the binary, and the real CLI if present.

mod directives;
mod processes;
mod protocol;
mod support;
