//! Hostile USB keys end to end (loop-device filesystems, real agents): a
//! key whose `.dot` links off it, or whose entries are traps (links off the
//! key, FIFOs, a device node, a sparse descriptor file) is a failed source
//! and never a hang, is refused or repaired by an export, and is written
//! only inside in outbox mode; nothing off the keys is read, written or
//! deleted (docs/security.md, "Keys").

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dot_tests::key::{
    Fs, Key, Untouched, chunk_files, mkfifo, mknod_null, old_file, snapshot, wait_attached,
    wait_refused,
};
use dot_tests::{
    Agent, assert_ok, get_within as get, put_bytes as put, random_bytes, require_loop, same_file,
};

/// How long an agent may take to see a key mounted or pulled (the watcher
/// promises about a second).
const SEE_LIMIT: Duration = Duration::from_secs(5);

/// Size of the key images, MiB.
const KEY_MB: u64 = 64;

/// How long a get with hostile keys attached may take (from the network
/// over loopback it takes well under a second).
const HOSTILE_LIMIT: Duration = Duration::from_secs(20);

/// Two hostile keys for one object, mounted, and the folders off them that
/// their links point to.
struct Traps {
    /// Its `.dot` is a link to `outside/plain/.dot`: a complete store of
    /// the object, marked as an outbox, with a stale `tmp/w-old`.
    linked: Key,
    /// A real `.dot` whose entries are traps: `tmp` a link to
    /// `outside/tmp` (holding a two-hour-old `w-old`), the fan-out folder of
    /// chunk file 0 a link to `outside/fan` (holding that chunk's real
    /// file), chunk file 1 a link to `outside/chunk` (its real bytes),
    /// chunk file 2 a FIFO, chunk file 3 a character device (1:3, as
    /// /dev/null), the object's descriptor file a FIFO, and optionally
    /// another object's a sparse file claiming 2^24 chunks.
    trapped: Key,
    /// The trap chunk files 0 to 3 on the trapped key.
    chunk_traps: Vec<PathBuf>,
    outside: tempfile::TempDir,
}

impl Traps {
    fn linked_at(&self) -> PathBuf {
        self.linked.mounted_at().expect("mounted")
    }

    fn trapped_at(&self) -> PathBuf {
        self.trapped.mounted_at().expect("mounted")
    }

    fn outside(&self) -> &Path {
        self.outside.path()
    }

    /// The stale files off the keys that a cleanup through a link deletes.
    fn old_files(&self) -> [PathBuf; 2] {
        [
            self.outside().join("tmp/w-old"),
            self.outside().join("plain/.dot/tmp/w-old"),
        ]
    }
}

