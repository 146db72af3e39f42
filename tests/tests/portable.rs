//! Portable storage end to end: USB keys (loop-device filesystems,
//! `dot_tests::key`) carrying objects between real agents. A key inserted
//! mid-transfer over a slow link finishes it early; a key pulled mid-read
//! costs the transfer nothing; a corrupt chunk file is never delivered; a
//! key alone serves a complete offline read through FUSE; a key exported
//! by one agent is read by another. Hostile keys are in `hostile_keys.rs`.
//!
//! Every agent watches the mount table of the root mount namespace, so an
//! agent also sees the keys of the other tests running beside it: each test
//! uses its own object (its own seed), so another test's key holds nothing
//! it wants.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use dot_tests::key::{
    Fs, Key, attached_count, chunk_files, corrupt_chunk, detached_count, thin_out, wait_attached,
    wait_detached,
};
use dot_tests::netbed::{NetBed, Rate};
use dot_tests::{
    Agent, assert_ok, get_within, gtc_bin, output_within, put_bytes, random_bytes, require_fuse,
    require_loop, require_netns, same_file,
};

/// The timing test (`a_key_inserted...`) runs alone (write lock); the
/// others may share the machine with each other (read lock).
static MACHINE: RwLock<()> = RwLock::new(());

/// How long one get may take before the test fails.
const GET_LIMIT: Duration = Duration::from_secs(60);

/// How long an agent may take to see a key mounted or pulled (the watcher
/// promises about a second).
const SEE_LIMIT: Duration = Duration::from_secs(5);

/// Size of the key images, MiB.
const KEY_MB: u64 = 64;

/// Mounts `key` at its folder `at`, has `agent` export `target` to it, and
/// unmounts it cleanly; returns the mount point used.
fn export(agent: &Agent, key: &Key, target: &str, at: &str) -> PathBuf {
    let at = key.mount_point(at);
    key.mount(&at);
    let out = agent.gtc(&["device", "export", target, at.to_str().expect("utf-8 path")]);
    assert_ok("gtc device export", &out);
    let descriptor = at.join(".dot").join("objects");
    assert!(
        std::fs::read_dir(&descriptor).is_ok_and(|mut d| d.next().is_some()),
        "no descriptor file under {} after the export",
        descriptor.display()
    );
    key.unmount();
    at
}

/// The receiver's transfer of `oid` in `status`, if it is in flight.
fn transfer<'a>(status: &'a serde_json::Value, oid: &str) -> Option<&'a serde_json::Value> {
    status["transfers"]
        .as_array()?
        .iter()
        .find(|t| t["oid"].as_str() == Some(oid))
}

fn counter(t: Option<&serde_json::Value>, k: &str) -> u64 {
    t.and_then(|t| t[k].as_u64()).unwrap_or(0)
}

/// What was seen while a get ran after a key went in.
#[derive(Debug, Default)]
struct Seen {
    /// Largest `from_devices` the receiver's status showed.
    from_devices: u64,
    /// `from_peers` at that moment.
    from_peers: u64,
    /// When the receiver's log first showed the key attached, from the
    /// mount.
    attached_after: Option<Duration>,
}

