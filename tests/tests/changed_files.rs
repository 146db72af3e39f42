//! Files put by reference that change afterwards, with real agents: a file
//! only touched keeps being served (locally, to peers, through the mount)
//! and is re-checked once; a file whose bytes changed, or that moved, is
//! refused with a clear message at every reader and in the agent's log; a
//! put of it repairs it; a get falls back to another copy.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use dot_tests::{Agent, random_bytes, require_fuse};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sets `file`'s mtime one minute later than now: a new stamp, same bytes.
fn touch(file: &Path) {
    std::fs::File::options()
        .write(true)
        .open(file)
        .and_then(|f| f.set_modified(SystemTime::now() + Duration::from_secs(60)))
        .expect("touch");
}

/// Waits until the agent's log holds `needle`.
fn wait_log(a: &Agent, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(a.log_path()).unwrap_or_default();
        if log.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never logged {needle:?}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_touched_file_is_served_again_locally_and_to_peers() {
    let (a, b) = (Agent::start(), Agent::start());
    let data = random_bytes(3_000_000, 5);
    let src = a.dir.join("doc");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    touch(&src);

    // Locally: the first read after the touch hashes what it reads.
    let out = a.dir.join("local.out");
    a.gtc_ok(&["get", &ticket, "-o", path(&out)]);
    assert_eq!(std::fs::read(&out).expect("read"), data);
    // The whole file is re-checked once, and its new stamp recorded.
    wait_log(&a, "holds the same bytes; served from it again");

    // A peer gets it too, after a second touch (before any re-check).
    touch(&src);
    let got = b.dir.join("peer.out");
    b.gtc_ok(&["get", &ticket, "-o", path(&got)]);
    assert_eq!(std::fs::read(&got).expect("read"), data);

    // A put of the touched file gives the same ticket.
    assert_eq!(a.put_ticket(&src), ticket);
}

#[test]
fn a_changed_file_is_refused_clearly_and_a_put_repairs_it() {
    let (a, b) = (Agent::start(), Agent::start());
    let data = random_bytes(2_000_000, 6);
    let src = a.dir.join("doc");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);

    // Same size, other bytes (an edit in place).
    let mut edited = data.clone();
    edited[1_000_000] ^= 0xff;
    std::fs::write(&src, &edited).expect("edit");

    // A peer hears that the sender's file changed, not its path.
    let got = b.dir.join("peer.out");
    let peer = b.gtc(&["get", &ticket, "-o", path(&got)]);
    assert!(!peer.status.success(), "a peer got a changed file");
    let said = stderr(&peer);
    assert!(
        said.contains("changed, moved or was deleted since it was put"),
        "peer's message: {said}"
    );
    assert!(
        !said.contains(path(&src)),
        "the sender's path leaked: {said}"
    );
    assert!(!got.exists(), "a failed get left {}", got.display());
    // The agent says why, once, naming the file.
    wait_log(&a, &format!("{} changed since it was put", src.display()));

    // The object was forgotten: a local get no longer finds it here.
    let local = a.gtc(&["get", &ticket, "-o", path(&a.dir.join("x"))]);
    assert!(!local.status.success());

    // Putting the original bytes back (a new mtime) repairs the ticket.
    std::fs::write(&src, &data).expect("restore");
    assert_eq!(a.put_ticket(&src), ticket);
    b.gtc_ok(&["get", &ticket, "-o", path(&got)]);
    assert_eq!(std::fs::read(&got).expect("read"), data);
}

#[test]
fn a_local_reader_of_a_changed_file_gets_the_reason() {
    let a = Agent::start();
    let data = random_bytes(1_500_000, 7);
    let src = a.dir.join("doc");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    // Opened (and its handle kept) before the edit.
    a.gtc_ok(&["get", &ticket, "-o", path(&a.dir.join("first"))]);
    let mut edited = data.clone();
    edited[10] ^= 1;
    std::fs::write(&src, &edited).expect("edit");
    let out = a.gtc(&["get", &ticket, "-o", path(&a.dir.join("second"))]);
    assert_eq!(out.status.code(), Some(5), "integrity failures exit with 5");
    let said = stderr(&out);
    assert!(
        said.contains("changed since it was put") && said.contains(path(&src)),
        "local message: {said}"
    );
    assert!(!said.contains("closed the connection"), "{said}");
}

#[test]
fn a_moved_file_is_named_as_moved_and_a_get_falls_back_to_a_peer() {
    let (a, b) = (Agent::start(), Agent::start());
    // C serves what it holds to anyone on loopback, without a token.
    let c = Agent::start_with(&["--open-to", "127.0.0.1"]);
    let data = random_bytes(1_000_000, 8);
    let src = a.dir.join("doc");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    // C holds a copy.
    c.gtc_ok(&["get", &ticket, "-o", path(&c.dir.join("copy"))]);
    std::fs::rename(&src, a.dir.join("doc.moved")).expect("move");

    let out = a.gtc(&["get", &ticket, "-o", path(&a.dir.join("x"))]);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("was moved or deleted"), "{said}");

    // B asks A first (the ticket's hint), then C: it gets the object.
    let got = b.dir.join("out");
    b.gtc_ok(&[
        "get",
        &ticket,
        "--hint",
        &a.hint(),
        "--hint",
        &c.hint(),
        "-o",
        path(&got),
    ]);
    assert_eq!(std::fs::read(&got).expect("read"), data);
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn the_mount_serves_a_touched_file_and_refuses_a_changed_one() {
    require_fuse("the_mount_serves_a_touched_file_and_refuses_a_changed_one");
    let a = Agent::start_mounted(&[]);
    let data = random_bytes(2_500_000, 9);
    let src = a.dir.join("doc");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    touch(&src);
    assert_eq!(std::fs::read(a.mnt().join(&ticket)).expect("read"), data);

    // Another file, edited before any read through the mount (what the
    // kernel cached of the first is the object's bytes, rightly kept).
    let other = random_bytes(2_500_000, 10);
    let src2 = a.dir.join("doc2");
    std::fs::write(&src2, &other).expect("write");
    let ticket2 = a.put_ticket(&src2);
    let mut edited = other.clone();
    edited[2_000_000] ^= 0x55;
    std::fs::write(&src2, &edited).expect("edit");
    match std::fs::read(a.mnt().join(&ticket2)) {
        Ok(got) => panic!("a changed file was read ({} bytes)", got.len()),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    wait_log(&a, &format!("{} changed since it was put", src2.display()));
}
