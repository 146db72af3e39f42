//! Shell completions and man pages, made from the command line's own
//! definitions: every command is in them, and they are what the tools
//! that read them expect.

use std::process::Command;

use dot_tests::{COMMAND_LIMIT, gtc_bin, output_within};

fn gtc(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(gtc_bin());
    c.args(args);
    output_within(c, COMMAND_LIMIT)
}

const COMMANDS: [&str; 10] = [
    "agent", "put", "get", "status", "ls", "rm", "verify", "device", "cp", "smtp",
];

#[test]
fn completions_name_every_command_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = gtc(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).expect("utf-8");
        for c in COMMANDS {
            assert!(script.contains(c), "{shell} completion lacks {c}");
        }
    }
    let bash = String::from_utf8(gtc(&["completions", "bash"]).stdout).expect("utf-8");
    assert!(bash.contains("complete -F _gtc"), "not a bash completion");
    // An unknown shell is a usage error.
    assert_eq!(gtc(&["completions", "cmd.exe"]).status.code(), Some(2));
}

#[test]
fn man_pages_cover_gtc_and_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = gtc(&["man", dir.path().to_str().expect("utf-8")]);
    assert!(out.status.success(), "{out:?}");
    for page in std::iter::once("gtc".to_owned()).chain(COMMANDS.iter().map(|c| format!("gtc-{c}")))
    {
        let text = std::fs::read_to_string(dir.path().join(format!("{page}.1")))
            .unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}.1 is no man page"
        );
    }
    let get = std::fs::read_to_string(dir.path().join("gtc-get.1")).expect("gtc-get.1");
    assert!(
        get.contains("ticket"),
        "gtc-get.1 does not say what it gets"
    );
}
