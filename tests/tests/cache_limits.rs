//! The cache's default limits on a real filesystem (a small ext4 on a
//! loop device as the receiver's store): real gets fill it, eviction keeps
//! the budget (a quarter of the filesystem) and the free-space floor (5% of
//! it), and never takes an object a client holds.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dot_tests::key::{Fs, Key};
use dot_tests::{Agent, gtc_bin, put_bytes, random_bytes};

const MIB: u64 = 1 << 20;

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("status has no {k}: {v}"))
}

fn listed(b: &Agent, oid: &str) -> bool {
    let v: serde_json::Value =
        serde_json::from_slice(&b.gtc_ok(&["ls", "--json"])).expect("ls --json is JSON");
    v.as_array().expect("array").iter().any(|o| o["oid"] == oid)
}

/// Threads that spin at normal priority until dropped.
struct Busy(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Busy {
    fn start(n: usize) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Busy(stop, threads)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices (runs in CI, or as root)"
)]
fn eviction_keeps_the_default_budget_and_free_space_floor_of_a_real_filesystem() {
    dot_tests::require_loop(
        "eviction_keeps_the_default_budget_and_free_space_floor_of_a_real_filesystem",
    );
    // Declared first, dropped last: unmounted once the agent is gone.
    let key = Key::new(Fs::Ext4, 128);
    let a = Agent::start();
    let mut b = Agent::start();
    b.stop();
    key.mount(&b.dir.join("data"));
    b.restart();
    let st = b.status();
    let (budget, floor) = (u(&st, "budget"), u(&st, "min_free_bytes"));
    assert!(
        (24 * MIB..=32 * MIB).contains(&budget),
        "default budget {budget} for a 128 MiB filesystem"
    );
    assert!(
        (4 * MIB..=7 * MIB).contains(&floor),
        "default floor {floor} for a 128 MiB filesystem"
    );

    let objects: Vec<(String, String, Vec<u8>)> = (0..8u64)
        .map(|i| {
            let data = random_bytes(6 << 20, 950 + i);
            let (_, oid, ticket) = put_bytes(&a, &format!("o{i}"), &data);
            (oid, ticket, data)
        })
        .collect();
    let get = |i: usize| {
        let out = b.dir.join(format!("out{i}"));
        b.gtc_ok(&["get", &objects[i].1, "-o", out.to_str().expect("utf-8")]);
        assert!(
            std::fs::read(&out).expect("read") == objects[i].2,
            "copy {i} differs"
        );
        std::fs::remove_file(&out).expect("rm");
    };
    get(0);
    // A client holds the first object for the rest of the test: a get
    // whose output nobody reads.
    let mut holder = Command::new(gtc_bin())
        .args(["get", &objects[0].0, "-o", "-"])
        .env("GTC_SOCKET", b.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    while u(&b.status(), "pinned") == 0 {
        assert!(Instant::now() < deadline, "the holder never held it");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 48 MiB through a store of ~30: it stays within its budget, also on
    // a machine whose cores other work keeps busy (each fetch's last step,
    // the whole-object check, must still end and release its object).
    let busy = Busy::start(2);
    for i in 1..objects.len() {
        get(i);
        let st = b.status();
        assert!(
            u(&st, "stored_bytes") <= budget,
            "after get {i}: {} held of {budget}",
            u(&st, "stored_bytes")
        );
    }
    drop(busy);
    let st = b.status();
    assert!(u(&st, "evicted") >= 2, "{st}");
    assert!(listed(&b, &objects[0].0), "the held object was evicted");

    // Something else fills the filesystem to 3 MiB above the floor: the
    // next get makes room for its 6 MiB by evicting, and the floor holds.
    let free = u(&st, "free_bytes");
    let filler = b.dir.join("data/filler");
    std::fs::File::create(&filler)
        .and_then(|f| {
            use std::io::Write;
            let mut w = std::io::BufWriter::new(f);
            let block = vec![7u8; MIB as usize];
            for _ in 0..(free - floor - 3 * MIB) / MIB {
                w.write_all(&block)?;
            }
            w.into_inner()?.sync_all()
        })
        .expect("filler");
    let evicted = u(&b.status(), "evicted");
    let extra = random_bytes(6 << 20, 999);
    let (_, _, ticket) = put_bytes(&a, "extra", &extra);
    let out = b.dir.join("extra");
    b.gtc_ok(&["get", &ticket, "-o", out.to_str().expect("utf-8")]);
    assert!(std::fs::read(&out).expect("read") == extra);
    let st = b.status();
    assert!(
        u(&st, "evicted") > evicted,
        "nothing evicted for the floor: {st}"
    );
    assert!(
        u(&st, "free_bytes") + MIB >= floor,
        "free {} under the floor {floor}",
        u(&st, "free_bytes")
    );
    assert!(listed(&b, &objects[0].0), "the held object was evicted");
    let text = String::from_utf8(b.gtc_ok(&["status"])).expect("utf-8");
    assert!(text.contains("cache: budget"), "{text}");
    holder.kill().expect("kill");
    holder.wait().expect("wait");
    std::fs::remove_file(&filler).expect("rm filler");
}
