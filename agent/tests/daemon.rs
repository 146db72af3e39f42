//! The real `gtc` binary: an agent process started on temporary folders,
//! queried with `gtc status`, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GTC: &str = env!("CARGO_BIN_EXE_gtc");

/// A running agent, killed if the test fails before stopping it.
struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `gtc agent` and waits for its ready line; returns the peer address.
fn start(dir: &Path) -> (Agent, String) {
    let mut child = Command::new(GTC)
        .args([
            "agent",
            "--no-mount",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(dir.join("gtc.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gtc agent");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read ready line");
    assert!(
        line.starts_with("gtc agent: ready peer="),
        "unexpected first line {line:?}"
    );
    let peer = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("peer="))
        .expect("peer")
        .to_owned();
    (Agent { child }, peer)
}

fn status_json(dir: &Path) -> serde_json::Value {
    let out = Command::new(GTC)
        .args(["status", "--json"])
        .env("GTC_SOCKET", dir.join("gtc.sock"))
        .output()
        .expect("gtc status");
    assert!(
        out.status.success(),
        "gtc status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

fn sigterm_and_wait(agent: &mut Agent) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = agent.child.try_wait().expect("wait") {
            return st;
        }
        assert!(Instant::now() < deadline, "agent ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn agent_answers_status_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut agent, peer) = start(dir.path());
    let st = status_json(dir.path());
    assert_eq!(st["listen"].as_str(), Some(peer.as_str()));
    assert_eq!(st["objects"].as_u64(), Some(0));
    // The hint names the peer key the agent made at its first start.
    let hint = st["hints"][0].as_str().expect("a hint");
    let (key, addr) = hint
        .strip_prefix("gtc://")
        .and_then(|h| h.split_once('@'))
        .expect("gtc://KEY@host:port");
    assert_eq!(addr, peer);
    assert!(
        key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    let mode = std::fs::metadata(dir.path().join("data/peer.key"))
        .expect("a key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let exit = sigterm_and_wait(&mut agent);
    assert!(exit.success(), "agent exited with {exit}");
    assert!(!dir.path().join("gtc.sock").exists(), "socket left behind");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_agent_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A socket file nobody listens on, as a killed agent leaves.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("gtc.sock")).expect("bind"));
    let (mut agent, _) = start(dir.path());
    status_json(dir.path());
    // A second agent on the same socket refuses to start.
    let second = Command::new(GTC)
        .args([
            "agent",
            "--no-mount",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data2"))
        .arg("--socket")
        .arg(dir.path().join("gtc.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("second agent");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another agent is running"));
    status_json(dir.path());
    assert!(sigterm_and_wait(&mut agent).success());
}

#[test]
fn status_without_an_agent_says_how_to_start_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(GTC)
        .args(["status"])
        .env("GTC_SOCKET", dir.path().join("none.sock"))
        .output()
        .expect("gtc status");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gtc agent"));
}

#[test]
fn put_by_descriptor_prints_a_ticket_and_copies_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut agent, peer) = start(dir.path());
    let file = dir.path().join("object.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).expect("write");
    let put = |json: bool| {
        let mut cmd = Command::new(GTC);
        cmd.arg("put")
            .arg(&file)
            .env("GTC_SOCKET", dir.path().join("gtc.sock"));
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("gtc put");
        assert!(
            out.status.success(),
            "gtc put failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let text = put(false);
    let ticket: dot_store::Ticket = text
        .lines()
        .last()
        .expect("ticket line")
        .parse()
        .expect("a valid ticket");
    assert_eq!(ticket.oid(), dot_store::Oid::of(&data));
    assert!(ticket.token().is_some() && ticket.list_digest().is_some());
    assert_eq!(ticket.hints()[0].to_string(), format!("gtc://{peer}"));

    let json: serde_json::Value = serde_json::from_str(&put(true)).expect("json");
    assert_eq!(
        json["oid"].as_str(),
        Some(ticket.oid().to_string().as_str())
    );
    assert_eq!(json["size"].as_u64(), Some(data.len() as u64));
    assert!(json["chunks"].as_u64().is_some_and(|c| c > 10));
    assert_eq!(
        json["ticket"]
            .as_str()
            .map(|t| t.parse::<dot_store::Ticket>().is_ok()),
        Some(true)
    );
    assert_eq!(
        json["hashed"].as_bool(),
        Some(false),
        "second put of an unchanged file hashed it"
    );

    let st = status_json(dir.path());
    assert_eq!(st["objects"].as_u64(), Some(1));
    assert_eq!(
        st["stored_bytes"].as_u64(),
        Some(0),
        "a put by descriptor copied the file"
    );
    assert!(sigterm_and_wait(&mut agent).success());
}
