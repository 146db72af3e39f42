//! The commands a gateway takes from an SMTP client, parsed from one line
//! with every field bounded, and the rule for what of `MAIL`'s parameters
//! goes on to the next hop.

use super::wire::Reply;

/// Longest path (address with its brackets) taken, as RFC 5321 4.5.3.1.3.
const MAX_PATH: usize = 256;
/// Longest EHLO/HELO name taken.
const MAX_DOMAIN: usize = 255;
/// Longest ticket taken (a ticket is at most 255 characters).
pub const MAX_TICKET: usize = 255;

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO name`.
    Ehlo(String),
    /// `HELO name`.
    Helo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail {
        /// The reverse path, brackets included (`<>` for bounces).
        from: String,
        /// `SIZE=` when given.
        size: Option<u64>,
        /// `BODY=8BITMIME` was given.
        eight_bit: bool,
    },
    /// `RCPT TO:<path> [params]` (parameters are not passed on).
    Rcpt {
        /// The forward path, brackets included.
        to: String,
    },
    /// `DATA`.
    Data,
    /// `X-DOT-DATA <ticket> [HEADERS]`.
    DotData {
        /// The ticket.
        ticket: String,
        /// The message's header block follows as data; the object is its
        /// body. Without it, the object is the whole message.
        headers: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY` (never answered with an address).
    Vrfy,
    /// `HELP`.
    Help,
}

fn syntax(what: &str) -> Reply {
    Reply::new(501, format!("5.5.4 Syntax: {what}"))
}

/// Parses one command line (without its CRLF).
///
/// # Errors
/// The reply for an unknown command (500) or bad arguments (501).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Reply::new(500, "5.5.2 Command not UTF-8"));
    };
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Reply::new(500, "5.5.2 Control characters in command"));
    }
    let (verb, rest) = match line.split_once(' ') {
        Some((v, r)) => (v, r.trim()),
        None => (line.trim_end(), ""),
    };
    let verb = verb.to_ascii_uppercase();
    let bare = |c: Command, name: &str| {
        if rest.is_empty() || name == "NOOP" || name == "HELP" {
            Ok(c)
        } else {
            Err(syntax(name))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            if rest.is_empty() || rest.len() > MAX_DOMAIN || rest.contains(' ') {
                return Err(syntax(&format!("{verb} hostname")));
            }
            let name = rest.to_owned();
            Ok(if verb == "EHLO" {
                Command::Ehlo(name)
            } else {
                Command::Helo(name)
            })
        }
        "MAIL" => {
            let (from, params) =
                path_after(rest, "FROM:").ok_or_else(|| syntax("MAIL FROM:<address>"))?;
            let mut size = None;
            let mut eight_bit = false;
            for p in params {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                match k.to_ascii_uppercase().as_str() {
                    "SIZE" => {
                        size = Some(v.parse().map_err(|_| syntax("SIZE=<bytes>"))?);
                    }
                    "BODY" => match v.to_ascii_uppercase().as_str() {
                        "8BITMIME" => eight_bit = true,
                        "7BIT" => {}
                        _ => return Err(Reply::new(501, "5.5.4 BODY must be 7BIT or 8BITMIME")),
                    },
                    _ => {
                        return Err(Reply::new(
                            555,
                            format!("5.5.4 Unsupported option: {}", clip(p)),
                        ));
                    }
                }
            }
            Ok(Command::Mail {
                from,
                size,
                eight_bit,
            })
        }
        "RCPT" => {
            let (to, _) = path_after(rest, "TO:").ok_or_else(|| syntax("RCPT TO:<address>"))?;
            if to == "<>" {
                return Err(syntax("RCPT TO:<address>"));
            }
            Ok(Command::Rcpt { to })
        }
        "X-DOT-DATA" => {
            let mut words = rest.split_ascii_whitespace();
            let ticket = words
                .next()
                .ok_or_else(|| syntax("X-DOT-DATA <ticket> [HEADERS]"))?;
            if ticket.len() > MAX_TICKET {
                return Err(Reply::new(501, "5.5.4 Ticket too long"));
            }
            let headers = match words.next() {
                None => false,
                Some(w) if w.eq_ignore_ascii_case("HEADERS") => true,
                Some(_) => return Err(syntax("X-DOT-DATA <ticket> [HEADERS]")),
            };
            if words.next().is_some() {
                return Err(syntax("X-DOT-DATA <ticket> [HEADERS]"));
            }
            Ok(Command::DotData {
                ticket: ticket.to_owned(),
                headers,
            })
        }
        "DATA" => bare(Command::Data, "DATA"),
        "RSET" => bare(Command::Rset, "RSET"),
        "NOOP" => bare(Command::Noop, "NOOP"),
        "QUIT" => bare(Command::Quit, "QUIT"),
        "HELP" => bare(Command::Help, "HELP"),
        "VRFY" => Ok(Command::Vrfy),
        _ => Err(Reply::new(500, "5.5.2 Command unrecognized")),
    }
}

