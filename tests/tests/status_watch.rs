//! `gtc status --watch`: a live view of a real agent's transfers, with
//! each one's rate, again every interval; with `--json`, one object per
//! line.

use std::process::{Command, Stdio};
use std::time::Duration;

use dot_tests::peer::{Behaviour, PeerDouble};
use dot_tests::{Agent, COMMAND_LIMIT, gtc_bin, output_within, random_bytes};

#[test]
fn watch_shows_a_transfer_in_flight_with_its_rate() {
    // 8 MiB from a peer that waits 40 ms before each chunk: seconds long.
    let data = random_bytes(8 << 20, 8101);
    let slow = PeerDouble::start(
        &[&data],
        Behaviour {
            delay: Duration::from_millis(40),
            ..Behaviour::default()
        },
    );
    let oid = slow.oids[0];
    let ticket = dot_store::Ticket::new(
        oid,
        Some(dot_store::Token([1; 16])),
        Some(slow.list_digests[0]),
        vec![slow.hint().parse().expect("hint")],
    );
    let a = Agent::start();
    let out = a.dir.join("got");
    let mut get = Command::new(gtc_bin())
        .args(["get", &ticket.to_string(), "-o"])
        .arg(&out)
        .env("GTC_SOCKET", a.socket())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gtc get");
    a.wait_status("a transfer in flight", Duration::from_secs(60), |s| {
        s["transfers"].as_array().is_some_and(|t| !t.is_empty())
    });

    let mut watch = Command::new(gtc_bin());
    watch
        .args(["status", "--watch", "--interval", "0.5", "--count", "4"])
        .env("GTC_SOCKET", a.socket());
    let view = output_within(watch, COMMAND_LIMIT);
    assert!(view.status.success(), "{view:?}");
    let text = String::from_utf8_lossy(&view.stdout);
    assert_eq!(
        text.matches("transfers in flight:").count(),
        4,
        "four views:\n{text}"
    );
    // After the first view, the transfer's line carries a rate, and it
    // is not zero: chunks arrive every 40 ms.
    let rated: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&oid.to_string()) && l.contains(" at "))
        .collect();
    assert!(!rated.is_empty(), "no rate shown:\n{text}");
    assert!(
        rated
            .iter()
            .any(|l| l.contains("kB/s") || l.contains("MB/s")),
        "rates all zero:\n{text}"
    );

    let mut json = Command::new(gtc_bin());
    json.args([
        "status",
        "--watch",
        "--json",
        "--interval",
        "0.1",
        "--count",
        "3",
    ])
    .env("GTC_SOCKET", a.socket());
    let lines = output_within(json, COMMAND_LIMIT);
    assert!(lines.status.success(), "{lines:?}");
    let lines = String::from_utf8_lossy(&lines.stdout);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
        assert!(v["transfers"].is_array(), "{v}");
    }
    let _ = get.kill();
    let _ = get.wait();
}

#[test]
fn watch_refuses_an_interval_below_a_tenth_of_a_second() {
    let a = Agent::start();
    let mut cmd = Command::new(gtc_bin());
    cmd.args(["status", "--watch", "--interval", "0.001"])
        .env("GTC_SOCKET", a.socket());
    let out = output_within(cmd, COMMAND_LIMIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval"));
}
