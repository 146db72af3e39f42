//! `gtc`: the DOT agent and its command line. This file only parses the
//! arguments and dispatches; each command is a module of `cmd/`, which
//! also declares its flags.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// DOT: data-oriented transfer.
#[derive(Parser)]
#[command(name = "gtc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground.
    Agent {
        #[command(flatten)]
        flags: dot_agent::config::Flags,
    },
    /// Put a file (by reference: the agent does not copy it) or standard
    /// input (`-`); prints the ticket as the last line.
    Put {
        #[command(flatten)]
        args: cmd::put::Args,
    },
    /// Get an object by ticket (or OID) and write it to FILE or stdout.
    Get {
        #[command(flatten)]
        args: cmd::get::Args,
    },
    /// Show what the agent holds, serves and fetches.
    Status {
        #[command(flatten)]
        args: cmd::status::Args,
    },
    /// Portable storage: copy objects to a mounted key.
    Device {
        #[command(subcommand)]
        command: cmd::device::Command,
    },
    /// Copy a file between machines, the bytes going agent to agent: runs
    /// `gtc put --json` where SRC is and `gtc get` where DST is, over
    /// `--rsh` for a remote side. Keeps mode and mtime.
    Cp {
        #[command(flatten)]
        args: cmd::cp::Args,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent { flags } => cmd::agent::run(flags),
        Command::Put { args } => cmd::put::run(args),
        Command::Get { args } => cmd::get::run(args),
        Command::Status { args } => cmd::status::run(args),
        Command::Device { command } => cmd::device::run(command),
        Command::Cp { args } => cmd::cp::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, never a backtrace: `{:?}` of an anyhow error
            // would print one whenever RUST_BACKTRACE is set.
            eprintln!("gtc: {}", cmd::exit::one_line(&e));
            ExitCode::from(cmd::exit::code(&e))
        }
    }
}
