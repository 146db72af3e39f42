//! The mail gateway's decoders of what an SMTP client or next hop sends:
//! command lines, a message's data, and replies (`dot_agent::smtp`).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use dot_agent::smtp::command::{self, Command, MAX_TICKET};
use dot_agent::smtp::wire::{self, Data, Line, MAX_REPLY_LINES};

use super::Target;

/// The most a fuzzed message may hold (small, so the limit is reached).
const LIMIT: usize = 2048;

pub(super) const SMTP: Target = Target {
    name: "smtp",
    asserts: "an SMTP session's bytes: each line (read_line, at most 1,024 bytes) parses to a \
              command with bounded fields or a 5xx reply; read as message data it is at most \
              the limit, every line CRLF-ended, and writing it back (write_data) reads back \
              the same; read as replies, each has a code in 200..600 and at most 64 lines",
    seeds: || {
        [
            &b"EHLO mx.snd.test\r\nMAIL FROM:<a@snd.test> SIZE=63536 BODY=8BITMIME\r\nRCPT TO:<u@rcv.test> ORCPT=rfc822;u@rcv.test\r\nDATA\r\n"[..],
            b"X-DOT-DATA dot1.AAAA HEADERS\r\nSubject: x\r\n\r\n.\r\nQUIT\r\n",
            b"Subject: x\r\n\r\n..dot\r\nbody\n.\r\n",
            b"250-mx.rcv.test\r\n250-PIPELINING\r\n250-X-DOT-DATA\r\n250 8BITMIME\r\n",
            b"MAIL FROM:<>\r\nRSET\r\nNOOP x\r\nVRFY u\r\n",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect()
    },
    dict: &[
        b"\r\n",
        b"\n",
        b".\r\n",
        b"..",
        b"MAIL FROM:<",
        b"RCPT TO:<",
        b"X-DOT-DATA ",
        b" HEADERS",
        b" SIZE=",
        b" BODY=8BITMIME",
        b"EHLO ",
        b"250-",
        b"250 ",
        b">",
        b"\x00",
        b"\xff",
    ],
    max_len: 8192,
    run,
};

/// Polls a future over in-memory input to its end (it never waits).
fn now<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// True if any of the three decoders accepted something.
fn run(data: &[u8]) -> bool {
    let mut accepted = false;
    // As command lines.
    let mut r = data;
    loop {
        match now(wire::read_line(&mut r, wire::MAX_COMMAND_LINE)) {
            Ok(Line::Text(line)) => {
                assert!(line.len() <= wire::MAX_COMMAND_LINE);
                match command::parse(&line) {
                    Ok(cmd) => {
                        accepted = true;
                        check(&cmd);
                    }
                    Err(reply) => assert!((500..600).contains(&reply.code)),
                }
            }
            Ok(Line::TooLong) => {}
            Ok(Line::Eof) | Err(_) => break,
        }
    }
    // As message data, and back.
    if let Ok(Data::Message(m)) = now(wire::read_data(&mut &data[..], LIMIT)) {
        accepted = true;
        assert!(m.len() <= LIMIT);
        assert!(m.is_empty() || m.ends_with(b"\r\n"));
        assert!(!m.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        let mut out = Vec::new();
        assert!(now(wire::write_data(&mut out, &m)).is_ok());
        match now(wire::read_data(&mut &out[..], LIMIT)) {
            Ok(Data::Message(back)) => assert_eq!(back, m, "data round trip"),
            other => panic!("written data read back as {other:?}"),
        }
    }
    // As replies.
    let mut r = data;
    while let Ok(reply) = now(wire::read_reply(&mut r)) {
        accepted = true;
        assert!((200..600).contains(&reply.code));
        assert!(reply.lines.len() <= MAX_REPLY_LINES);
        assert!(!reply.encode().is_empty());
    }
    accepted
}

/// What a parsed command must hold.
fn check(cmd: &Command) {
    match cmd {
        Command::Mail { from, .. } => {
            assert!(from.starts_with('<') && from.ends_with('>') && from.len() <= 256);
        }
        Command::Rcpt { to } => {
            assert!(to.starts_with('<') && to.ends_with('>') && to.len() <= 256 && to != "<>");
        }
        Command::DotData { ticket, .. } => {
            assert!(!ticket.is_empty() && ticket.len() <= MAX_TICKET);
        }
        Command::Ehlo(name) | Command::Helo(name) => {
            assert!(!name.is_empty() && name.len() <= 255);
        }
        _ => {}
    }
}
