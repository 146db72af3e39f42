//! `gtc`: the DOT agent and its command line. This file only parses the
//! arguments and dispatches; each command is a module of `cmd/`, which
//! also declares its flags.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;

/// DOT: data-oriented transfer.
#[derive(Parser)]
#[command(name = "gtc", version)]
struct Cli {
    /// Say less: no progress bars or notices (the agent logs warnings
    /// only).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Say more: the agent logs at debug (-v) or trace (-vv); RUST_LOG,
    /// when set, wins.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground.
    #[command(
        after_help = "Examples:\n  gtc agent                                   # embedded defaults\n  gtc agent --config /etc/dot/gtc.toml        # keys: docs/config.md\n  gtc agent --listen 0.0.0.0:7420 --advertise host.example:7420 --no-mount"
    )]
    Agent {
        #[command(flatten)]
        flags: dot_agent::config::Flags,
    },
    /// Put a file (by reference: the agent does not copy it) or standard
    /// input (`-`); prints the ticket as the last line.
    #[command(
        after_help = "Examples:\n  gtc put ./report.pdf                        # prints the ticket\n  tar c dir | gtc put -                       # a stream, copied into the store\n  gtc put --json ./report.pdf                 # oid, ticket, size, mode (octal), ..."
    )]
    Put {
        #[command(flatten)]
        args: cmd::put::Args,
    },
    /// Get an object by ticket (or OID) and write it to FILE or stdout.
    #[command(
        after_help = "Examples:\n  gtc get TICKET -o report.pdf\n  gtc get TICKET -o - | tar x                 # to stdout (refused on a terminal without -o -)\n  gtc get TICKET --hint otherhost:7420 -o f   # ask this agent instead of the ticket's hints\n\nExit codes: 3 not found, 4 unreachable, 5 integrity (docs/config.md)."
    )]
    Get {
        #[command(flatten)]
        args: cmd::get::Args,
    },
    /// Show what the agent holds, serves and fetches.
    #[command(after_help = "Examples:\n  gtc status\n  gtc status --json | jq .transfers")]
    Status {
        #[command(flatten)]
        args: cmd::status::Args,
    },
    /// List what the store holds: each object's size, state, holders and
    /// last use.
    #[command(
        after_help = "Examples:\n  gtc ls\n  gtc ls --json | jq '.[] | select(.state == \"partial\")'"
    )]
    Ls {
        #[command(flatten)]
        args: cmd::objects::LsArgs,
    },
    /// Drop objects from the store (a file put by reference stays where it
    /// is); an object a client holds or a fetch fills stays.
    #[command(
        after_help = "Examples:\n  gtc rm dot1-sha256-…\n  gtc ls --json | jq -r '.[].oid' | xargs gtc rm   # empty the cache"
    )]
    Rm {
        #[command(flatten)]
        args: cmd::objects::RmArgs,
    },
    /// Re-read objects (all when none is named) and check every chunk and
    /// whole hash: damaged chunks are fetched again when next wanted,
    /// objects that do not hash to their OID are dropped. Exit code 5 when
    /// anything was found.
    #[command(
        after_help = "Examples:\n  gtc verify                                  # the whole store\n  gtc verify dot1-sha256-… --json"
    )]
    Verify {
        #[command(flatten)]
        args: cmd::objects::VerifyArgs,
    },
    /// Print the shell completion script for SHELL.
    #[command(
        after_help = "Examples:\n  gtc completions bash > /etc/bash_completion.d/gtc\n  gtc completions zsh > ~/.zfunc/_gtc"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (gtc.1 and one per command) into DIR.
    #[command(after_help = "Examples:\n  gtc man /usr/local/share/man/man1")]
    Man {
        /// Where to write them (made if missing).
        dir: std::path::PathBuf,
    },
    /// Publish an object to a folder a web server serves (the layout of
    /// a key), and print its ticket with that mirror as a hint.
    #[command(
        after_help = "Examples:\n  gtc publish TICKET /var/www/dot --url https://mirror.example/dot/\n  gtc publish TICKET /srv/dot --url http://10.0.0.5/dot/ --priority 5   # tried before the agent\n\nSee docs/mirrors.md."
    )]
    Publish {
        #[command(flatten)]
        args: cmd::publish::Args,
    },
    /// Portable storage: copy objects to a mounted key.
    #[command(
        after_help = "Examples:\n  gtc device export TICKET /media/key        # then carry the key to the receiver"
    )]
    Device {
        #[command(subcommand)]
        command: cmd::device::Command,
    },
    /// Copy a file between machines, the bytes going agent to agent: runs
    /// `gtc put --json` where SRC is and `gtc get` where DST is, over
    /// `--rsh` for a remote side. Keeps mode and mtime.
    #[command(
        after_help = "Examples:\n  gtc cp ./data.bin otherhost:/srv/inbox/\n  gtc cp otherhost:/srv/out/log.txt ./"
    )]
    Cp {
        #[command(flatten)]
        args: cmd::cp::Args,
    },
    /// An SMTP gateway beside a mail server: mail bodies go agent to
    /// agent by ticket (X-DOT-DATA), everything else stays SMTP.
    #[command(
        after_help = "Examples:\n  gtc smtp inbound --listen 0.0.0.0:25 --to 127.0.0.1:2525      # in front of the MTA\n  gtc smtp outbound --listen 127.0.0.1:10025 --to mx.example:25  # relayhost = [127.0.0.1]:10025\n\nSee docs/mail.md."
    )]
    Smtp {
        #[command(flatten)]
        args: cmd::smtp::Args,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::set_verbosity(cli.quiet, cli.verbose);
    let json = match &cli.command {
        Command::Put { args } => args.json,
        Command::Get { args } => args.json,
        Command::Status { args } => args.json,
        Command::Ls { args } => args.json,
        Command::Verify { args } => args.json,
        _ => false,
    };
    let result = match cli.command {
        Command::Agent { flags } => cmd::agent::run(flags),
        Command::Put { args } => cmd::put::run(args),
        Command::Get { args } => cmd::get::run(args),
        Command::Status { args } => cmd::status::run(args),
        Command::Ls { args } => cmd::objects::ls(args),
        Command::Rm { args } => cmd::objects::rm(args),
        Command::Verify { args } => cmd::objects::verify(args),
        Command::Completions { shell } => cmd::generated::completions(shell, Cli::command()),
        Command::Man { dir } => cmd::generated::man(&dir, Cli::command()),
        Command::Device { command } => cmd::device::run(command),
        Command::Publish { args } => cmd::publish::run(args),
        Command::Cp { args } => cmd::cp::run(args),
        Command::Smtp { args } => cmd::smtp::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, never a backtrace: `{:?}` of an anyhow error
            // would print one whenever RUST_BACKTRACE is set.
            if json {
                eprintln!("{}", cmd::exit::json_line(&e));
            } else {
                eprintln!("gtc: {}", cmd::exit::one_line(&e));
            }
            ExitCode::from(cmd::exit::code(&e))
        }
    }
}
