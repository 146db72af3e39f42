//! The command line speaks one language: addresses as `host:port` or
//! `gtc://host:port` everywhere, modes in octal, machine output on stdout
//! when the data goes to a file, `-q`, and singulars for one.

use dot_tests::{Agent, random_bytes};

#[test]
fn a_hint_may_be_host_port_and_json_goes_to_stdout_with_o() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("one");
    // Below the chunker's minimum: one chunk.
    std::fs::write(&src, random_bytes(1000, 1)).expect("write");
    let put = a.put(&src);
    let mode = put["mode"].as_str().expect("the mode is a string");
    assert!(
        mode.len() == 4 && u32::from_str_radix(mode, 8).is_ok(),
        "mode {mode:?} is not octal"
    );
    let ticket = put["ticket"].as_str().expect("ticket");
    // A's address as host:port, the form --advertise and --peer take.
    let hint = a.hint();
    let bare = hint
        .rsplit_once('@')
        .map_or(hint.as_str(), |(_, addr)| addr);
    let out = b.dir.join("out");
    let got = b.gtc_ok(&[
        "get",
        ticket,
        "--hint",
        bare,
        "-o",
        out.to_str().expect("utf-8"),
        "--json",
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&got).expect("get --json -o FILE prints JSON on stdout");
    assert_eq!(report["size"].as_u64(), Some(1000));

    // One chunk, said as one; -q says nothing but the ticket.
    let said = a.gtc(&["put", src.to_str().expect("utf-8")]);
    let notice = String::from_utf8_lossy(&said.stderr);
    assert!(notice.contains("(1000 bytes, 1 chunk)"), "{notice}");
    let quiet = a.gtc(&["-q", "put", src.to_str().expect("utf-8")]);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&quiet.stdout).trim(), ticket);
}

#[test]
fn mode_without_a_file_is_refused() {
    let a = Agent::start();
    let out = a.gtc(&["get", "dot1-sha256-00", "-o", "-", "--mode", "644"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("give -o FILE"), "{said}");
}

#[test]
fn an_object_is_not_written_to_a_terminal_unless_asked() {
    let Some(script) = dot_tests::find_tool("script") else {
        panic!("script (util-linux) is needed to give gtc a terminal");
    };
    let a = Agent::start();
    let src = a.dir.join("bin");
    std::fs::write(&src, random_bytes(5000, 2)).expect("write");
    let ticket = a.put_ticket(&src);
    let gtc = dot_tests::gtc_bin();
    let run = |extra: &str| {
        let mut cmd = std::process::Command::new(&script);
        cmd.args([
            "-qec",
            &format!("{} get {ticket} {extra}", gtc.display()),
            "/dev/null",
        ])
        .env("GTC_SOCKET", a.socket());
        dot_tests::output_within(cmd, dot_tests::COMMAND_LIMIT)
    };
    let refused = run("");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(
        said.contains("not writing an object to a terminal"),
        "{said}"
    );
    let forced = run("-o -");
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stdout)
    );
    assert!(forced.stdout.len() >= 5000, "{} bytes", forced.stdout.len());
}
