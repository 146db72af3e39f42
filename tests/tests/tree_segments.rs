//! Folders copied in segments (`gtc put --segments`, `gtc get
//! --segments`, `gtc cp -r`), with real agents: a folder large enough for
//! several segments arrives whole (folders spanning segments keep their
//! modes and times, a read-only one too), and a segment stream that breaks
//! off, repeats, skips or lies is refused without writing over anything.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use dot_tests::folders::snapshot;
use dot_tests::{Agent, COMMAND_LIMIT, gtc_bin, output_within, random_bytes};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A folder of 1,500 small files in three folders (one read-only, one
/// spanning every segment), a few larger ones and a link: several
/// segments.
fn make_folder(root: &Path) {
    for d in ["a", "b/ro", "c"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    for i in 0..1500u64 {
        let dir = ["a", "b/ro", "c"][(i % 3) as usize];
        let f = root.join(dir).join(format!("f{i:04}"));
        std::fs::write(&f, random_bytes(1000 + (i as usize % 7) * 300, i)).expect("write");
    }
    for i in 0..3u64 {
        std::fs::write(
            root.join(format!("c/large{i}")),
            random_bytes(700_000, 100 + i),
        )
        .expect("write");
    }
    std::os::unix::fs::symlink("../a/f0000", root.join("c/link")).expect("symlink");
    for (i, d) in ["a", "b/ro", "b", "c"].iter().enumerate() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_500_000_000 + i as u64, 5);
        std::fs::File::open(root.join(d))
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
    }
    std::fs::set_permissions(root.join("b/ro"), std::fs::Permissions::from_mode(0o555))
        .expect("chmod");
}

/// Lets the test remove what it made.
fn writable(root: &Path) {
    if root.join("b/ro").exists() {
        std::fs::set_permissions(root.join("b/ro"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
}

/// The lines `gtc put --segments --json` printed for `dir` on `a`.
fn segment_lines(a: &Agent, dir: &Path) -> Vec<serde_json::Value> {
    let out = a.gtc_ok(&["put", "--json", "--segments", path(dir)]);
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// `gtc get --segments -o DEST` on `b`, `input` on its standard input.
fn get_segments(b: &Agent, input: &str, dest: &Path) -> std::process::Output {
    let lines = b.dir.join("lines");
    std::fs::write(&lines, input).expect("write lines");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!(
            "exec '{}' get --segments -o '{}' < '{}'",
            path(&gtc_bin()),
            path(dest),
            path(&lines)
        ),
    ])
    .env("GTC_SOCKET", b.socket());
    output_within(cmd, COMMAND_LIMIT)
}

fn joined(lines: &[serde_json::Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn a_folder_in_segments_arrives_whole_on_another_agent() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("src");
    make_folder(&src);
    let lines = segment_lines(&a, &src);
    let (segments, end) = lines.split_at(lines.len() - 1);
    assert!(segments.len() >= 3, "{} segments", segments.len());
    assert_eq!(end[0]["segments"], segments.len(), "{}", end[0]);
    assert_eq!(end[0]["files"], 1503, "{}", end[0]);
    for (n, s) in segments.iter().enumerate() {
        assert_eq!(s["segment"], n, "{s}");
    }
    // Each segment alone is a tree (the folders above its files in it).
    let first = segments[0]["ticket"].as_str().expect("ticket");
    b.gtc_ok(&["get", first, "-o", path(&b.dir.join("first"))]);

    let dest = b.dir.join("copy");
    let out = get_segments(&b, &joined(&lines), &dest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&dest), snapshot(&src));
    writable(&src);
    writable(&dest);
}

#[test]
fn cp_r_here_copies_in_segments_and_takes_a_file_too() {
    let a = Agent::start();
    let src = a.dir.join("src");
    make_folder(&src);
    let dest = a.dir.join("dest");
    let gtc = gtc_bin();
    let cp = |args: &[&str]| {
        let mut c = Command::new(&gtc);
        c.args(["cp", "--socket", path(&a.socket())]).args(args);
        output_within(c, COMMAND_LIMIT)
    };
    let out = cp(&["-r", path(&src), path(&dest)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&dest), snapshot(&src));
    // To a folder that exists: into it, by the source's name, as cp does;
    // once more, that copy exists and is not written over.
    let out = cp(&["-r", path(&src), path(&dest)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&dest.join("src")), snapshot(&src));
    let out = cp(&["-r", path(&src), path(&dest)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an empty folder"),
        "{out:?}"
    );
    assert_eq!(snapshot(&dest.join("src")), snapshot(&src));
    writable(&dest.join("src"));
    // -r with a file copies the file.
    let out = cp(&["-r", path(&src.join("c/large0")), path(&a.dir.join("one"))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(a.dir.join("one")).expect("read"),
        std::fs::read(src.join("c/large0")).expect("read")
    );
    writable(&src);
    writable(&dest);
}

#[test]
fn a_segment_stream_that_breaks_off_repeats_or_lies_is_refused() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("src");
    make_folder(&src);
    let lines = segment_lines(&a, &src);
    let n = lines.len() - 1;
    let file_ticket = {
        let f = a.dir.join("plain");
        std::fs::write(&f, b"not a tree").expect("write");
        a.put_ticket(&f)
    };
    let mut repeated = lines[1].clone();
    repeated["segment"] = serde_json::json!(2);
    let mut not_a_tree = lines[0].clone();
    not_a_tree["ticket"] = serde_json::json!(file_ticket);
    let cases: Vec<(&str, String, &str)> = vec![
        ("broken off", joined(&lines[..n]), "broke off"),
        ("nothing", String::new(), "broke off"),
        (
            "out of order",
            joined(&[lines[1].clone(), lines[0].clone()]),
            "came where 0 was due",
        ),
        (
            "a segment twice",
            joined(&[lines[0].clone(), lines[1].clone(), repeated]),
            "exists",
        ),
        (
            "a wrong count",
            joined(&[lines[0].clone(), lines[n].clone()]),
            "counts",
        ),
        ("not a tree", joined(&[not_a_tree]), "not a tree"),
        ("not JSON", "hello\n".to_owned(), "not JSON"),
        (
            "a huge line",
            format!("{{\"x\": \"{}\"}}\n", "y".repeat(70_000)),
            "longer than",
        ),
        (
            "lines after the end",
            format!("{}{}\n", joined(&lines), lines[0]),
            "after the segments' end",
        ),
    ];
    for (i, (what, input, says)) in cases.iter().enumerate() {
        let dest = b.dir.join(format!("dest{i}"));
        let out = get_segments(&b, input, &dest);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(err.contains(says), "{what}: {err}");
        // What was written is what the segments said: nothing over
        // another file, nothing outside the destination.
        if dest.exists() {
            for (p, (kind, _, _, _, data)) in snapshot(&dest) {
                if kind == "file" {
                    assert_eq!(
                        data,
                        std::fs::read(src.join(&p)).expect("in the source"),
                        "{what}: {}",
                        p.display()
                    );
                }
            }
            writable(&dest);
        }
    }
    writable(&src);
}