/// Builds [`Traps`] for the object of `ticket` (OID `oid`), which `agent`
/// holds: it exports it to a plain folder off the keys first (the complete
/// store and the real chunk files the traps point to). `sparse` names
/// another object whose descriptor file is sparse; `outbox` marks the
/// trapped key as an outbox.
fn traps(agent: &Agent, ticket: &str, oid: &str, sparse: Option<&str>, outbox: bool) -> Traps {
    let outside = tempfile::tempdir().expect("tempdir");
    let o = outside.path();
    let plain = o.join("plain");
    std::fs::create_dir(&plain).expect("mkdir");
    assert_ok(
        "export to a plain folder",
        &agent.gtc(&["device", "export", ticket, plain.to_str().expect("utf-8")]),
    );
    let store = plain.join(".dot");
    std::fs::write(store.join("outbox"), b"").expect("outbox marker");
    old_file(&store.join("tmp/w-old"), b"a write pulled long ago");
    // Four chunk files in four fan-out folders.
    let mut picked: Vec<PathBuf> = Vec::new();
    for f in chunk_files(&plain) {
        if !picked.iter().any(|p| p.parent() == f.parent()) {
            picked.push(f);
        }
    }
    assert!(picked.len() >= 4, "{} fan-out folders", picked.len());
    picked.truncate(4);
    let name = |f: &Path| f.file_name().expect("name").to_owned();
    let fan = |f: &Path| {
        f.parent()
            .and_then(Path::file_name)
            .expect("fan")
            .to_owned()
    };
    std::fs::create_dir(o.join("tmp")).expect("mkdir");
    old_file(&o.join("tmp/w-old"), b"someone's file, two hours old");
    std::fs::create_dir(o.join("fan")).expect("mkdir");
    std::fs::copy(&picked[0], o.join("fan").join(name(&picked[0]))).expect("copy");
    std::fs::copy(&picked[1], o.join("chunk")).expect("copy");

    let linked = Key::new(Fs::Ext4, KEY_MB);
    let at = linked.mount_point("linked");
    linked.mount(&at);
    symlink(&store, at.join(".dot")).expect("symlink");

    let trapped = Key::new(Fs::Ext4, KEY_MB);
    let at = trapped.mount_point("trapped");
    trapped.mount(&at);
    let dot = at.join(".dot");
    let chunks = dot.join("chunks");
    std::fs::create_dir_all(&chunks).expect("mkdir");
    std::fs::create_dir(dot.join("objects")).expect("mkdir");
    symlink(o.join("tmp"), dot.join("tmp")).expect("symlink");
    symlink(o.join("fan"), chunks.join(fan(&picked[0]))).expect("symlink");
    let chunk_traps: Vec<PathBuf> = picked
        .iter()
        .map(|f| chunks.join(fan(f)).join(name(f)))
        .collect();
    for f in &chunk_traps[1..] {
        std::fs::create_dir(f.parent().expect("fan")).expect("mkdir");
    }
    symlink(o.join("chunk"), &chunk_traps[1]).expect("symlink");
    mkfifo(&chunk_traps[2]);
    mknod_null(&chunk_traps[3]);
    mkfifo(&dot.join("objects").join(oid));
    if let Some(other) = sparse {
        // 604 MB of holes whose header and length agree: read as it
        // claims, it cost the agent ~1.4 GB.
        let count: u32 = 1 << 24;
        let mut head = b"DOTDESC1".to_vec();
        head.extend_from_slice(&(u64::from(count) << 16).to_le_bytes());
        head.extend_from_slice(&count.to_le_bytes());
        let path = dot.join("objects").join(other);
        std::fs::write(&path, &head).expect("write");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(20 + 36 * u64::from(count)))
            .expect("sparse");
    }
    if outbox {
        std::fs::write(dot.join("outbox"), b"").expect("outbox marker");
    }
    Traps {
        linked,
        trapped,
        chunk_traps,
        outside,
    }
}

/// Nothing off the keys changed or was touched since `before` and
/// `watch` began; the stale files there are still there.
fn assert_untouched(
    t: &Traps,
    before: &std::collections::BTreeMap<PathBuf, (String, Vec<u8>, std::time::SystemTime)>,
    watch: &mut Untouched,
) {
    let events = watch.events();
    assert!(
        events.is_empty(),
        "off the keys, inotify saw (mask path): {events:#?}"
    );
    for old in t.old_files() {
        assert!(old.is_file(), "{} was deleted", old.display());
    }
    assert!(
        snapshot(t.outside()) == *before,
        "the folders off the keys changed"
    );
}

