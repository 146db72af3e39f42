//! Hints at things that are not gtc peers: a listener that accepts and
//! never answers, and an HTTP server. A real agent's get fails within a
//! few seconds saying which it was, and leaves the output as it was.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use dot_tests::{Agent, random_bytes};

/// A listener on loopback whose connections get `answer` (if any) and are
/// then held open, unanswered, until the test ends.
fn listener(answer: Option<&'static [u8]>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            if let Some(a) = answer {
                let mut buf = [0u8; 512];
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = c.read(&mut buf);
                let _ = c.write_all(a);
                continue; // closed: what an HTTP server does after a 400
            }
            held.push(c);
        }
    });
    port
}

const HTTP_400: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

fn get_fails(b: &Agent, ticket: &str, hint: &str, out: &Path) -> String {
    let started = Instant::now();
    let got = b.gtc(&[
        "get",
        ticket,
        "--hint",
        hint,
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    let took = started.elapsed();
    assert!(!got.status.success(), "a get from {hint} succeeded");
    assert_eq!(
        got.status.code(),
        Some(4),
        "{hint}: unreachable is exit code 4"
    );
    assert!(took < Duration::from_secs(20), "{hint}: took {took:?}");
    String::from_utf8_lossy(&got.stderr).into_owned()
}

#[test]
fn a_silent_listener_or_an_http_server_is_no_gtc_peer() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("obj");
    std::fs::write(&src, random_bytes(200_000, 3)).expect("write");
    let ticket = a.put_ticket(&src);
    let key = a.peer_key().expect("a TLS agent has a peer key");
    let out = b.dir.join("out");
    std::fs::write(&out, b"kept").expect("write");

    let silent = listener(None);
    let http = listener(Some(HTTP_400));
    for (hint, says) in [
        (format!("gtc://127.0.0.1:{silent}"), "no answer"),
        (format!("gtc://{key}@127.0.0.1:{silent}"), "no answer"),
        (format!("gtc://127.0.0.1:{http}"), "not a gtc peer"),
        (format!("gtc://{key}@127.0.0.1:{http}"), "not a gtc peer"),
    ] {
        let said = get_fails(&b, &ticket, &hint, &out);
        assert!(said.contains(says), "{hint}: {said}");
        assert!(!said.contains("frame length"), "{hint}: {said}");
        // The file that was there is untouched, and nothing else is left.
        assert_eq!(std::fs::read(&out).expect("read"), b"kept", "{hint}");
        let left: Vec<_> = std::fs::read_dir(&b.dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".gtc-"))
            .collect();
        assert!(left.is_empty(), "{hint}: left {left:?}");
    }
}

#[test]
fn an_agent_without_the_object_is_not_found_exit_code_3() {
    let (a, b, c) = (Agent::start(), Agent::start(), Agent::start());
    let src = a.dir.join("obj");
    std::fs::write(&src, random_bytes(100_000, 4)).expect("write");
    let ticket = a.put_ticket(&src);
    let got = b.gtc(&[
        "get",
        &ticket,
        "--hint",
        &c.hint(),
        "-o",
        b.dir.join("out").to_str().expect("utf-8"),
    ]);
    assert_eq!(
        got.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let said = String::from_utf8_lossy(&got.stderr);
    // The source named once, then what it said.
    let hint = c.hint();
    assert_eq!(said.matches("127.0.0.1").count(), 1, "{said}");
    assert!(
        said.contains(&format!("{hint}: no such object here")),
        "{said}"
    );
}