/// Polls `agent`'s status and log until `done()` (the get ended).
fn watch(agent: &Agent, oid: &str, mount: &Path, before: usize, done: impl Fn() -> bool) -> Seen {
    let t0 = Instant::now();
    let mut seen = Seen::default();
    while !done() {
        let st = agent.status();
        let t = transfer(&st, oid);
        let dev = counter(t, "from_devices");
        if dev > seen.from_devices {
            seen.from_devices = dev;
            seen.from_peers = counter(t, "from_peers");
        }
        if seen.attached_after.is_none() && attached_count(agent, mount) > before {
            seen.attached_after = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root, ip, tc and nsenter and root and loop devices: runs in CI, or as root"
)]
fn a_key_inserted_mid_transfer_over_a_slow_link_finishes_it_early() {
    let test = "a_key_inserted_mid_transfer_over_a_slow_link_finishes_it_early";
    require_netns(test);
    require_loop(test);
    let _alone = MACHINE.write().unwrap_or_else(|e| e.into_inner());
    let rate = Rate::mbit(4);
    let key = Key::new(Fs::Ext4, KEY_MB);
    let bed = NetBed::with_advertised([rate, rate], &[1]);
    let size = 16u64 << 20;
    let (src, oid, ticket) = put_bytes(&bed.sender, "obj", &random_bytes(size as usize, 501));
    export(&bed.sender, &key, &ticket, "export");
    let slot = key.mount_point("slot");
    let (tx0, served0) = (bed.tx_bytes(1), bed.sender.bytes_served());
    let out = bed.receiver.dir.join("obj.out");
    let (got, took, seen, arrived, insert_after, from_insert) = std::thread::scope(|s| {
        let getter = s.spawn(|| {
            let r = get_within(&bed.receiver, &ticket, &out, GET_LIMIT);
            (r, Instant::now())
        });
        // Some bytes over the link first: the key goes into a transfer
        // that is running.
        bed.receiver
            .wait_status("the first 256 KiB", GET_LIMIT, |st| {
                counter(transfer(st, &oid), "from_peers") >= 256 << 10 || getter.is_finished()
            });
        let arrived = counter(transfer(&bed.receiver.status(), &oid), "from_peers");
        let before = attached_count(&bed.receiver, &slot);
        let inserted = Instant::now();
        key.mount(&slot);
        let insert_after = inserted.elapsed();
        let seen = watch(&bed.receiver, &oid, &slot, before, || getter.is_finished());
        let ((got, took), ended) = getter
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (
            got,
            took,
            seen,
            arrived,
            insert_after,
            ended.duration_since(inserted),
        )
    });
    assert_ok("get", &got);
    assert!(same_file(&src, &out), "the copy differs");
    let link = bed.tx_bytes(1) - tx0;
    let served = bed.sender.bytes_served() - served0;
    let alone = rate.seconds_for(size);
    eprintln!(
        "16 MiB over {rate}: {took:?} with a key inserted after {arrived} bytes (mount took \
         {insert_after:?}; seen attached {:?} after; the get ended {from_insert:?} after the \
         mount); the link alone: {alone:.1} s; link 1 sent {link} bytes, the sender served \
         {served} bytes; status showed from_devices {} with from_peers {}",
        seen.attached_after, seen.from_devices, seen.from_peers
    );
    assert!(
        took.as_secs_f64() < alone * 0.5,
        "with the key the get took {took:?}, the link alone needs {alone:.1} s"
    );
    // What the link did not carry came from the key.
    assert!(
        link < size / 2,
        "link 1 carried {link} bytes of a {size}-byte object"
    );
    wait_attached(&bed.receiver, &slot, 0, SEE_LIMIT);
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root, ip, tc and nsenter and root and loop devices: runs in CI, or as root"
)]
fn a_key_pulled_mid_transfer_does_not_fail_it() {
    let test = "a_key_pulled_mid_transfer_does_not_fail_it";
    require_netns(test);
    require_loop(test);
    let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
    let rate = Rate::mbit(16);
    let key = Key::new(Fs::Ext4, KEY_MB);
    let bed = NetBed::with_advertised([rate, rate], &[1]);
    let size = 8u64 << 20;
    let (src, oid, ticket) = put_bytes(&bed.sender, "obj", &random_bytes(size as usize, 502));
    // The key holds a third of the object's chunks, spread over it.
    let at = key.mount_point("export");
    key.mount(&at);
    assert_ok(
        "gtc device export",
        &bed.sender
            .gtc(&["device", "export", &ticket, at.to_str().expect("utf-8")]),
    );
    let total = chunk_files(&at).len();
    let kept = thin_out(&at, 3);
    key.unmount();
    let slot = key.mount_point("slot");
    let tx0 = bed.tx_bytes(1);
    let out = bed.receiver.dir.join("obj.out");
    let (got, took, from_devices) = std::thread::scope(|s| {
        let getter = s.spawn(|| get_within(&bed.receiver, &ticket, &out, GET_LIMIT));
        bed.receiver.wait_status("the first MiB", GET_LIMIT, |st| {
            counter(transfer(st, &oid), "from_peers") >= 1 << 20 || getter.is_finished()
        });
        let before = attached_count(&bed.receiver, &slot);
        key.mount(&slot);
        // Pulled the moment the receiver attaches it: while it reads.
        wait_attached(&bed.receiver, &slot, before, SEE_LIMIT);
        key.yank();
        let from_devices = counter(transfer(&bed.receiver.status(), &oid), "from_devices");
        let (got, took) = getter
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (got, took, from_devices)
    });
    assert_ok("get with the key pulled", &got);
    assert!(same_file(&src, &out), "the copy differs");
    wait_detached(&bed.receiver, &slot, 0, SEE_LIMIT);
    // Logged once each, however often the watcher looked again.
    assert_eq!(
        attached_count(&bed.receiver, &slot),
        1,
        "attach logged once"
    );
    assert_eq!(
        detached_count(&bed.receiver, &slot),
        1,
        "detach logged once"
    );
    let link = bed.tx_bytes(1) - tx0;
    eprintln!(
        "8 MiB over {rate}: {took:?}; the key held {kept} bytes ({} of {total} chunk files) \
         and was pulled when attached (status then: {from_devices} bytes from devices); link 1 \
         sent {link} bytes",
        total.div_ceil(3)
    );
    // Whatever the key did not deliver came over the link.
    assert!(
        link >= size - kept,
        "link 1 carried {link} bytes, the key held only {kept} of {size}"
    );
    assert!(
        took < Duration::from_secs_f64(rate.seconds_for(size) + 10.0),
        "the get took {took:?}"
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn a_corrupt_chunk_file_on_a_key_is_never_delivered() {
    let test = "a_corrupt_chunk_file_on_a_key_is_never_delivered";
    require_loop(test);
    let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
    let key = Key::new(Fs::Ext4, KEY_MB);
    let sender = Agent::start();
    let size = 8u64 << 20;
    let (src, oid, ticket) = put_bytes(&sender, "obj", &random_bytes(size as usize, 503));
    let at = key.mount_point("export");
    key.mount(&at);
    assert_ok(
        "gtc device export",
        &sender.gtc(&["device", "export", &ticket, at.to_str().expect("utf-8")]),
    );
    let (bad, bad_len) = corrupt_chunk(&at);
    key.unmount();

    // With the network: the key's good chunks and the sender's copy of the
    // bad one make the object.
    let receiver = Agent::start();
    let slot = key.mount_point("slot");
    key.mount(&slot);
    wait_attached(&receiver, &slot, 0, SEE_LIMIT);
    let out = receiver.dir.join("obj.out");
    let (got, took) = get_within(&receiver, &ticket, &out, GET_LIMIT);
    assert_ok("get with a corrupt chunk on the key", &got);
    assert!(same_file(&src, &out), "the copy differs");
    let served = sender.bytes_served();
    let log = std::fs::read_to_string(receiver.log_path()).expect("log");
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("corrupt chunk file ignored"))
        .collect();
    eprintln!(
        "8 MiB, {} corrupt ({bad_len} bytes): intact in {took:?}; the sender served {served} \
         bytes; the receiver logged {} refusals, first: {:?}",
        bad.display(),
        refusals.len(),
        refusals.first()
    );
    let name = bad.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        refusals.iter().any(|l| l.contains(name)),
        "the receiver's log does not name the corrupt chunk file {name}"
    );
    assert!(
        served >= bad_len,
        "the sender served {served} bytes, the corrupt chunk alone is {bad_len}"
    );
    assert!(
        served < size,
        "the sender served {served} bytes: nothing came from the key"
    );

    // Without the network: a clear error, no wrong byte.
    let mut sender = sender;
    sender.stop();
    for target in [oid.as_str(), ticket.as_str()] {
        let offline = Agent::start();
        wait_attached(&offline, &slot, 0, SEE_LIMIT);
        let out = offline.dir.join("offline.out");
        let (got, took) = get_within(&offline, target, &out, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&got.stderr);
        let kind = if target == oid { "OID" } else { "ticket" };
        eprintln!(
            "offline get by {kind}, corrupt chunk on the key: {} after {took:?}: {}",
            got.status,
            err.trim()
        );
        assert!(
            !got.status.success(),
            "the offline get by {kind} succeeded with a corrupt chunk on the key"
        );
        assert!(
            err.contains("corrupt") && err.contains(name),
            "the offline get by {kind} failed without naming the corrupt chunk file: {err}"
        );
        assert!(
            took < Duration::from_secs(10),
            "the offline get by {kind} took {took:?} to fail"
        );
        // Whatever it wrote before failing is the object's bytes.
        if let Ok(part) = std::fs::read(&out) {
            let whole = std::fs::read(&src).expect("source");
            assert!(
                part.iter().zip(&whole).all(|(a, b)| a == b || *a == 0),
                "the offline get by {kind} wrote bytes that are not the object's"
            );
        }
    }
}

