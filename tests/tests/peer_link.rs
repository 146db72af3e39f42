//! The encrypted peer link between real agents over real sockets: a ticket
//! naming a wrong key, a man in the middle with a key of its own, a relay
//! recording the wire, a plain-TCP client of a TLS-only agent, and agents
//! that chose plain TCP (docs/security.md, "Peers"; docs/protocol.md).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use dot_plugins::gtc::link::PLAIN_REFUSED;
use dot_plugins::gtc::proto::{self, Frame, VERSION};
use dot_store::{PeerKey, Ticket};
use dot_tests::relay::{Mitm, Relay};
use dot_tests::{Agent, put_bytes, random_bytes};

const LIMIT: Duration = Duration::from_secs(60);

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ticket(text: &str) -> Ticket {
    text.parse().expect("a ticket")
}

/// `gtc get TICKET -o OUT [--hint HINT]` on `agent`.
fn get(agent: &Agent, ticket: &str, hint: Option<&str>, out: &Path) -> std::process::Output {
    let mut args = vec!["get", ticket, "-o", path(out)];
    if let Some(h) = hint {
        args.extend(["--hint", h]);
    }
    agent.gtc(&args)
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// 32-byte samples spread over `data`, in every chunk.
fn samples(data: &[u8]) -> Vec<&[u8]> {
    (0..data.len() - 32)
        .step_by(50_021)
        .map(|o| &data[o..o + 32])
        .collect()
}

/// An agent serving plain TCP too (`plain-peers = true`).
fn plain_agent() -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gtc.toml");
    std::fs::write(&config, "plain-peers = true\n").expect("config");
    (Agent::start_with(&["--config", path(&config)]), dir)
}

#[test]
fn a_ticket_naming_a_wrong_key_fails_with_a_clear_error() {
    let a = Agent::start();
    let data = random_bytes(1 << 20, 14);
    let (_, _, text) = put_bytes(&a, "obj", &data);
    let forged = ticket(&text)
        .with_key(PeerKey::of_spki(b"someone else's key"))
        .to_string();
    let b = Agent::start();
    let got = get(&b, &forged, None, &b.dir.join("out"));
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(!got.status.success(), "a get from the wrong key succeeded");
    assert!(
        err.contains("does not prove the key"),
        "unclear error: {err}"
    );
    assert_eq!(a.bytes_served(), 0);
}

#[test]
fn a_man_in_the_middle_with_its_own_key_is_refused_and_learns_nothing() {
    let a = Agent::start();
    let data = random_bytes(1 << 20, 15);
    let (_, _, text) = put_bytes(&a, "obj", &data);
    let mitm = Mitm::start();
    let b = Agent::start();
    let out = b.dir.join("out");
    // The receiver is sent to the man in the middle (a spoofed address);
    // the ticket still names the sender's key.
    let got = get(&b, &text, Some(&format!("gtc://{}", mitm.addr)), &out);
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(
        !got.status.success(),
        "the get through a stranger succeeded"
    );
    assert!(
        err.contains("does not prove the key"),
        "unclear error: {err}"
    );
    assert_eq!(mitm.handshakes(), 0, "a handshake with the stranger ended");
    assert!(mitm.plaintext().is_empty(), "the stranger read plaintext");
    // The same get to the real address works: the key is the difference.
    let got = get(&b, &text, Some(&format!("gtc://{}", a.peer)), &out);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(std::fs::read(&out).expect("read") == data);
}

/// Gets `text` from `a` through a recording relay; what the relay saw.
fn through_relay(a: &Agent, text: &str, data: &[u8]) -> Vec<u8> {
    let relay = Relay::start(a.peer);
    let b = Agent::start();
    let out = b.dir.join("out");
    let got = get(&b, text, Some(&format!("gtc://{}", relay.addr)), &out);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        std::fs::read(&out).expect("read") == data,
        "the copy differs"
    );
    let tape = relay.recorded();
    assert!(
        tape.len() > data.len(),
        "the object did not cross the relay"
    );
    tape
}

#[test]
fn a_recording_relay_between_agents_sees_neither_token_nor_chunk_bytes() {
    let a = Agent::start();
    let data = random_bytes(3 << 20, 16);
    let (_, _, text) = put_bytes(&a, "obj", &data);
    let token = ticket(&text).token().expect("a token");
    let tape = through_relay(&a, &text, &data);
    assert!(!contains(&tape, &token.0), "the token crossed in the clear");
    for s in samples(&data) {
        assert!(!contains(&tape, s), "object bytes crossed in the clear");
    }
}

#[test]
fn agents_with_plain_peers_issue_keyless_tickets_and_speak_plain_tcp() {
    let (a, _config) = plain_agent();
    let data = random_bytes(3 << 20, 17);
    let (_, _, text) = put_bytes(&a, "obj", &data);
    let t = ticket(&text);
    assert_eq!(t.key(), None, "a plain-peers ticket names a key");
    let tape = through_relay(&a, &text, &data);
    // What the encrypted link hides is there to read on a plain one: the
    // check above could fail.
    assert!(contains(&tape, &t.token().expect("a token").0));
    assert!(samples(&data).iter().all(|s| contains(&tape, s)));
}

#[test]
fn a_tls_only_agent_tells_a_plain_tcp_client_why_it_is_turned_away() {
    let a = Agent::start();
    let data = random_bytes(100_000, 18);
    let (_, _, text) = put_bytes(&a, "obj", &data);

    // On the wire: the Hello is answered by an Error saying why, then EOF.
    let mut sock = TcpStream::connect(a.peer).expect("connect");
    sock.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut hello = Vec::new();
    Frame::Hello { version: VERSION }.encode(&mut hello);
    sock.write_all(&hello).expect("hello");
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).expect("read until closed");
    let Ok(Some((Frame::Error { message, .. }, n))) = proto::decode(&answer) else {
        panic!("no Error frame: {answer:?}");
    };
    assert_eq!(message, PLAIN_REFUSED);
    assert_eq!(n, answer.len(), "more than the refusal was sent");

    // Through an agent: a ticket without the key is refused, and says so.
    let t = ticket(&text);
    let keyless = Ticket::new(t.oid(), t.token(), t.list_digest(), t.hints().to_vec());
    let b = Agent::start();
    let got = get(&b, &keyless.to_string(), None, &b.dir.join("out"));
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(
        !got.status.success(),
        "a plain get from a TLS-only agent worked"
    );
    assert!(err.contains("speaks TLS only"), "unclear error: {err}");
    assert_eq!(a.bytes_served(), 0);
}
