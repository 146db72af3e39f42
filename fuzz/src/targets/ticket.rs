//! Tickets: as text (what a user pastes), and as the payload inside the
//! base64 (so mutations reach the tag-length-value fields directly).

use std::net::SocketAddr;

use dot_store::ticket::{MAX_TICKET_LEN, b64_decode, b64_encode};
use dot_store::{Hint, Oid, PeerKey, Ticket, Token};

use super::{Target, text};

const ASSERTS: &str = "Ticket::from_str: a ticket that parses re-encodes in at most 255 \
                       characters to text that parses to the same ticket and re-encodes the same";

pub(super) const TICKET: Target = Target {
    name: "ticket",
    asserts: ASSERTS,
    seeds: ticket_seeds,
    dict: &[b"dot1.", b"A", b"_", b"-", b"AAAA", b"____", b"="],
    max_len: 300,
    run: ticket,
};

pub(super) const TICKET_PAYLOAD: Target = Target {
    name: "ticket-payload",
    asserts: "the same, for `dot1.` + base64url of the input (the fields inside the text)",
    seeds: payload_seeds,
    dict: &[
        b"\x01\x10",
        b"\x02\x20",
        b"\x03\x10",
        b"\x04",
        b"\x05\x00",
        b"\x06\x20",
        b"\x00\x0a\x00\x01\x01",
        b"\x00\x0a\x00\x01\x02",
        b"\x00\x0a\x00\x01\x00gtc://",
        b"\x00\x0a\x00\x01\x00gtc://[",
        b"0::",
        b"::",
        b"]:",
        b"\x80\x00",
    ],
    max_len: 200,
    run: ticket_payload,
};

fn sample_tickets() -> Vec<Ticket> {
    let oid = Oid::of(b"an object");
    let v4: SocketAddr = ([192, 0, 2, 7], 7420).into();
    let v6: SocketAddr = "[2001:db8::1]:7420".parse().unwrap_or(v4);
    let uri = |s: &str| Hint::new(s).ok();
    let mut hints = vec![Hint::gtc(v4), Hint::gtc(v6).with(20, 3)];
    hints.extend(uri("gtc://peer.example:7420"));
    hints.extend(uri("gtc://00112233445566778899aabbccddeeff@10.0.0.1:1"));
    hints.extend(uri("http://example.org/x"));
    vec![
        Ticket::new(oid, None, None, Vec::new()),
        Ticket::new(oid, Some(Token([1; 16])), None, hints[..1].to_vec()),
        Ticket::new(oid, Some(Token([2; 16])), Some([3; 32]), hints.clone()),
        Ticket::new(oid, Some(Token([4; 16])), None, hints.clone()).with_key(PeerKey([5; 16])),
        Ticket::new(
            oid,
            Some(Token([6; 16])),
            Some([7; 32]),
            hints[..2].to_vec(),
        )
        .with_key(PeerKey([5; 16]))
        .as_tree(),
        Ticket::new(
            oid,
            Some(Token([6; 16])),
            Some([7; 32]),
            hints[..2].to_vec(),
        )
        .member(Oid::of(b"a file"), [8; 32]),
    ]
}

fn ticket_seeds() -> Vec<Vec<u8>> {
    sample_tickets()
        .iter()
        .map(|t| t.to_string().into_bytes())
        .collect()
}

fn payload_seeds() -> Vec<Vec<u8>> {
    sample_tickets()
        .iter()
        .filter_map(|t| b64_decode(t.to_string().strip_prefix("dot1.")?))
        .collect()
}

fn ticket(data: &[u8]) -> bool {
    check(&text(data))
}

fn ticket_payload(data: &[u8]) -> bool {
    check(&format!("dot1.{}", b64_encode(data)))
}

fn check(s: &str) -> bool {
    let Ok(t) = s.parse::<Ticket>() else {
        return false;
    };
    let again = t.to_string();
    assert!(
        again.len() <= MAX_TICKET_LEN,
        "{s:?} re-encodes to {} characters",
        again.len()
    );
    match again.parse::<Ticket>() {
        Ok(back) => {
            assert_eq!(back, t, "{s:?} re-encoded as {again:?}");
            assert_eq!(back.to_string(), again);
        }
        Err(e) => panic!("{s:?} re-encoded as {again:?}, which does not parse: {e}"),
    }
    true
}