/// `FROM:<path> params` (case-insensitive keyword, a space after the colon
/// tolerated): the path with its brackets, and the parameters.
fn path_after<'a>(rest: &'a str, keyword: &str) -> Option<(String, Vec<&'a str>)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    if !rest.starts_with('<') {
        return None;
    }
    let end = rest.find('>')?;
    let path = &rest[..=end];
    if path.len() > MAX_PATH || path[1..end].contains(['<', ' ']) {
        return None;
    }
    let params = rest[end + 1..].split_ascii_whitespace().collect();
    Some((path.to_owned(), params))
}

/// At most 64 characters of what a client sent, for a reply.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_postfix_sends_parses() {
        assert_eq!(
            parse(b"MAIL FROM:<a@snd.test> SIZE=63536 BODY=8BITMIME"),
            Ok(Command::Mail {
                from: "<a@snd.test>".into(),
                size: Some(63536),
                eight_bit: true
            })
        );
        assert_eq!(
            parse(b"rcpt to: <user@rcv.test>"),
            Ok(Command::Rcpt {
                to: "<user@rcv.test>".into()
            })
        );
        assert_eq!(
            parse(b"MAIL FROM:<>"),
            Ok(Command::Mail {
                from: "<>".into(),
                size: None,
                eight_bit: false
            })
        );
        assert_eq!(
            parse(b"EHLO mx1.snd.test"),
            Ok(Command::Ehlo("mx1.snd.test".into()))
        );
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
    }

    #[test]
    fn x_dot_data_takes_a_ticket_and_an_optional_headers() {
        assert_eq!(
            parse(b"X-DOT-DATA dot1.abc HEADERS"),
            Ok(Command::DotData {
                ticket: "dot1.abc".into(),
                headers: true
            })
        );
        assert_eq!(
            parse(b"x-dot-data dot1.abc"),
            Ok(Command::DotData {
                ticket: "dot1.abc".into(),
                headers: false
            })
        );
        for bad in [
            &b"X-DOT-DATA"[..],
            b"X-DOT-DATA t HEADERS more",
            b"X-DOT-DATA t BODY",
        ] {
            assert_eq!(parse(bad).map_err(|r| r.code), Err(501), "{bad:?}");
        }
        let long = format!("X-DOT-DATA {}", "a".repeat(300));
        assert_eq!(parse(long.as_bytes()).map_err(|r| r.code), Err(501));
    }

    #[test]
    fn bad_lines_get_a_reply_not_a_panic() {
        for (line, code) in [
            (&b"\xff\xfe"[..], 500),
            (b"MAIL FROM:a@b", 501),
            (b"MAIL FROM:<a@b", 501),
            (b"MAIL FROM:<a@b> SIZE=x", 501),
            (b"MAIL FROM:<a@b> NOTIFY=NEVER", 555),
            (b"RCPT TO:<>", 501),
            (b"DATA now", 501),
            (b"EHLO", 501),
            (b"EHLO a\x00b", 500),
            (b"STARTTLS", 500),
            (b"", 500),
        ] {
            assert_eq!(parse(line).map_err(|r| r.code), Err(code), "{line:?}");
        }
        let long_path = format!("MAIL FROM:<{}@x>", "a".repeat(300));
        assert_eq!(parse(long_path.as_bytes()).map_err(|r| r.code), Err(501));
    }
}
