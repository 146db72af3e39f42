//! Crash safety: a child process works on a store (puts of streams and of
//! files, chunk-by-chunk fills) and is killed with SIGKILL at arbitrary
//! moments. After each kill the store must reopen, and `verify` must find
//! nothing marked present that is not right.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{bytes, describe};
use dot_store::{Oid, Store, StoreOptions};

const CHILD_ENV: &str = "DOT_STORE_CRASH_CHILD";

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// The child's work loop; runs until killed. Not a test of its own: the
/// parent starts it with `--ignored --exact`.
#[test]
#[ignore = "entry point of the crash test's child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let seed: u64 = std::env::var("DOT_STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let durable = seed % 2 == 0;
    let store = Store::open(
        &dir.join("store"),
        StoreOptions {
            durable,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let mut rng = Lcg(seed);
    let mut out = std::io::stdout();
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
    for op in 0u64.. {
        let size = 1 + rng.next(6 << 20) as usize;
        let data = bytes(size, seed * 1000 + op);
        match rng.next(3) {
            0 => {
                store.put_reader(&mut &data[..]).expect("put");
            }
            1 => {
                let src = dir.join("src").join(format!("{seed}-{op}"));
                std::fs::write(&src, &data).expect("write source");
                store.put_path(&src).expect("put file");
            }
            _ => {
                let oid = Oid::of(&data);
                let descs = describe(&data);
                store.begin_fill(oid, size as u64, &descs).expect("begin");
                let mut order: Vec<usize> = (0..descs.len()).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.next(i as u64 + 1) as usize);
                }
                for i in order {
                    let d = &descs[i];
                    store
                        .write_chunk(oid, i as u32, &data[d.offset as usize..d.end() as usize])
                        .expect("write");
                }
                store.finish(oid).expect("finish");
            }
        }
        writeln!(out, "op {op}").expect("stdout");
    }
}

#[test]
fn sigkill_at_any_moment_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("src")).expect("src dir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Lcg(42);
    let mut ops_done = 0;
    for round in 0..8u64 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("DOT_STORE_CRASH_SEED", (round + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            assert!(
                lines.read_line(&mut line).expect("read child") > 0,
                "child exited before it was ready"
            );
        }
        // Let it get into the middle of some operation, then kill it.
        std::thread::sleep(Duration::from_millis(150 + rng.next(900)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut lines, &mut rest);
        ops_done += rest.lines().filter(|l| l.contains("op ")).count();

        let store = Store::open(&dir.path().join("store"), StoreOptions::default())
            .expect("reopen after kill");
        let report = store.verify().expect("verify");
        assert!(
            report.damaged_chunks.is_empty(),
            "round {round}: unverified chunks marked present: {report:?}"
        );
        assert!(
            report.bad_objects.is_empty(),
            "round {round}: complete objects that are wrong: {report:?}"
        );
        assert!(report.changed_files.is_empty(), "round {round}: {report:?}");
        for info in store.list().expect("list") {
            if info.complete {
                let data = store
                    .read_at(info.oid, 0, info.size as usize)
                    .expect("read complete object");
                assert_eq!(Oid::of(&data), info.oid);
            }
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("store/tmp"))
                .expect("tmp")
                .count(),
            0,
            "temp files left"
        );
    }
    let store = Store::open(&dir.path().join("store"), StoreOptions::default()).expect("reopen");
    assert!(
        ops_done > 0 && !store.list().expect("list").is_empty(),
        "the child never got anything done"
    );
}
