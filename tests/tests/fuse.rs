//! The FUSE namespace, mounted for real by real agents: legacy tools read
//! objects by ticket, write new ones under `put/`, and nothing hangs.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dot_tests::peer::{Behaviour, PeerDouble};
use dot_tests::{
    Agent, COMMAND_LIMIT, output_within, random_bytes, require_fuse, same_file, sparse_random_file,
};

fn sh(cmd: &str) -> Vec<u8> {
    let mut c = Command::new("sh");
    c.args(["-c", cmd]);
    let out = output_within(c, COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn chunks_served(a: &Agent) -> u64 {
    a.status()["peers"]["chunks_served"]
        .as_u64()
        .expect("chunks_served")
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn legacy_tools_read_an_object_by_ticket() {
    require_fuse("legacy_tools_read_an_object_by_ticket");
    let a = Agent::start();
    let b = Agent::start_mounted(&[]);
    let data = random_bytes(5_000_000, 71);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let put = a.put(&src);
    let ticket = put["ticket"].as_str().expect("ticket");
    let oid = put["oid"].as_str().expect("oid");
    let by_ticket = b.mnt().join(ticket);
    let p = by_ticket.to_str().expect("utf-8");
    // Size and read-only permissions before a byte is read.
    let meta = std::fs::metadata(&by_ticket).expect("stat");
    assert_eq!(meta.len(), data.len() as u64);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    }
    // dd at scattered offsets first (cold), then the whole thing.
    for (skip, count) in [(4_000_000u64, 3), (17, 1), (2_500_000, 5)] {
        let got = sh(&format!(
            "dd if='{p}' bs=1000 skip={} count={count} status=none",
            skip / 1000
        ));
        let at = (skip / 1000 * 1000) as usize;
        assert!(got == data[at..at + count * 1000], "dd at {skip}");
    }
    let sum = String::from_utf8(sh(&format!("sha256sum '{p}'"))).expect("utf-8");
    assert!(
        sum.starts_with(oid.trim_start_matches("dot1-sha256-")),
        "{sum}"
    );
    assert!(sh(&format!("cat '{p}'")) == data);
    let copy = b.dir.join("copy");
    sh(&format!("cp '{p}' '{}'", copy.display()));
    assert!(same_file(&copy, &src));
    // The same object by OID, and listed once complete.
    assert!(std::fs::read(b.mnt().join(oid)).expect("by oid") == data);
    b.wait_status("B to finish", Duration::from_secs(60), |s| {
        s["complete"].as_u64() == Some(1)
    });
    let listed: Vec<String> = std::fs::read_dir(b.mnt())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(listed.contains(&oid.to_owned()), "{listed:?}");
    // Not a ticket nor an OID: ENOENT at once, no network.
    let t = Instant::now();
    let err = std::fs::metadata(b.mnt().join("README.txt")).expect_err("garbage name");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(t.elapsed() < Duration::from_secs(1));
    let err = std::fs::metadata(b.mnt().join("dot1-sha256-00")).expect_err("bad oid");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    // Objects are read-only.
    assert!(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&by_ticket)
            .is_err()
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn an_object_can_be_mapped_into_memory() {
    require_fuse("an_object_can_be_mapped_into_memory");
    let a = Agent::start();
    let b = Agent::start_mounted(&[]);
    let data = random_bytes(3_000_000, 72);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    let f = std::fs::File::open(b.mnt().join(&ticket)).expect("open");
    let len = data.len();
    // SAFETY: a read-only private mapping of an open file of `len` bytes,
    // read only within bounds and unmapped before `f` closes.
    unsafe {
        use std::os::fd::AsRawFd;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap failed");
        let mapped = std::slice::from_raw_parts(p.cast::<u8>(), len);
        // Touch the end first, then compare everything.
        assert_eq!(mapped[len - 1], data[len - 1]);
        let same = mapped == &data[..];
        libc::munmap(p, len);
        assert!(same, "the mapping differs from the object");
    }
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn sixteen_readers_of_a_cold_object_fetch_each_chunk_once() {
    require_fuse("sixteen_readers_of_a_cold_object_fetch_each_chunk_once");
    let a = Agent::start();
    let b = Agent::start_mounted(&[]);
    let data = random_bytes(12_000_000, 73);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let put = a.put(&src);
    let chunks = put["chunks"].as_u64().expect("chunks");
    let path = b.mnt().join(put["ticket"].as_str().expect("ticket"));
    let readers: Vec<_> = (0..16)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::File::open(&path).expect("open");
                // Start at different places, then read it all.
                let start = (i as u64 * 700_001) % 12_000_000;
                f.seek(SeekFrom::Start(start)).expect("seek");
                let mut tail = Vec::new();
                f.read_to_end(&mut tail).expect("read tail");
                let mut head = vec![0u8; start as usize];
                f.read_exact_at(&mut head, 0).expect("read head");
                head.extend_from_slice(&tail);
                head
            })
        })
        .collect();
    for r in readers {
        assert!(
            r.join().expect("reader") == data,
            "a reader got wrong bytes"
        );
    }
    assert_eq!(
        chunks_served(&a),
        chunks,
        "some chunk was fetched more than once (or not at all)"
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn a_random_read_of_a_cold_gigabyte_fetches_about_one_chunk() {
    require_fuse("a_random_read_of_a_cold_gigabyte_fetches_about_one_chunk");
    let a = Agent::start();
    let b = Agent::start_mounted(&[]);
    let src = a.dir.join("big");
    sparse_random_file(&src, 1 << 30, 1 << 20);
    let ticket = a.put_ticket(&src);
    let f = std::fs::File::open(b.mnt().join(&ticket)).expect("open");
    let at = (700u64 << 20) + 4096 * 3;
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, at).expect("read");
    let mut want = vec![0u8; 4096];
    std::fs::File::open(&src)
        .expect("open src")
        .read_exact_at(&mut want, at)
        .expect("read src");
    assert!(buf == want);
    let served = chunks_served(&a);
    assert!(
        (1..=4).contains(&served),
        "{served} chunks fetched for one 4 KiB read"
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn a_read_whose_source_dies_or_stalls_fails_within_the_timeout() {
    require_fuse("a_read_whose_source_dies_or_stalls_fails_within_the_timeout");
    let b = Agent::start_mounted(&["--read-timeout", "3"]);
    let data = random_bytes(4_000_000, 74);
    // A source that answers descriptors but never a chunk.
    let stalled = PeerDouble::start(
        &[&data],
        Behaviour {
            delay: Duration::from_secs(3600),
            ..Behaviour::default()
        },
    );
    let oid = stalled.oids[0];
    let ticket = dot_store::Ticket::new(
        oid,
        Some(dot_store::Token([1; 16])),
        None,
        vec![stalled.hint().parse().expect("hint")],
    );
    let f = std::fs::File::open(b.mnt().join(ticket.to_string())).expect("open");
    let t = Instant::now();
    let mut buf = vec![0u8; 4096];
    let err = f.read_exact_at(&mut buf, 0).expect_err("no bytes can come");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(15),
        "EIO after {waited:?} (timeout 3 s)"
    );
    // A slow source killed in the middle of a read: EIO, well before the
    // timeout would end it.
    let slow = PeerDouble::start(
        &[&data],
        Behaviour {
            delay: Duration::from_millis(50),
            ..Behaviour::default()
        },
    );
    let ticket = dot_store::Ticket::new(
        oid,
        Some(dot_store::Token([1; 16])),
        None,
        vec![slow.hint().parse().expect("hint")],
    );
    let path = b.mnt().join(ticket.to_string());
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let r = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut all));
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    drop(slow);
    let (r, ended) = reader.join().expect("reader");
    let err = r.expect_err("the source died");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        ended.duration_since(killed) < Duration::from_secs(10),
        "EIO came {:?} after the source died",
        ended.duration_since(killed)
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn a_file_copied_into_put_is_read_through_another_agents_mount() {
    require_fuse("a_file_copied_into_put_is_read_through_another_agents_mount");
    let a = Agent::start_mounted(&[]);
    let b = Agent::start_mounted(&[]);
    let data = random_bytes(2_000_000, 75);
    let src = a.dir.join("report.bin");
    std::fs::write(&src, &data).expect("write");
    let dst = a.mnt().join("put").join("report.bin");
    sh(&format!("cp '{}' '{}'", src.display(), dst.display()));
    let ticket = xattr(&dst, "user.dot.ticket");
    let oid = xattr(&dst, "user.dot.oid");
    assert!(ticket.starts_with("dot1."), "{ticket}");
    assert!(std::fs::read(&dst).expect("read back") == data);
    assert!(std::fs::read(a.mnt().join(&oid)).expect("by oid") == data);
    assert!(std::fs::read(b.mnt().join(&ticket)).expect("through B") == data);
    // Shell redirections, rename and unlink behave like files.
    let note = a.mnt().join("put").join("note");
    sh(&format!("echo first > '{}'", note.display()));
    let first = xattr(&note, "user.dot.oid");
    // Appending to a put file makes a new version of it.
    sh(&format!("echo second >> '{}'", note.display()));
    assert_eq!(std::fs::read(&note).expect("note"), b"first\nsecond\n");
    assert_ne!(xattr(&note, "user.dot.oid"), first);
    assert!(std::fs::read(a.mnt().join(&first)).expect("old version") == b"first\n");
    let renamed = a.mnt().join("put").join("note2");
    std::fs::rename(&note, &renamed).expect("rename");
    assert!(!note.exists());
    assert!(xattr(&renamed, "user.dot.oid").starts_with("dot1-sha256-"));
    std::fs::remove_file(&renamed).expect("unlink");
    let names: Vec<_> = std::fs::read_dir(a.mnt().join("put"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("report.bin")]);
}

fn xattr(path: &Path, name: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 512];
    // SAFETY: valid C strings and a buffer of the length given.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        len >= 0,
        "getxattr {name}: {}",
        std::io::Error::last_os_error()
    );
    buf.truncate(len as usize);
    String::from_utf8(buf).expect("utf-8")
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn unmounting_with_open_files_keeps_the_store_and_a_stale_mount_is_replaced() {
    require_fuse("unmounting_with_open_files_keeps_the_store_and_a_stale_mount_is_replaced");
    let a = Agent::start();
    let mut b = Agent::start_mounted(&[]);
    let data = random_bytes(3_000_000, 76);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    let path = b.mnt().join(&ticket);
    assert!(std::fs::read(&path).expect("read") == data);
    b.wait_status("B to finish", Duration::from_secs(60), |s| {
        s["complete"].as_u64() == Some(1)
    });
    // Stop B with the object open (and a half-written put file).
    let open = std::fs::File::open(&path).expect("open");
    let mut draft = std::fs::File::create(b.mnt().join("put").join("half")).expect("create");
    std::io::Write::write_all(&mut draft, b"half").expect("write");
    assert!(b.stop().success(), "agent did not stop cleanly");
    drop(open);
    drop(draft);
    b.restart();
    let out = b.gtc(&["get", &ticket, "--json"]);
    assert!(out.status.success());
    assert!(out.stdout == data, "the store lost or changed the object");
    let st: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("{}"),
    )
    .expect("json");
    assert_eq!(
        st["from_peers"].as_u64(),
        Some(0),
        "refetched after restart"
    );
    // Killed outright: the next start replaces the dead mount.
    b.kill();
    assert!(
        std::fs::read_dir(b.mnt()).is_err(),
        "the dead mount answered"
    );
    b.restart();
    assert!(std::fs::read(b.mnt().join(&ticket)).expect("after restart") == data);
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn a_bare_oid_resolves_through_configured_peers_open_to_this_host() {
    require_fuse("a_bare_oid_resolves_through_configured_peers_open_to_this_host");
    // A lets 127.0.0.1 fetch by OID alone; C keeps its tokens.
    let a = Agent::start_with(&["--open-to", "127.0.0.0/8"]);
    let c = Agent::start();
    let (a_addr, c_addr) = (a.hint(), c.hint());
    let peer_a = a_addr.trim_start_matches("gtc://");
    let peer_c = c_addr.trim_start_matches("gtc://");
    let b = Agent::start_mounted(&["--peer", peer_c, "--peer", peer_a]);
    let data = random_bytes(3_000_000, 91);
    let src = a.dir.join("open");
    std::fs::write(&src, &data).expect("write");
    let oid = a.put(&src)["oid"].as_str().expect("oid").to_owned();
    let closed = c.dir.join("closed");
    std::fs::write(&closed, random_bytes(100_000, 92)).expect("write");
    let closed_oid = c.put(&closed)["oid"].as_str().expect("oid").to_owned();

    // B never saw a ticket for either object.
    let read = std::fs::read(b.mnt().join(&oid)).expect("a bare OID open to B");
    assert!(read == data, "bytes through a configured peer differ");
    let err = std::fs::metadata(b.mnt().join(&closed_oid)).expect_err("C wants its token");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert!(
        c.status()["peers"]["refused"].as_u64() >= Some(1),
        "C was not asked, or served without the token"
    );
    let unknown = format!("dot1-sha256-{}", "ab".repeat(32));
    let err = std::fs::metadata(b.mnt().join(unknown)).expect_err("nobody has it");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");

    // `gtc get OID` asks the same peers.
    let second = random_bytes(200_000, 93);
    std::fs::write(&src, &second).expect("write");
    let oid2 = a.put(&src)["oid"].as_str().expect("oid").to_owned();
    let out = b.dir.join("got");
    b.gtc_ok(&["get", &oid2, "-o", out.to_str().expect("utf-8")]);
    assert!(std::fs::read(&out).expect("read") == second);

    // An agent with no configured peers knows nothing of it.
    let lone = Agent::start_mounted(&[]);
    let err = std::fs::metadata(lone.mnt().join(&oid)).expect_err("no peers");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
}

