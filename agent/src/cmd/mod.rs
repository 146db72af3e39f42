//! The `gtc` commands, one module each, every one with its flags (`Args`,
//! whose doc comments are its help) and its `run`. `main.rs` declares the
//! commands and dispatches to these.

pub mod agent;
pub mod cp;
pub mod device;
pub mod exit;
pub mod generated;
pub mod get;
pub mod objects;
pub mod progress;
pub mod publish;
pub mod put;
pub mod s3;
pub mod segments;
pub mod smtp;
pub mod status;

/// `n` and the noun, singular for one: "1 chunk", "2 chunks".
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How much the command says besides its output and errors: `-q` (-1),
/// default (0), `-v` (1), `-vv` (2). Set once by `main`.
static VERBOSITY: std::sync::OnceLock<i8> = std::sync::OnceLock::new();

/// Sets the verbosity from `-q` and the count of `-v`.
pub fn set_verbosity(quiet: bool, verbose: u8) {
    let v = if quiet { -1 } else { verbose.min(2) as i8 };
    let _ = VERBOSITY.set(v);
}

/// `-q` was given: no progress bars, no notices.
pub fn quiet() -> bool {
    VERBOSITY.get().copied().unwrap_or(0) < 0
}

/// The log filter for the agent: `RUST_LOG` when set, else by verbosity
/// (`-q` warnings, default info, `-v` debug, `-vv` trace).
pub fn log_filter() -> String {
    if let Ok(f) = std::env::var("RUST_LOG")
        && !f.is_empty()
    {
        return f;
    }
    match VERBOSITY.get().copied().unwrap_or(0) {
        i8::MIN..=-1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
    .to_owned()
}

/// Logs to stderr, filtered by [`log_filter`], in colour on a terminal:
/// for the long-running commands (`gtc agent`, `gtc smtp`).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_new(log_filter()).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
