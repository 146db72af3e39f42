//! Hostile peers against a real agent over real sockets: a flood of
//! requests whose answers are never read, thousands of idle connections, a
//! peer that stops reading, a peer that never says Hello. The attackers
//! that ask for chunks speak TLS, as they must to be heard. The agent stays
//! small and honest gets complete (docs/security.md, "Peers").

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dot_plugins::gtc::proto::{Frame, VERSION};
use dot_store::{Oid, Token};
use dot_tests::{Agent, get_within, link, put_bytes, random_bytes};

/// Encodes `frames` back to back.
fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

fn hello() -> Frame {
    Frame::Hello { version: VERSION }
}

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

fn peer_addr(a: &Agent) -> SocketAddr {
    a.peer
}

/// Raises this process's open-file limit to at least `n` (as root).
fn allow_files(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < n {
            lim.rlim_cur = n;
            lim.rlim_max = lim.rlim_max.max(n);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Seconds for a cold get of `ticket` from a fresh receiver.
fn cold_get(ticket: &str, data: &[u8]) -> f64 {
    let b = Agent::start();
    let out = b.dir.join("out");
    let (got, took) = get_within(&b, ticket, &out, Duration::from_secs(120));
    assert!(
        got.status.success(),
        "get: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        std::fs::read(&out).expect("read") == data,
        "the copy differs"
    );
    took.as_secs_f64()
}

#[test]
fn a_flood_of_unread_requests_keeps_the_agent_small_and_an_honest_get_going() {
    let a = Agent::start();
    let data = random_bytes(64 << 20, 701);
    let (_, _, ticket) = put_bytes(&a, "honest", &data);
    let calm = cold_get(&ticket, &data);
    // Four TLS links asking for chunks of random objects as fast as they
    // can, never reading an answer.
    let hint = a.hint();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..4u64)
        .map(|n| {
            let (stop, hint) = (stop.clone(), hint.clone());
            std::thread::spawn(move || {
                let timeout = Some(Duration::from_millis(200));
                let Ok(mut s) = link::connect_hint(&hint, timeout) else {
                    return 0u64;
                };
                let _ = s.write_all(&wire(&[hello()]));
                let mut sent = 0u64;
                let mut req = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let frames: Vec<Frame> = (0..64)
                        .map(|i| {
                            req = req.wrapping_add(1);
                            Frame::ChunkReq {
                                req,
                                oid: Oid::of(&[n as u8, i, req as u8]),
                                index: i.into(),
                            }
                        })
                        .collect();
                    match s.write_all(&wire(&frames)) {
                        Ok(()) => sent += 64,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => {
                            // Dropped: come back, as a flooder would.
                            match link::connect_hint(&hint, timeout) {
                                Ok(new) => {
                                    s = new;
                                    let _ = s.write_all(&wire(&[hello()]));
                                }
                                Err(_) => std::thread::sleep(Duration::from_millis(50)),
                            }
                        }
                    }
                }
                sent
            })
        })
        .collect();
    let started = Instant::now();
    let mut peak = 0;
    let mut stormy = Vec::new();
    while started.elapsed() < Duration::from_secs(20) {
        stormy.push(cold_get(&ticket, &data));
        peak = peak.max(rss(a.pid()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let requests: u64 = flooders
        .into_iter()
        .map(|f| f.join().expect("flooder"))
        .sum();
    peak = peak.max(rss(a.pid()));
    stormy.sort_by(f64::total_cmp);
    let slowest = stormy.last().copied().unwrap_or(0.0);
    let median = stormy.get(stormy.len() / 2).copied().unwrap_or(0.0);
    eprintln!(
        "calm get {calm:.3} s; {} gets in the flood, median {median:.3} s, slowest {slowest:.3} s; {requests} flood requests; peak RSS {} MiB",
        stormy.len(),
        peak >> 20
    );
    assert!(
        requests > 1000,
        "the flood did not flood ({requests} requests)"
    );
    assert!(peak < 256 << 20, "the agent grew to {} MiB", peak >> 20);
    // The typical honest get keeps its pace; on two shared cores one get
    // may meet a scheduling hiccup, but none is starved.
    let floor = calm.max(0.25);
    assert!(
        median <= 2.0 * floor,
        "honest gets took {median:.3} s (median) in the flood, {calm:.3} s without"
    );
    assert!(
        slowest <= 10.0 * floor,
        "an honest get took {slowest:.3} s in the flood, {calm:.3} s without"
    );
    // Still answering its own clients.
    a.gtc_ok(&["status"]);
}

#[test]
fn thousands_of_idle_connections_are_shed_and_an_honest_get_completes() {
    allow_files(12_000);
    let a = Agent::start();
    let data = random_bytes(4 << 20, 702);
    let (_, _, ticket) = put_bytes(&a, "honest", &data);
    let addr = peer_addr(&a);
    let mut idle = Vec::new();
    for _ in 0..5000 {
        match TcpStream::connect(addr) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {}: {e}", idle.len()),
        }
    }
    cold_get(&ticket, &data);
    let st = a.status();
    let shed = st["peers"]["shed"].as_u64().expect("shed");
    assert!(shed >= 4000, "only {shed} connections shed: {st}");
    drop(idle);
}

#[test]
fn a_peer_that_stops_reading_is_dropped_after_the_write_deadline() {
    let conf = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(conf.path(), "peer-write-timeout-secs = 2\n").expect("write");
    let a = Agent::start_with(&["--config", conf.path().to_str().expect("utf-8")]);
    let data = random_bytes(32 << 20, 703);
    let (_, oid, ticket) = put_bytes(&a, "big", &data);
    let oid: Oid = oid.parse().expect("OID");
    let token = token_of(&ticket);
    let mut s = link::connect_hint(&a.hint(), None).expect("connect");
    let chunks = a.put(&a.dir.join("big"))["chunks"]
        .as_u64()
        .expect("chunks") as u32;
    let mut frames = vec![
        hello(),
        Frame::DescReq {
            req: 1,
            oid,
            token,
            first: chunks,
            via: None,
        },
    ];
    frames.extend((0..chunks).map(|i| Frame::ChunkReq {
        req: 2 + i,
        oid,
        index: i,
    }));
    s.write_all(&wire(&frames)).expect("ask for everything");
    // Read nothing for a while: the agent's writes stall, then it drops us.
    let before = a.status()["peers"]["violations"]
        .as_u64()
        .expect("violations");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = a.status()["peers"]["violations"]
            .as_u64()
            .expect("violations");
        if now > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never dropped a peer that stopped reading"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // What is left on the socket ends (the agent closed it).
    let _ = s.sock.set_read_timeout(Some(Duration::from_secs(10)));
    let mut sink = vec![0u8; 1 << 20];
    loop {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[test]
fn a_peer_that_never_says_hello_is_dropped() {
    let a = Agent::start();
    let mut s = TcpStream::connect(peer_addr(&a)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf);
    assert!(
        matches!(n, Ok(0)) || n.is_err(),
        "the agent answered a silent peer"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(25),
        "closed after {waited:?}"
    );
}

/// The access token a ticket carries.
fn token_of(ticket: &str) -> Token {
    ticket
        .parse::<dot_store::Ticket>()
        .expect("ticket")
        .token()
        .expect("a token")
}