/// The forged-ticket attack: someone makes B look up a ticket naming X
/// with their own descriptor list (and its digest) and their own server,
/// which serves other bytes as X. Readers of X by bare OID then get no
/// byte of those (the bytes are not proven to be X), and a genuine
/// ticket's reader does not join the forged fetch but fetches X on its own.
#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn a_forged_ticket_gets_no_byte_to_a_bare_oid_reader_and_the_genuine_ticket_still_works() {
    require_fuse(
        "a_forged_ticket_gets_no_byte_to_a_bare_oid_reader_and_the_genuine_ticket_still_works",
    );
    let a = Agent::start();
    let genuine = random_bytes(3_000_000, 95);
    let src = a.dir.join("x");
    std::fs::write(&src, &genuine).expect("write");
    let put = a.put(&src);
    let oid: dot_store::Oid = put["oid"].as_str().expect("oid").parse().expect("OID");
    let ticket = put["ticket"].as_str().expect("ticket").to_owned();
    // The forger serves Y (true chunks of Y, Y's true list) as X.
    let fake = random_bytes(3_000_000, 96);
    let y = dot_store::Oid::of(&fake);
    let forger = PeerDouble::start(
        &[&fake],
        Behaviour {
            alias: Some((oid, y)),
            ..Behaviour::default()
        },
    );
    let forged = dot_store::Ticket::new(
        oid,
        Some(dot_store::Token([7; 16])),
        Some(forger.list_digests[0]),
        vec![forger.hint().parse().expect("hint")],
    )
    .to_string();
    let b = Agent::start_mounted(&[]);
    // Looked up (and read a little) through the mount: the forged fetch
    // runs, chunk by chunk "verified" against the forger's list.
    let mut f = std::fs::File::open(b.mnt().join(&forged)).expect("forged ticket resolves");
    let mut first = vec![0u8; 4096];
    f.read_exact(&mut first)
        .expect("a read through the forged ticket");
    // A bare-OID reader of X gets nothing of the forger's bytes.
    match std::fs::read(b.mnt().join(oid.to_string())) {
        Ok(got) => assert!(got == genuine, "a bare-OID read got bytes that are not X"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    // The genuine ticket's get succeeds, through the API and the mount.
    let out = b.dir.join("genuine");
    b.gtc_ok(&["get", &ticket, "-o", out.to_str().expect("utf-8")]);
    assert!(
        std::fs::read(&out).expect("read") == genuine,
        "the genuine get differs"
    );
    let through_mount = std::fs::read(b.mnt().join(&ticket)).expect("genuine ticket");
    assert!(through_mount == genuine);
    // Now that X is complete here, a bare-OID read is X.
    assert!(std::fs::read(b.mnt().join(oid.to_string())).expect("bare") == genuine);
    drop(f);
}