/// The peak memory of process `pid` (VmHWM), bytes.
fn peak_memory(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        << 10
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn a_hostile_key_is_a_failed_source_never_a_hang_nor_a_read_off_the_key() {
    let test = "a_hostile_key_is_a_failed_source_never_a_hang_nor_a_read_off_the_key";
    require_loop(test);
    let sender = Agent::start();
    let x = random_bytes(2 << 20, 601);
    let y = random_bytes(1 << 20, 602);
    let (src_x, oid_x, ticket_x) = put(&sender, "x", &x);
    let (src_y, oid_y, ticket_y) = put(&sender, "y", &y);
    let t = traps(&sender, &ticket_x, &oid_x, Some(&oid_y), false);
    let receiver = Agent::start();
    wait_attached(&receiver, &t.trapped_at(), 0, SEE_LIMIT);
    wait_refused(&receiver, &t.linked_at(), SEE_LIMIT);
    let before = snapshot(t.outside());
    let mut watch = Untouched::watch(t.outside());
    let served0 = sender.bytes_served();
    // X: its descriptor file on the trapped key is a FIFO, its chunk files
    // traps, and the linked key's store (not used) holds all of it. Y: its
    // descriptor file is the sparse one.
    for (what, ticket, src) in [("x", &ticket_x, &src_x), ("y", &ticket_y, &src_y)] {
        let out = receiver.dir.join(format!("{what}.out"));
        let (got, took) = get(&receiver, ticket, &out, HOSTILE_LIMIT);
        assert_ok(&format!("get {what} with hostile keys attached"), &got);
        assert!(same_file(src, &out), "the copy of {what} differs");
        eprintln!("{what}: intact in {took:?} with the hostile keys attached");
        assert!(took < Duration::from_secs(10), "get {what} took {took:?}");
    }
    // Every byte came from the network: nothing of the links' targets
    // (the real chunks) was delivered.
    let served = sender.bytes_served() - served0;
    let size = (x.len() + y.len()) as u64;
    assert!(
        served >= size,
        "the sender served {served} of {size} bytes: the rest came off a key"
    );
    let peak = peak_memory(receiver.pid());
    eprintln!("receiver peak memory {} MB", peak >> 20);
    assert!(peak < 512 << 20, "the receiver peaked at {peak} bytes");
    assert_untouched(&t, &before, &mut watch);
    let log = std::fs::read_to_string(receiver.log_path()).expect("log");
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused") || l.contains("does not fit"))
        .collect();
    eprintln!("the receiver's refusals: {refusals:#?}");
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn exporting_to_a_hostile_key_refuses_it_or_writes_only_inside_it() {
    let test = "exporting_to_a_hostile_key_refuses_it_or_writes_only_inside_it";
    require_loop(test);
    let a = Agent::start();
    let x = random_bytes(2 << 20, 603);
    let (src, oid, ticket) = put(&a, "x", &x);
    let t = traps(&a, &ticket, &oid, None, false);
    let before = snapshot(t.outside());
    let mut watch = Untouched::watch(t.outside());
    let path = |p: PathBuf| p.to_str().expect("utf-8").to_owned();
    // The linked `.dot`: refused.
    let t0 = Instant::now();
    let out = a.gtc(&["device", "export", &ticket, &path(t.linked_at())]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "export to the linked key: {} in {:?}: {}",
        out.status,
        t0.elapsed(),
        err.lines().next().unwrap_or_default()
    );
    assert!(
        !out.status.success(),
        "the export through a linked .dot succeeded"
    );
    assert!(err.contains("symbolic link"), "{err}");
    // The trapped key: every trap replaced inside the key.
    let t0 = Instant::now();
    let out = a.gtc(&["device", "export", &ticket, &path(t.trapped_at())]);
    assert_ok("export to the trapped key", &out);
    eprintln!("export to the trapped key: done in {:?}", t0.elapsed());
    assert_untouched(&t, &before, &mut watch);
    let dot = t.trapped_at().join(".dot");
    let lstat = |p: &Path| std::fs::symlink_metadata(p).expect("lstat").file_type();
    assert!(lstat(&dot.join("tmp")).is_dir(), "tmp is not a folder");
    assert!(lstat(t.chunk_traps[0].parent().expect("fan")).is_dir());
    for f in &t.chunk_traps {
        assert!(lstat(f).is_file(), "{} is not a file", f.display());
    }
    assert!(lstat(&dot.join("objects").join(&oid)).is_file());
    // And the key serves the object alone, by bare OID.
    let b = Agent::start();
    wait_attached(&b, &t.trapped_at(), 0, SEE_LIMIT);
    let out = b.dir.join("x.out");
    let (got, _) = get(&b, &oid, &out, HOSTILE_LIMIT);
    assert_ok("get from the repaired key", &got);
    assert!(same_file(&src, &out), "the copy differs");
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn in_outbox_mode_a_hostile_key_is_written_only_inside() {
    let test = "in_outbox_mode_a_hostile_key_is_written_only_inside";
    require_loop(test);
    let x = random_bytes(2 << 20, 604);
    let t = {
        let mut helper = Agent::start();
        let (_, oid, ticket) = put(&helper, "x", &x);
        let t = traps(&helper, &ticket, &oid, None, true);
        helper.stop();
        t
    };
    let conf = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(conf.path(), "outbox = true\n").expect("write config");
    let a = Agent::start_with(&["--config", conf.path().to_str().expect("utf-8")]);
    wait_attached(&a, &t.trapped_at(), 0, SEE_LIMIT);
    wait_refused(&a, &t.linked_at(), SEE_LIMIT);
    let before = snapshot(t.outside());
    let mut watch = Untouched::watch(t.outside());
    let (_, oid, _) = put(&a, "x", &x);
    let copied = format!("device={}", t.trapped_at().display());
    let deadline = Instant::now() + HOSTILE_LIMIT;
    let line = loop {
        let log = std::fs::read_to_string(a.log_path()).expect("log");
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("outbox") && l.contains(&copied))
        {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "no outbox copy logged");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("{line}");
    assert!(line.contains("put copied to outbox"), "{line}");
    assert_untouched(&t, &before, &mut watch);
    let desc = t.trapped_at().join(".dot/objects").join(&oid);
    assert!(std::fs::symlink_metadata(&desc).expect("lstat").is_file());
}
