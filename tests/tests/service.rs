//! Running the agent as a system service: the unit file passes `systemd-
//! analyze verify`, and the agent tells the service manager it is ready
//! (`Type=notify`) only once it serves, and that it stops.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dot_tests::{COMMAND_LIMIT, find_tool, gtc_bin, output_within};

/// Kills the agent if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn next_message(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a message to NOTIFY_SOCKET within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_agent_says_ready_to_the_service_manager_once_it_serves_and_says_it_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify).expect("bind NOTIFY_SOCKET");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let api = dir.path().join("gtc.sock");
    let mut agent = Running(
        Command::new(gtc_bin())
            .args([
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--no-mount",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(&api)
            .env("NOTIFY_SOCKET", &notify)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the agent"),
    );
    let ready = next_message(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=serving peers on 127.0.0.1:"),
        "{ready:?}"
    );
    // Ready means serving: the local API answers at once.
    let status = output_within(
        {
            let mut c = Command::new(gtc_bin());
            c.args(["status", "--json"]).env("GTC_SOCKET", &api);
            c
        },
        COMMAND_LIMIT,
    );
    assert!(status.status.success(), "{status:?}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    assert_eq!(next_message(&sock), "STOPPING=1");
    assert!(agent.0.wait().expect("wait").success());
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let Some(analyze) = find_tool("systemd-analyze") else {
        // .ci/run installs systemd; elsewhere this is a failure to see.
        panic!("systemd-analyze is missing: install systemd to check the unit");
    };
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/gtc.service"),
    )
    .expect("packaging/gtc.service");
    assert!(unit.contains("Type=notify"), "the unit is not Type=notify");
    // The unit names the installed binary; verify checks it exists, so
    // point it at the one built here.
    let dir = tempfile::tempdir().expect("tempdir");
    let here = dir.path().join("gtc.service");
    std::fs::write(
        &here,
        unit.replace(
            "/usr/bin/gtc",
            std::fs::canonicalize(gtc_bin())
                .expect("the gtc binary")
                .to_str()
                .expect("utf-8 path"),
        ),
    )
    .expect("write");
    let out = output_within(
        {
            let mut c = Command::new(analyze);
            c.arg("verify").arg(&here);
            c
        },
        COMMAND_LIMIT,
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?} {said}",
        out.status
    );
}
