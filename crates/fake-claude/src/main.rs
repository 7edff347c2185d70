//! The `fake-claude` binary; see the library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Lossy, like a JavaScript CLI sees its argv: Baton never passes non-UTF-8 arguments.
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    ExitCode::from(fake_claude::run(args))
}
