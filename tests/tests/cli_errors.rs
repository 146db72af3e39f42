//! How `gtc` fails: one line on stderr, no backtrace whatever the
//! environment, and the exit code of the failure's kind.

use std::process::Command;

use dot_tests::{COMMAND_LIMIT, gtc_bin, output_within};

fn gtc(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(gtc_bin());
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1");
    output_within(cmd, COMMAND_LIMIT)
}

#[test]
fn no_agent_is_one_line_without_a_backtrace_and_exit_code_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("none.sock");
    let out = gtc(&["status", "--socket", sock.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(4));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.starts_with("gtc: no agent at "), "{said}");
    assert!(
        !said.contains("backtrace") && !said.contains("Caused by"),
        "{said}"
    );
    assert_eq!(
        said.matches("No such file or directory").count(),
        1,
        "{said}"
    );
}

#[test]
fn bad_arguments_are_exit_code_2() {
    assert_eq!(gtc(&["get"]).status.code(), Some(2));
    assert_eq!(gtc(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn with_json_an_error_is_one_json_object_with_its_kind_and_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("none.sock");
    let sock = sock.to_str().expect("utf-8");
    for args in [
        vec!["status", "--json", "--socket", sock],
        vec!["ls", "--json", "--socket", sock],
        vec!["verify", "--json", "--socket", sock],
    ] {
        let out = gtc(&args);
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(said.lines().count(), 1, "{said}");
        let v: serde_json::Value = serde_json::from_str(&said).expect("stderr is JSON");
        assert_eq!(v["kind"], "unreachable", "{v}");
        assert_eq!(v["exit"], 4, "{v}");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no agent at ")),
            "{v}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout");
    }
}
