//! The network test bed itself (`dot_tests::netbed`): namespaces come and
//! go, agents in them serve over each link, and shaping holds a transfer to
//! the link's rate. Single-path gets (`--hint` names one link), so these
//! hold whatever the fetch does with several hints.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dot_tests::netbed::{NetBed, Rate, shaping};
use dot_tests::{find_tool, gtc_bin, output_within, random_bytes, require_netns, same_file};

fn namespaces() -> String {
    let mut cmd = Command::new(find_tool("ip").expect("ip"));
    cmd.args(["netns", "list"]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A cold get of `ticket` from the sender over `link` only; seconds taken.
fn get_over(bed: &mut NetBed, ticket: &str, link: usize, out: &Path) -> f64 {
    bed.restart_receiver_cold();
    let hint = bed.sender_hint(link);
    let mut cmd = Command::new(gtc_bin());
    cmd.args(["get", ticket, "--hint", &hint, "-o"])
        .arg(out)
        .env("GTC_SOCKET", bed.receiver.socket());
    let t0 = Instant::now();
    let got = output_within(cmd, Duration::from_secs(60));
    let took = t0.elapsed().as_secs_f64();
    assert!(
        got.status.success(),
        "get over link {link}: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    took
}

#[test]
fn shaping_parameters_hold_a_frame_and_100_ms() {
    for kbit in [100, 500, 1_000, 10_000, 40_000, 100_000] {
        let rate = Rate::kbit(kbit);
        let s = shaping(rate);
        assert!(s.burst >= 2 * 1514, "{rate}: {s:?}");
        assert!(s.limit >= s.burst + 4 * 1514, "{rate}: {s:?}");
        assert!(
            s.limit >= s.burst + rate.bytes_per_s() / 10,
            "{rate}: {s:?}"
        );
    }
    assert_eq!(shaping(Rate::mbit(100)).burst, 50_000);
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root, ip, tc and nsenter: runs in CI, or as root"
)]
fn each_link_carries_a_get_at_its_shaped_rate_and_the_bed_leaves_nothing() {
    require_netns("each_link_carries_a_get_at_its_shaped_rate_and_the_bed_leaves_nothing");
    let size = 2u64 << 20;
    let (sender_ns, receiver_ns);
    {
        let mut bed = NetBed::new([Rate::mbit(10), Rate::mbit(40)]);
        (sender_ns, receiver_ns) = (bed.sender_ns().to_owned(), bed.receiver_ns().to_owned());
        let listed = namespaces();
        assert!(
            listed.contains(&sender_ns) && listed.contains(&receiver_ns),
            "{listed}"
        );
        let src = bed.sender.dir.join("obj");
        std::fs::write(&src, random_bytes(size as usize, 501)).expect("write");
        let put = bed.sender.put(&src);
        let hints: Vec<&str> = put["hints"]
            .as_array()
            .expect("hints")
            .iter()
            .filter_map(|h| h.as_str())
            .collect();
        assert_eq!(hints, [bed.sender_hint(1), bed.sender_hint(2)], "{put}");
        let ticket = put["ticket"].as_str().expect("ticket").to_owned();
        for (link, mbit) in [(1, 10.0), (2, 40.0)] {
            let before = [bed.tx_bytes(1), bed.tx_bytes(2)];
            let out = bed.receiver.dir.join(format!("over-{link}.out"));
            let took = get_over(&mut bed, &ticket, link, &out);
            assert!(same_file(&src, &out), "the copy over link {link} differs");
            let sent = [bed.tx_bytes(1) - before[0], bed.tx_bytes(2) - before[1]];
            let payload_secs = size as f64 * 8.0 / (mbit * 1e6);
            eprintln!(
                "2 MiB over link {link} ({mbit} Mbit/s): {took:.2} s (payload at line rate \
                 {payload_secs:.2} s); links 1, 2 sent {sent:?} bytes"
            );
            // The payload cannot beat the rate (bar one 4 ms burst), and a
            // shaped link still carries it at most 1.6x slower (headers,
            // process starts, slow start).
            assert!(took >= 0.95 * payload_secs, "link {link}: {took:.2} s");
            assert!(took <= 1.6 * payload_secs + 0.5, "link {link}: {took:.2} s");
            assert!(sent[link - 1] >= size, "link {link} sent {sent:?}");
            assert!(sent[2 - link] < size / 20, "the other link sent {sent:?}");
        }
        // Down, up again and reshaped, link 1 carries a get at its new rate.
        bed.link_down(1);
        bed.link_up(1);
        bed.set_rate(1, Rate::mbit(40));
        let out = bed.receiver.dir.join("again.out");
        let took = get_over(&mut bed, &ticket, 1, &out);
        assert!(
            same_file(&src, &out),
            "the copy after link 1 came back differs"
        );
        assert!(took < 1.5, "link 1 at 40 Mbit/s took {took:.2} s");
    }
    let listed = namespaces();
    assert!(
        !listed.contains(&sender_ns) && !listed.contains(&receiver_ns),
        "left behind: {listed}"
    );
}