/// The filesystem for the offline test: vfat, what keys come with, unless
/// the kernel cannot mount it (then ext4, said loudly).
fn vfat_or_ext4(test: &str) -> Fs {
    match Fs::Vfat.unsupported() {
        None => Fs::Vfat,
        Some(why) => {
            eprintln!("!!! {test}: runs on ext4 instead of vfat: {why} !!!");
            Fs::Ext4
        }
    }
}

/// Puts `objects` on a new agent, exports them to `key` and stops that
/// agent (its tickets' hints then refuse connections); their tickets.
fn exported_then_offline(key: &Key, objects: &[&[u8]]) -> Vec<(String, String)> {
    let mut sender = Agent::start();
    let at = key.mount_point("export");
    key.mount(&at);
    let mut named = Vec::new();
    for (i, data) in objects.iter().enumerate() {
        let (_, oid, ticket) = put_bytes(&sender, &format!("obj{i}"), data);
        assert_ok(
            "gtc device export",
            &sender.gtc(&["device", "export", &ticket, at.to_str().expect("utf-8")]),
        );
        named.push((oid, ticket));
    }
    key.unmount();
    sender.stop();
    named
}

/// `cat PATH`: its bytes and wall time (fails the test if cat fails).
fn cat(path: &Path, what: &str) -> (Vec<u8>, Duration) {
    let mut cmd = Command::new("cat");
    cmd.arg(path);
    let t0 = Instant::now();
    let got = output_within(cmd, GET_LIMIT);
    let took = t0.elapsed();
    assert_ok(&format!("cat of {what}"), &got);
    (got.stdout, took)
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices and root and /dev/fuse: runs in CI, or as root"
)]
fn a_key_alone_serves_a_complete_offline_read_through_fuse() {
    let test = "a_key_alone_serves_a_complete_offline_read_through_fuse";
    require_loop(test);
    require_fuse(test);
    let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
    let fs = vfat_or_ext4(test);
    let key = Key::new(fs, KEY_MB);
    let data = random_bytes(8 << 20, 504);
    let named = exported_then_offline(&key, &[&data]);
    let (oid, ticket) = &named[0];
    // No network source: the sender is gone.
    let reader = Agent::start_mounted(&[]);
    let slot = key.mount_point("slot");
    key.mount(&slot);
    let seen = wait_attached(&reader, &slot, 0, SEE_LIMIT);
    let (bytes, took) = cat(&reader.mnt().join(ticket), "the ticket");
    assert!(
        bytes == data,
        "{} bytes read through the mount, not the object",
        bytes.len()
    );
    eprintln!(
        "offline, {} key (attached {seen:?} after the mount): cat MOUNT/<ticket> of 8 MiB in \
         {took:?}",
        fs.name()
    );
    // Complete and checked; the bare OID now reads the same bytes.
    let (again, _) = cat(&reader.mnt().join(oid), "the OID after the ticket");
    assert!(again == data, "MOUNT/<oid> differs from MOUNT/<ticket>");
}

