//! The metrics endpoint of a real agent: a scrape after real transfers
//! (by `gtc get` and through the mount) counts them and passes `promtool
//! check metrics`; the port answers nothing but `/metrics`, within bounds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dot_tests::{
    Agent, COMMAND_LIMIT, find_tool, get_within, put_bytes, random_bytes, require_with,
};

/// A config file turning the endpoint on at an unused loopback port.
fn metrics_config() -> tempfile::NamedTempFile {
    let conf = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(conf.path(), "metrics = \"127.0.0.1:0\"\n").expect("write config");
    conf
}

fn metrics_addr(a: &Agent) -> SocketAddr {
    a.ready_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics="))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no metrics= in {:?}", a.ready_line))
}

/// Sends `request` and reads the whole answer (the server closes).
fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The body of a `GET /metrics`, after checking the status and type.
fn scrape(addr: SocketAddr) -> String {
    let answer =
        exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("scrape answered");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample `series` (name with its labels, as written).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root, FUSE and promtool (Debian prometheus): runs in CI, or as root"
)]
fn a_scrape_after_real_transfers_counts_them_and_passes_promtool() {
    let test = "a_scrape_after_real_transfers_counts_them_and_passes_promtool";
    let promtool = find_tool("promtool");
    require_with(
        test,
        "root, /dev/fuse and promtool",
        &[
            (promtool.is_none()).then_some("promtool"),
            (!std::path::Path::new("/dev/fuse").exists()).then_some("/dev/fuse"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>(),
    );
    let conf = metrics_config();
    let conf_path = conf.path().to_str().expect("utf-8");
    let sender = Agent::start_with(&["--config", conf_path]);
    let receiver = Agent::start_mounted(&["--config", conf_path]);
    let (s_addr, r_addr) = (metrics_addr(&sender), metrics_addr(&receiver));

    // One object by `gtc get`, one read through the mount.
    let by_get = random_bytes(6 << 20, 7001);
    let by_mount = random_bytes(3 << 20, 7002);
    let (_, _, ticket) = put_bytes(&sender, "by-get", &by_get);
    let (_, _, mount_ticket) = put_bytes(&sender, "by-mount", &by_mount);
    let out = receiver.dir.join("got");
    let (got, _) = get_within(&receiver, &ticket, &out, COMMAND_LIMIT);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(std::fs::read(&out).expect("read"), by_get);
    let read = std::fs::read(receiver.mnt().join(&mount_ticket)).expect("read via the mount");
    assert_eq!(read, by_mount);

    // Until the object read through the mount is checked whole and the
    // index says so (it records a finished object a moment later).
    let total = (by_get.len() + by_mount.len()) as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape(r_addr);
        if value(&text, "dot_fetches_in_flight") == 0.0 && value(&text, "dot_store_bytes") >= total
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "a fetch never ended, or the store never held both objects\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        value(&text, "dot_fetch_bytes_total{source=\"peer\"}"),
        total,
        "every byte came from the one peer"
    );
    // Named by the hint it came from (`gtc://KEY@ADDR`).
    let peer = format!("{}\"}} ", sender.peer);
    let from_peer: f64 = text
        .lines()
        .filter(|l| l.starts_with("dot_peer_fetch_bytes_total{") && l.contains(&peer))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(from_peer, total, "counted under the sender's name\n{text}");
    let chunks = value(&text, "dot_fetch_chunks_total{source=\"peer\"}");
    assert!(
        value(&text, "dot_chunks_verified_total") >= chunks && chunks >= 2.0,
        "{text}"
    );
    assert_eq!(value(&text, "dot_chunks_rejected_total"), 0.0);
    assert_eq!(value(&text, "dot_fetches_started_total"), 2.0);
    assert_eq!(value(&text, "dot_store_objects{state=\"complete\"}"), 2.0);
    let reads = value(&text, "dot_fuse_reads_total");
    assert!(reads >= 1.0, "{text}");
    assert_eq!(
        value(&text, "dot_fuse_read_duration_seconds_count"),
        reads + value(&text, "dot_fuse_read_errors_total")
    );
    assert!(value(&text, "dot_fuse_read_bytes_total") >= by_mount.len() as f64);

    let served = scrape(s_addr);
    assert_eq!(value(&served, "dot_serve_bytes_total"), total, "{served}");
    assert!(value(&served, "dot_peer_connections_total") >= 1.0);

    for t in [&text, &served] {
        let mut check = Command::new(promtool.as_ref().expect("promtool"));
        let mut child = check
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(t.as_bytes())
            .expect("feed promtool");
        let verdict = child.wait_with_output().expect("promtool ends");
        assert!(
            verdict.status.success(),
            "promtool: {}{}\n{t}",
            String::from_utf8_lossy(&verdict.stdout),
            String::from_utf8_lossy(&verdict.stderr)
        );
    }
}

#[test]
fn the_metrics_port_answers_only_metrics_and_bounds_what_it_takes() {
    let conf = metrics_config();
    let a = Agent::start_with(&["--config", conf.path().to_str().expect("utf-8")]);
    let addr = metrics_addr(&a);
    let status = |req: &[u8]| {
        let answer = exchange(addr, req).expect("answered");
        answer.lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(
        status(b"POST /metrics HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        status(b"GET /../etc/passwd HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(status(b"GET /metrics\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").expect("answered");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    // A head past 8 KiB is refused without reading the rest.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 << 10));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = s.write_all(&huge);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{:?}",
        &answer[..answer.len().min(200)]
    );

    // Clients that send nothing hold every slot: a scrape gets no answer
    // until they go, then one does; the agent's own work goes on.
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Each idle connection is accepted (its slot taken) before the next
    // scrape is: wait until the server refuses one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n") {
            Ok(a) if a.is_empty() => break,
            Err(_) => break,
            Ok(_) => assert!(Instant::now() < deadline, "never at the cap"),
        }
    }
    assert!(a.status()["version"].is_string(), "the agent still serves");
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n") {
            Ok(a) if a.starts_with("HTTP/1.1 200") => break,
            _ => assert!(Instant::now() < deadline, "slots never came back"),
        }
    }
    // A scrape counts with a bare agent too (no mount: no FUSE families).
    let text = scrape(addr);
    assert!(text.contains("# TYPE dot_store_bytes gauge"), "{text}");
    assert!(!text.contains("dot_fuse_reads_total"), "{text}");
}

#[test]
fn a_bad_metrics_address_stops_the_agent_with_a_clear_error() {
    let conf = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(conf.path(), "metrics = \"not an address\"\n").expect("write config");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dot_tests::output_within(
        {
            let mut c = Command::new(dot_tests::gtc_bin());
            c.args([
                "agent",
                "--no-mount",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(dir.path().join("gtc.sock"))
            .arg("--config")
            .arg(conf.path());
            c
        },
        COMMAND_LIMIT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics: \"not an address\" is not host:port"),
        "{err}"
    );
}
