//! One object over two shaped network paths (the test bed of
//! `dot_tests::netbed`: a sender and a receiver namespace joined by two
//! veth links): both paths carry it, losing one mid-transfer does not lose
//! the transfer, and a very slow second path does not slow it down.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use dot_tests::netbed::{LINKS, NetBed, Rate};
use dot_tests::{gtc_bin, output_within, random_bytes, require_netns, same_file};

/// Timing test (`slow_second_link...`) runs alone (write lock); the others
/// may share the machine with each other (read lock).
static MACHINE: RwLock<()> = RwLock::new(());

/// How long one get may take before the test fails (also the bound on the
/// get that loses a link).
const GET_LIMIT: Duration = Duration::from_secs(60);

/// `gtc get TICKET -o OUT` on the receiver, killed after `limit`; its
/// output and wall time.
fn get(bed: &NetBed, ticket: &str, out: &Path, limit: Duration) -> (Output, Duration) {
    let mut cmd = Command::new(gtc_bin());
    cmd.args(["get", ticket, "-o", out.to_str().expect("utf-8 path")])
        .env("GTC_SOCKET", bed.receiver.socket());
    let t0 = Instant::now();
    let got = output_within(cmd, limit);
    (got, t0.elapsed())
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts `data` on the sender; (source path, ticket), after checking that the
/// ticket names `hints` paths.
fn put(bed: &NetBed, name: &str, data: &[u8], hints: usize) -> (std::path::PathBuf, String) {
    let src = bed.sender.dir.join(name);
    std::fs::write(&src, data).expect("write");
    let put = bed.sender.put(&src);
    let listed = put["hints"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, hints, "hints of the ticket: {put}");
    (src, put["ticket"].as_str().expect("ticket").to_owned())
}

/// Bytes of the receiver's first transfer in flight taken from peers (0
/// when none runs yet).
fn received(status: &serde_json::Value) -> u64 {
    status["transfers"]
        .as_array()
        .and_then(|t| t.first())
        .and_then(|t| t["from_peers"].as_u64())
        .unwrap_or(0)
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root, ip, tc and nsenter: runs in CI, or as root"
)]
fn one_object_over_two_links_arrives_intact_and_both_links_carry_it() {
    require_netns("one_object_over_two_links_arrives_intact_and_both_links_carry_it");
    let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
    let bed = NetBed::new([Rate::mbit(40), Rate::mbit(40)]);
    let size = 8usize << 20;
    let (src, ticket) = put(&bed, "obj", &random_bytes(size, 401), 2);
    let before = LINKS.map(|l| bed.tx_bytes(l));
    let out = bed.receiver.dir.join("obj.out");
    let (got, took) = get(&bed, &ticket, &out, GET_LIMIT);
    assert_ok("get", &got);
    assert!(same_file(&src, &out), "the copy differs");
    let carried = LINKS.map(|l| bed.tx_bytes(l) - before[l - 1]);
    eprintln!("8 MiB over 40 + 40 Mbit/s: {took:?}; links 1, 2 sent {carried:?} bytes");
    for l in LINKS {
        assert!(
            carried[l - 1] >= size as u64 / 10,
            "link {l} carried {} bytes of a {size}-byte object (links 1, 2: {carried:?})",
            carried[l - 1]
        );
    }
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root, ip, tc and nsenter: runs in CI, or as root"
)]
fn a_link_lost_mid_transfer_does_not_lose_the_transfer() {
    require_netns("a_link_lost_mid_transfer_does_not_lose_the_transfer");
    let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
    let bed = NetBed::new([Rate::mbit(20), Rate::mbit(20)]);
    let size = 16u64 << 20;
    let (src, ticket) = put(&bed, "obj", &random_bytes(size as usize, 402), 2);
    let out = bed.receiver.dir.join("obj.out");
    let base = LINKS.map(|l| bed.tx_bytes(l));
    let (got, took, lost) = std::thread::scope(|s| {
        let getter = s.spawn(|| get(&bed, &ticket, &out, GET_LIMIT));
        // A quarter in, take away the link that carried more so far (link 2
        // when both carried the same): a path the transfer is using. (A get
        // that ended before is reported below.)
        bed.receiver
            .wait_status("a quarter of the object", GET_LIMIT, |st| {
                received(st) >= size / 4 || getter.is_finished()
            });
        let carried = LINKS.map(|l| bed.tx_bytes(l) - base[l - 1]);
        let lost = if carried[0] > carried[1] { 1 } else { 2 };
        bed.link_down(lost);
        eprintln!(
            "16 MiB over 20 + 20 Mbit/s: link {lost} down after a quarter (links 1, 2 had sent \
             {carried:?} bytes)"
        );
        let (got, took) = getter
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (got, took, lost)
    });
    eprintln!("with link {lost} lost the get took {took:?}");
    assert_ok(&format!("get with link {lost} lost"), &got);
    assert!(same_file(&src, &out), "the copy differs");
    // Within GET_LIMIT, and not much slower than the whole object over the
    // surviving link alone: 15 s to notice the lost one (the multipath
    // plugin gives up on a stalled path after 10 s) and slack.
    let bound = Duration::from_secs_f64(Rate::mbit(20).seconds_for(size) + 15.0);
    assert!(
        took <= bound,
        "with link {lost} lost the get took {took:?} (bound {bound:?})"
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root, ip, tc and nsenter: runs in CI, or as root"
)]
fn a_very_slow_second_link_does_not_slow_the_transfer_down() {
    require_netns("a_very_slow_second_link_does_not_slow_the_transfer_down");
    let _alone = MACHINE.write().unwrap_or_else(|e| e.into_inner());
    let (fast, slow) = (Rate::mbit(40), Rate::kbit(500));
    let mut bed = NetBed::with_advertised([fast, slow], &[1]);
    let size = 8usize << 20;
    let data = random_bytes(size, 403);
    // The fast link alone: the sender advertises only link 1.
    let (src, ticket_fast) = put(&bed, "obj", &data, 1);
    let out_fast = bed.receiver.dir.join("fast.out");
    let (got, t_fast) = get(&bed, &ticket_fast, &out_fast, GET_LIMIT);
    assert_ok("get over the fast link", &got);
    assert!(
        same_file(&src, &out_fast),
        "the copy over the fast link differs"
    );
    // Both links: the same object, now advertised on both; a cold receiver.
    bed.restart_sender(&LINKS);
    let (_, ticket_both) = put(&bed, "obj", &data, 2);
    bed.restart_receiver_cold();
    let out_both = bed.receiver.dir.join("both.out");
    let (got, t_both) = get(&bed, &ticket_both, &out_both, GET_LIMIT);
    assert_ok("get over both links", &got);
    assert!(
        same_file(&src, &out_both),
        "the copy over both links differs"
    );
    eprintln!(
        "8 MiB: {fast} alone {t_fast:?}, with a {slow} second link {t_both:?} (ideal {:.2} s)",
        size as f64 / (fast.bytes_per_s() + slow.bytes_per_s()) as f64
    );
    let bound = t_fast.mul_f64(1.25) + Duration::from_millis(500);
    assert!(
        t_both <= bound,
        "both links took {t_both:?}, the fast link alone {t_fast:?} (bound {bound:?})"
    );
}