/// A FUSE read of `MOUNT/<oid>` for an object only a key holds (no ticket
/// known): the reader waits for the whole-object check, so its fetch brings
/// the whole object from the key, not only the chunks read.
#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices and root and /dev/fuse: runs in CI, or as root"
)]
fn a_key_alone_serves_an_offline_read_by_bare_oid_through_fuse() {
    let test = "a_key_alone_serves_an_offline_read_by_bare_oid_through_fuse";
    require_loop(test);
    require_fuse(test);
    let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
    let fs = vfat_or_ext4(test);
    let key = Key::new(fs, KEY_MB);
    let data = random_bytes(5 << 20, 505);
    let named = exported_then_offline(&key, &[&data]);
    let (oid, _) = &named[0];
    let reader = Agent::start_mounted(&["--read-timeout", "10"]);
    let slot = key.mount_point("slot");
    key.mount(&slot);
    wait_attached(&reader, &slot, 0, SEE_LIMIT);
    let (bytes, took) = cat(&reader.mnt().join(oid), "the bare OID");
    assert!(bytes == data, "{} bytes read, not the object", bytes.len());
    eprintln!(
        "offline, {} key: cat MOUNT/<oid> of 5 MiB in {took:?}",
        fs.name()
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn a_key_exported_by_one_agent_is_read_by_another() {
    let test = "a_key_exported_by_one_agent_is_read_by_another";
    require_loop(test);
    let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
    let key = Key::new(Fs::Ext4, KEY_MB);
    let mut a = Agent::start();
    let b = Agent::start();
    let size = 8u64 << 20;
    let (src, oid, ticket) = put_bytes(&a, "obj", &random_bytes(size as usize, 506));
    let on_a = export(&a, &key, &ticket, "on-a");
    a.stop();
    // Moved: ejected from A's side, plugged in at B's.
    let on_b = key.mount_point("on-b");
    key.mount(&on_b);
    wait_attached(&b, &on_b, 0, SEE_LIMIT);
    assert!(
        detached_count(&b, &on_a) >= attached_count(&b, &on_a),
        "B still holds the key at its old place {}",
        on_a.display()
    );
    let out = b.dir.join("obj.out");
    let mut cmd = Command::new(gtc_bin());
    cmd.args(["get", &ticket, "-o", out.to_str().expect("utf-8"), "--json"])
        .env("GTC_SOCKET", b.socket());
    let t0 = Instant::now();
    let got = output_within(cmd, GET_LIMIT);
    let took = t0.elapsed();
    assert_ok("get on B from the key", &got);
    assert!(same_file(&src, &out), "the copy differs");
    // --json prints one object on stdout (the data went to -o).
    let stdout = String::from_utf8_lossy(&got.stdout);
    let stats: serde_json::Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON from get --json: {stdout}"));
    eprintln!("8 MiB exported by A, read by B from the key alone in {took:?}: {stats}");
    assert_eq!(stats["from_peers"].as_u64(), Some(0), "B used the network");
    // A third agent, given only the OID (no ticket, so no source but keys).
    let c = Agent::start();
    wait_attached(&c, &on_b, 0, SEE_LIMIT);
    let out_c = c.dir.join("obj.out");
    let (got, took) = get_within(&c, &oid, &out_c, GET_LIMIT);
    assert_ok("get by bare OID on C from the key", &got);
    assert!(same_file(&src, &out_c), "C's copy differs");
    eprintln!("the same key read by C by bare OID in {took:?}");
    assert!(
        key.mounted_at()
            .is_some_and(|m| m.join(".dot/objects").join(&oid).is_file()),
        "the key has no descriptor file for {oid}"
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn in_outbox_mode_every_new_put_is_copied_to_an_outbox_key() {
    let test = "in_outbox_mode_every_new_put_is_copied_to_an_outbox_key";
    require_loop(test);
    let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
    let key = Key::new(Fs::Ext4, KEY_MB);
    let at = key.mount_point("outbox");
    key.mount(&at);
    std::fs::create_dir_all(at.join(".dot")).expect(".dot");
    std::fs::write(at.join(".dot/outbox"), b"").expect("outbox marker");
    let conf = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(conf.path(), "outbox = true\n").expect("write config");
    let a = Agent::start_with(&["--config", conf.path().to_str().expect("utf-8")]);
    wait_attached(&a, &at, 0, SEE_LIMIT);
    let data = random_bytes(3 << 20, 77);
    let (_src, oid, _ticket) = put_bytes(&a, "pushed", &data);
    // The copy runs in the background: wait for the descriptor file,
    // written last.
    let desc = at.join(".dot/objects").join(&oid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !desc.is_file() {
        assert!(
            Instant::now() < deadline,
            "the put never reached the outbox key"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another agent reads it from the key alone, by OID.
    let b = Agent::start();
    wait_attached(&b, &at, 0, SEE_LIMIT);
    let out = b.dir.join("pushed.out");
    let (got, _) = get_within(&b, &oid, &out, GET_LIMIT);
    assert_ok("get from the outbox key", &got);
    assert_eq!(std::fs::read(&out).expect("read"), data);
}

// Hostile keys (docs/security.md, "Keys"): the agent runs as root and a
// key is someone else's filesystem. Every trap points off the key, at
// folders and files that following it would find valid (a complete store,
// real chunk bytes); after each test those are byte-for-byte unchanged,
// and inotify saw nothing there opened, read, written or deleted.
