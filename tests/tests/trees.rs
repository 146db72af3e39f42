//! Folders as objects, with real agents over real sockets: a folder put on
//! one agent arrives whole on another (names, modes, mtimes, links, empty
//! folders), identical files cross once, a second version sends only what
//! changed, a tree's token opens only its own files, and hostile
//! manifests are refused before anything is written.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dot_store::Ticket;
use dot_store::tree::{Entry, Kind, Manifest, Mtime};
use dot_tests::folders::snapshot;
use dot_tests::{Agent, random_bytes};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn set_mtime(p: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::new(secs, 123_456_789);
    std::fs::File::open(p)
        .and_then(|f| f.set_modified(t))
        .expect("set mtime");
}

/// A tree with what trees must carry: nested and empty folders, an empty
/// file, a large one and its twin, modes, links inside and out of the
/// tree, a link to its own folder (a cycle if followed).
fn make_tree(root: &Path) -> u64 {
    let big = random_bytes(3_000_000, 11);
    std::fs::create_dir_all(root.join("src/deep/er")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    std::fs::write(root.join("src/deep/er/big.bin"), &big).expect("write");
    std::fs::write(root.join("twin.bin"), &big).expect("write");
    std::fs::write(root.join("empty.txt"), b"").expect("write");
    std::fs::write(root.join("src/run.sh"), b"#!/bin/sh\necho hi\n").expect("write");
    std::fs::write(root.join("src/notes.txt"), random_bytes(70_000, 12)).expect("write");
    std::fs::set_permissions(
        root.join("src/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .expect("chmod");
    std::fs::set_permissions(
        root.join("src/notes.txt"),
        std::fs::Permissions::from_mode(0o604),
    )
    .expect("chmod");
    symlink("deep/er/big.bin", root.join("src/inside")).expect("symlink");
    symlink("/etc/passwd", root.join("outside")).expect("symlink");
    symlink(".", root.join("src/loop")).expect("symlink");
    for (i, p) in [
        "src/deep/er/big.bin",
        "twin.bin",
        "empty.txt",
        "src/run.sh",
        "src/notes.txt",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(p), 1_600_000_000 + i as u64);
    }
    for (i, p) in ["src/deep/er", "src/deep", "src", "empty"]
        .iter()
        .enumerate()
    {
        set_mtime(&root.join(p), 1_500_000_000 + i as u64);
    }
    std::fs::set_permissions(
        root.join("src/deep"),
        std::fs::Permissions::from_mode(0o555),
    )
    .expect("chmod");
    // The unique bytes: the big file once, the rest.
    3_000_000 + 18 + 70_000
}

fn put_tree(a: &Agent, dir: &Path) -> (String, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_slice(&a.gtc_ok(&["put", "--json", path(dir)]))
        .expect("put --json is JSON");
    (v["ticket"].as_str().expect("ticket").to_owned(), v)
}

fn get_tree(b: &Agent, ticket: &str, dest: &Path) -> serde_json::Value {
    serde_json::from_slice(&b.gtc_ok(&["get", ticket, "-o", path(dest), "--json"]))
        .expect("get --json is JSON")
}

#[test]
fn a_folder_put_on_one_agent_arrives_whole_on_another() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("tree");
    let unique = make_tree(&src);
    let (ticket, put) = put_tree(&a, &src);
    assert_eq!(put["tree"]["files"], 5, "{put}");
    assert!(ticket.parse::<Ticket>().expect("a ticket").is_tree());

    let dest = b.dir.join("copy");
    let got = get_tree(&b, &ticket, &dest);
    assert_eq!(got["files"], 5, "{got}");
    assert_eq!(snapshot(&dest), snapshot(&src), "the copy differs");
    let (sm, dm) = (
        std::fs::metadata(&src).expect("stat"),
        std::fs::metadata(&dest).expect("stat"),
    );
    assert_eq!(
        (dm.mode() & 0o777, dm.mtime()),
        (sm.mode() & 0o777, sm.mtime()),
        "the root's attributes"
    );
    // Identical files cross once: the sender served the unique bytes and
    // the manifest, not the twin again.
    let served = a.bytes_served();
    assert!(
        served >= unique && served < unique + 100_000,
        "served {served}, unique {unique}"
    );

    // A get into a folder that is not empty is refused and changes nothing.
    let out = b.gtc(&["get", &ticket, "-o", path(&dest)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an empty folder"),
        "{out:?}"
    );
    // A tree's ticket without -o says what it needs.
    let out = b.gtc(&["get", &ticket]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-o DIR"),
        "{out:?}"
    );
    std::fs::set_permissions(src.join("src/deep"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(
        dest.join("src/deep"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
}

#[test]
fn a_second_version_sends_only_the_changed_chunks() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("tree");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    // Small files, which travel in the pack, and every fourth a large
    // one, an object of its own.
    for i in 0..40u64 {
        let size = if i % 4 == 0 { 1_000_000 } else { 250_000 };
        std::fs::write(src.join(format!("d/f{i:02}")), random_bytes(size, 100 + i)).expect("write");
    }
    let (v1, _) = put_tree(&a, &src);
    get_tree(&b, &v1, &b.dir.join("v1"));
    let before = a.bytes_served();
    assert!(before >= 10_000_000, "v1 sent {before}");

    // A few bytes changed inside a small file and a large one, one file
    // added, one removed.
    for f in ["d/f07", "d/f08"] {
        let f = src.join(f);
        let mut data = std::fs::read(&f).expect("read");
        data[120_000..120_010].copy_from_slice(b"0123456789");
        std::fs::write(&f, &data).expect("write");
    }
    std::fs::write(src.join("d/new"), random_bytes(50_000, 999)).expect("write");
    std::fs::remove_file(src.join("d/f30")).expect("rm");
    let (v2, _) = put_tree(&a, &src);
    assert_ne!(v1, v2);
    let got = get_tree(&b, &v2, &b.dir.join("v2"));
    assert_eq!(snapshot(&b.dir.join("v2")), snapshot(&src));
    let sent = a.bytes_served() - before;
    // The new file; f07's changed chunk in the pack (4 KiB on average, at
    // most 32 KiB; the pack's list is the manifest's, not sent again);
    // f08's changed chunk or two (64 KiB on average, at most 256 KiB
    // each); the manifest's changed chunks. Out of 17.5 MB.
    assert!(
        sent < 50_000 + 40_000 + 2 * 262_144 + 50_000,
        "the second version sent {sent} bytes: {got}"
    );
}

#[test]
fn a_trees_token_opens_only_its_own_files() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("tree");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("mine"), random_bytes(100_000, 1)).expect("write");
    let (ticket, _) = put_tree(&a, &src);
    let tree: Ticket = ticket.parse().expect("ticket");
    // Another object the sender holds, not in the tree.
    let secret = a.dir.join("secret");
    std::fs::write(&secret, random_bytes(100_000, 2)).expect("write");
    let other: Ticket = a.put_ticket(&secret).parse().expect("ticket");
    let forged = tree.member(other.oid(), other.list_digest().expect("digest"));
    let out = b.gtc(&[
        "get",
        &forged.to_string(),
        "-o",
        path(&b.dir.join("stolen")),
    ]);
    assert!(
        !out.status.success(),
        "a tree's token opened a file not in it"
    );
    assert!(!b.dir.join("stolen").exists());
    assert_eq!(a.bytes_served(), 0);
    // The tree's own file comes with the same token.
    get_tree(&b, &ticket, &b.dir.join("copy"));
    assert_eq!(
        std::fs::read(b.dir.join("copy/mine")).expect("read"),
        std::fs::read(src.join("mine")).expect("read")
    );
}

/// Puts `bytes` as a plain object on `a` (its agent checks nothing) and
/// makes a tree's ticket of it, as a hostile sender would.
fn hostile_tree(a: &Agent, name: &str, bytes: &[u8]) -> String {
    let f = a.dir.join(name);
    std::fs::write(&f, bytes).expect("write");
    let t: Ticket = a.put_ticket(&f).parse().expect("ticket");
    t.as_tree().to_string()
}

/// A varint (LEB128), as manifests code lengths and sizes.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A manifest's bytes with these entries, whatever they say (encoded by
/// hand: the encoder refuses such entries): each path coded against the
/// one before, times all zero.
fn raw_manifest(entries: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
    let mut out = b"DOT-TREE".to_vec();
    out.extend_from_slice(&[dot_store::tree::VERSION, 0]);
    out.extend_from_slice(&0o755u16.to_be_bytes());
    out.extend_from_slice(&[0; 12]);
    // No pack.
    out.extend_from_slice(&[0; 72]);
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    let mut prev: &[u8] = &[];
    for (kind, p, extra) in entries {
        out.push(*kind);
        out.extend_from_slice(&0o644u16.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        let shared = prev
            .iter()
            .zip(p.iter())
            .take_while(|(a, b)| a == b)
            .count();
        out.extend_from_slice(&varint(shared as u64));
        out.extend_from_slice(&varint((p.len() - shared) as u64));
        out.extend_from_slice(&p[shared..]);
        out.extend_from_slice(extra);
        prev = p;
    }
    out
}

#[test]
fn hostile_manifests_are_refused_before_anything_is_written() {
    let (a, b) = (Agent::start(), Agent::start());
    let file = |content: &[u8]| {
        let mut v = varint(content.len() as u64);
        v.extend_from_slice(dot_store::Oid::of(content).as_bytes());
        v.extend_from_slice(&[0; 32]);
        v
    };
    let link = |target: &[u8]| {
        let mut v = varint(target.len() as u64);
        v.extend_from_slice(target);
        v
    };
    let f = file(b"x");
    let long = vec![b'n'; 256];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot", raw_manifest(&[(2, b"../escape", &f)])),
        ("absolute", raw_manifest(&[(2, b"/tmp/escape", &f)])),
        (
            "inner dot-dot",
            raw_manifest(&[(1, b"a", &[]), (2, b"a/../../escape", &f)]),
        ),
        ("NUL", raw_manifest(&[(2, b"a\0b", &f)])),
        ("long name", raw_manifest(&[(2, &long, &f)])),
        ("duplicate", raw_manifest(&[(2, b"a", &f), (2, b"a", &f)])),
        (
            "through a link",
            raw_manifest(&[(3, b"l", &link(b"/tmp")), (2, b"l/escape", &f)]),
        ),
        ("orphan", raw_manifest(&[(2, b"nodir/x", &f)])),
        ("absurd count", {
            let mut m = raw_manifest(&[]);
            let at = m.len() - 4;
            m[at..].copy_from_slice(&u32::MAX.to_be_bytes());
            m
        }),
        ("not a manifest", b"hello, world".to_vec()),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let ticket = hostile_tree(&a, &format!("m{i}"), bytes);
        let dest = b.dir.join(format!("dest{i}"));
        let out = b.gtc(&["get", &ticket, "-o", path(&dest)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(err.contains("tree manifest"), "{what}: {err}");
        assert!(!dest.exists(), "{what}: the destination was made");
        assert!(
            !Path::new("/tmp/escape").exists() && !b.dir.join("escape").exists(),
            "{what}: wrote outside"
        );
    }
    // A manifest that is sound holds links as links, never followed: a
    // link out of the tree is made as a link and nothing is written
    // through it.
    let m = Manifest::new(
        0o755,
        Mtime::default(),
        None,
        vec![Entry {
            path: b"out".to_vec(),
            mode: 0o777,
            mtime: Mtime::default(),
            kind: Kind::Symlink {
                target: b"/tmp".to_vec(),
            },
        }],
        Vec::new(),
    )
    .expect("manifest");
    let ticket = hostile_tree(&a, "sound", &m.encode());
    let dest = b.dir.join("sound");
    b.gtc_ok(&["get", &ticket, "-o", path(&dest)]);
    assert_eq!(
        std::fs::read_link(dest.join("out")).expect("a link"),
        Path::new("/tmp")
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse (runs in CI, or as root)"
)]
fn a_tree_is_a_folder_under_the_mount_listed_from_its_manifest_alone() {
    dot_tests::require_fuse("a_tree_is_a_folder_under_the_mount_listed_from_its_manifest_alone");
    let a = Agent::start();
    let b = Agent::start_mounted(&[]);
    let src = a.dir.join("tree");
    make_tree(&src);
    let (ticket, _) = put_tree(&a, &src);
    let under = b.mnt().join(&ticket);

    // Listing and stat of every entry fetch the manifest and nothing else.
    let listed = {
        let mut names: Vec<PathBuf> = Vec::new();
        let mut todo = vec![under.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir under the mount") {
                let p = e.expect("entry").path();
                let m = std::fs::symlink_metadata(&p).expect("lstat under the mount");
                if m.is_dir() {
                    todo.push(p.clone());
                }
                names.push(p.strip_prefix(&under).expect("beneath").to_path_buf());
            }
        }
        names.sort();
        names
    };
    let want: Vec<PathBuf> = snapshot(&src).into_keys().collect();
    assert_eq!(listed, want);
    assert!(
        a.bytes_served() < 20_000,
        "listing fetched {} bytes",
        a.bytes_served()
    );
    // Attributes: mtimes and modes as recorded (less write bits), links as
    // links.
    let m = std::fs::metadata(under.join("src/run.sh")).expect("stat");
    assert_eq!((m.mode() & 0o777, m.len()), (0o550, 18));
    let s = std::fs::metadata(src.join("src/run.sh")).expect("stat");
    assert_eq!((m.mtime(), m.mtime_nsec()), (s.mtime(), s.mtime_nsec()));
    assert_eq!(
        std::fs::read_link(under.join("outside")).expect("link"),
        Path::new("/etc/passwd")
    );

    // One file read: its bytes come, lazily.
    assert_eq!(
        std::fs::read(under.join("src/notes.txt")).expect("read"),
        std::fs::read(src.join("src/notes.txt")).expect("read")
    );
    let served = a.bytes_served();
    assert!(
        (70_000..200_000).contains(&served),
        "one file's read fetched {served} bytes"
    );

    // Legacy tools take the whole tree: tar of the mount holds every file.
    let copy = b.dir.join("untarred");
    std::fs::create_dir_all(&copy).expect("mkdir");
    let tar = dot_tests::output_within(
        {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(format!(
                "tar cf - -C '{}' . | tar xf - -C '{}'",
                under.display(),
                copy.display()
            ));
            c
        },
        dot_tests::COMMAND_LIMIT,
    );
    assert!(
        tar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    for (p, (kind, _, mtime, _, data)) in snapshot(&src) {
        let (k2, _, m2, _, d2) = &snapshot(&copy)[&p];
        assert_eq!((&kind, mtime, &data), (k2, *m2, d2), "{}", p.display());
    }
    std::fs::set_permissions(src.join("src/deep"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(
        copy.join("src/deep"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
}

#[test]
fn cp_r_copies_a_folder_both_ways_through_the_remote_shell() {
    let (a, b) = (Agent::start(), Agent::start());
    // A stand-in for ssh: host a or b runs the command against that agent.
    let rsh = a.dir.join("rsh");
    std::fs::write(
        &rsh,
        format!(
            "#!/bin/sh\ncase ${{1#*@}} in\n a) s='{}';;\n b) s='{}';;\n *) exit 255;;\nesac\nshift\nGTC_SOCKET=$s exec sh -c \"$*\"\n",
            path(&a.socket()),
            path(&b.socket())
        ),
    )
    .expect("write rsh");
    std::fs::set_permissions(&rsh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let src = a.dir.join("photos");
    make_tree(&src);
    let gtc = dot_tests::gtc_bin();
    let cp = |args: &[&str]| {
        let mut c = std::process::Command::new(&gtc);
        c.arg("cp")
            .args(["--rsh", path(&rsh), "--remote-gtc", path(&gtc)])
            .args(args);
        dot_tests::output_within(c, dot_tests::COMMAND_LIMIT)
    };
    // Without -r a folder is refused, as cp does.
    let out = cp(&[
        &format!("a:{}", path(&src)),
        &format!("b:{}/", path(&b.dir)),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give -r"),
        "{out:?}"
    );
    // There: a's folder into b's folder, keeping its name.
    let out = cp(&[
        "-r",
        &format!("a:{}", path(&src)),
        &format!("b:{}/", path(&b.dir)),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&b.dir.join("photos")), snapshot(&src));
    // And back, from b to a local path next to the original.
    let back = a.dir.join("back");
    let mut c = std::process::Command::new(&gtc);
    c.args([
        "cp",
        "-r",
        "--socket",
        path(&a.socket()),
        "--rsh",
        path(&rsh),
        "--remote-gtc",
        path(&gtc),
    ])
    .args([&format!("b:{}", path(&b.dir.join("photos"))), path(&back)]);
    let out = dot_tests::output_within(c, dot_tests::COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&back), snapshot(&src));
    for d in [&src, &b.dir.join("photos"), &back] {
        std::fs::set_permissions(d.join("src/deep"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
}
