//! Hints: where an object can be fetched.
//!
//! A hint is a method URI (`gtc://host:port` for another agent) with a
//! priority and a weight chosen like DNS SRV records (RFC 2782): sources are
//! tried lowest priority first, and among equal priorities in a random order
//! in which each source's chance of coming first is proportional to its
//! weight.
//!
//! Text form: the URI, optionally followed by `?p=<priority>` and/or
//! `&w=<weight>` (`gtc://10.0.0.1:7000?p=1&w=5`); omitted values take the
//! defaults [`DEFAULT_PRIORITY`] and [`DEFAULT_WEIGHT`].
//!
//! A gtc hint may name the agent's peer key before its address
//! (`gtc://<32 hex digits>@host:port`, see [`PeerKey`]): a receiver then
//! speaks TLS to it and refuses a server that cannot prove that key. A
//! ticket's key is written into each of its gtc hints that names none
//! ([`Hint::with_key`]); a gtc hint with no key is spoken to over plain
//! TCP.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::descriptor::parse_decimal;
use crate::error::ParseError;
use crate::oid::clip;
use crate::peer_key::PeerKey;

/// Priority of a hint that does not give one.
pub const DEFAULT_PRIORITY: u16 = 10;
/// Weight of a hint that does not give one.
pub const DEFAULT_WEIGHT: u16 = 1;
/// Longest URI a hint may carry, not counting the `KEY@` of a gtc hint
/// that names its peer key (so naming the key never makes a valid hint
/// one that no longer parses).
pub const MAX_URI_LEN: usize = 200;
/// Bytes the `KEY@` of a gtc hint adds: 32 hex digits and the `@`.
const KEY_PART_LEN: usize = 33;

/// A source of an object: method URI, SRV-style priority and weight.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Hint {
    uri: String,
    /// Lower is tried first.
    pub priority: u16,
    /// Relative share among hints of equal priority.
    pub weight: u16,
}

impl Hint {
    /// A hint with default priority and weight.
    ///
    /// # Errors
    /// If `uri` is not `scheme://rest` with a lowercase scheme and at most
    /// [`MAX_URI_LEN`] printable ASCII characters (besides a gtc hint's
    /// `KEY@`), or a `gtc` URI without a
    /// valid `host:port`.
    pub fn new(uri: &str) -> Result<Hint, ParseError> {
        check_uri(uri)?;
        Ok(Hint {
            uri: uri.to_owned(),
            priority: DEFAULT_PRIORITY,
            weight: DEFAULT_WEIGHT,
        })
    }

    /// The `gtc://` hint of an agent at `addr`.
    pub fn gtc(addr: SocketAddr) -> Hint {
        Hint {
            uri: format!("gtc://{addr}"),
            priority: DEFAULT_PRIORITY,
            weight: DEFAULT_WEIGHT,
        }
    }

    /// Same hint with another priority and weight.
    pub fn with(mut self, priority: u16, weight: u16) -> Hint {
        self.priority = priority;
        self.weight = weight;
        self
    }

    /// The method URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// A hint as users write an agent's address, the same wherever one is
    /// asked for (`--hint`, `--peer`, `--advertise`, config): a hint URI
    /// (`gtc://[KEY@]host:port[?p=N&w=N]`), or `[KEY@]host:port` for a gtc
    /// hint. The host may be a name; it is resolved when used.
    ///
    /// # Errors
    /// As [`Hint::new`]; a bare address without a host or a port 1..65535.
    pub fn from_address(s: &str) -> Result<Hint, ParseError> {
        if s.contains("://") {
            return s.parse();
        }
        let uri = s.split_once('?').map_or(s, |(u, _)| u);
        let addr = uri.split_once('@').map_or(uri, |(_, a)| a);
        let port_ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && parse_decimal(port).is_some_and(|p| (1..=65535).contains(&p))
        });
        if !port_ok {
            return Err(ParseError::new(
                "hint",
                format!("{:?} is not host:port (or gtc://host:port)", clip(s)),
            ));
        }
        format!("gtc://{s}").parse()
    }

    /// The scheme (`gtc`, ...).
    pub fn scheme(&self) -> &str {
        self.uri.split_once("://").map_or("", |(s, _)| s)
    }

    /// For a `gtc://host:port` hint, `host:port` (without a peer key).
    pub fn gtc_authority(&self) -> Option<&str> {
        let rest = self.uri.strip_prefix("gtc://")?;
        Some(rest.split_once('@').map_or(rest, |(_, addr)| addr))
    }

    /// The peer key a gtc hint names (`gtc://KEY@host:port`), if any.
    pub fn peer_key(&self) -> Option<PeerKey> {
        let rest = self.uri.strip_prefix("gtc://")?;
        rest.split_once('@')?.0.parse().ok()
    }

    /// The same hint naming `key`, if it is a gtc hint that names none yet
    /// (a key it names already stays).
    #[must_use]
    pub fn with_key(mut self, key: Option<PeerKey>) -> Hint {
        if let (Some(key), Some(addr)) = (key, self.gtc_authority())
            && self.peer_key().is_none()
        {
            self.uri = format!("gtc://{key}@{addr}");
        }
        self
    }
}

fn check_uri(uri: &str) -> Result<(), ParseError> {
    let err = |reason: &str| ParseError::new("hint", format!("{reason}: {:?}", clip(uri)));
    if uri.len() > MAX_URI_LEN + KEY_PART_LEN {
        return Err(err("URI too long"));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(err("expected scheme://..."));
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
    if !scheme_ok {
        return Err(err("bad scheme"));
    }
    if rest.is_empty()
        || !rest
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        return Err(err("bad characters after the scheme"));
    }
    if scheme != "gtc" && uri.len() > MAX_URI_LEN {
        return Err(err("URI too long"));
    }
    if scheme == "gtc" {
        let rest = match rest.split_once('@') {
            Some((key, addr)) => {
                key.parse::<PeerKey>()
                    .map_err(|_| err("a gtc hint's key is 32 hex digits"))?;
                addr
            }
            None => rest,
        };
        if "gtc://".len() + rest.len() > MAX_URI_LEN {
            return Err(err("URI too long"));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| err("gtc hints need host:port"))?;
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        let port_ok = parse_decimal(port).is_some_and(|p| (1..=65535).contains(&p));
        if !host_ok || !port_ok {
            return Err(err("gtc hints need host:port"));
        }
    }
    Ok(())
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)?;
        let mut sep = '?';
        if self.priority != DEFAULT_PRIORITY {
            write!(f, "{sep}p={}", self.priority)?;
            sep = '&';
        }
        if self.weight != DEFAULT_WEIGHT {
            write!(f, "{sep}w={}", self.weight)?;
        }
        Ok(())
    }
}

impl FromStr for Hint {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Hint, ParseError> {
        let (uri, query) = match s.split_once('?') {
            Some((u, q)) => (u, Some(q)),
            None => (s, None),
        };
        let mut hint = Hint::new(uri)?;
        let (mut seen_p, mut seen_w) = (false, false);
        for part in query.into_iter().flat_map(|q| q.split('&')) {
            let bad = || {
                ParseError::new(
                    "hint",
                    format!(
                        "bad parameter {:?} (expected p=N or w=N, N <= 65535)",
                        clip(part)
                    ),
                )
            };
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            let value = parse_decimal(value)
                .and_then(|v| u16::try_from(v).ok())
                .ok_or_else(bad)?;
            match key {
                "p" if !seen_p => (hint.priority, seen_p) = (value, true),
                "w" if !seen_w => (hint.weight, seen_w) = (value, true),
                _ => return Err(bad()),
            }
        }
        Ok(hint)
    }
}

/// The order in which to try `hints`: ascending priority; within one
/// priority, the RFC 2782 weighted random order. `random` returns uniformly
/// distributed `u64`s (tests pass a fixed sequence).
pub fn order_hints(hints: &[Hint], mut random: impl FnMut() -> u64) -> Vec<&Hint> {
    let mut sorted: Vec<&Hint> = hints.iter().collect();
    // Zero-weight entries first within a priority, as RFC 2782 asks, so they
    // are picked only with a tiny probability while others remain.
    sorted.sort_by_key(|h| (h.priority, h.weight != 0));
    let mut out = Vec::with_capacity(sorted.len());
    let mut start = 0;
    while start < sorted.len() {
        let prio = sorted[start].priority;
        let end = start
            + sorted[start..]
                .iter()
                .take_while(|h| h.priority == prio)
                .count();
        let mut group: Vec<&Hint> = sorted[start..end].to_vec();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|h| u64::from(h.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                // Zero-weight entries (sorted first) share one extra slot,
                // as in RFC 2782; without them, each hint's chance is exactly
                // weight / total.
                let zero_slot = u64::from(group[0].weight == 0);
                let target = (1 - zero_slot) + random() % (total + zero_slot);
                let mut running = 0u64;
                group
                    .iter()
                    .position(|h| {
                        running += u64::from(h.weight);
                        running >= target
                    })
                    .unwrap_or(group.len() - 1)
            };
            out.push(group.remove(pick));
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_the_peer_key_keeps_a_long_hint_valid() {
        // Found by the `hint` fuzz target: a gtc hint of MAX_URI_LEN
        // characters grew past the limit when its key was named, and so
        // no longer parsed (nor did a ticket carrying it).
        let host = "h".repeat(MAX_URI_LEN - "gtc://:7420".len());
        let h = Hint::new(&format!("gtc://{host}:7420")).expect("at the limit");
        let keyed = h.with_key(Some(PeerKey([7; 16])));
        assert_eq!(keyed.uri().len(), MAX_URI_LEN + KEY_PART_LEN);
        assert_eq!(keyed.to_string().parse::<Hint>(), Ok(keyed.clone()));
        // One more character of address is still too long, key or not.
        let over = format!("gtc://{}h:7420", host);
        assert!(Hint::new(&over).is_err());
        assert!(Hint::new(&format!("gtc://{}@{}h:7420", PeerKey([7; 16]), host)).is_err());
        // Other schemes have no key allowance, even with an `@`.
        let user = format!("ssh://{}@x", "u".repeat(MAX_URI_LEN));
        assert!(Hint::new(&user).is_err());
    }

    #[test]
    fn a_gtc_hint_may_name_a_peer_key() {
        let key = PeerKey::of_spki(b"k");
        let plain: Hint = "gtc://10.0.0.1:7420?p=2".parse().expect("parse");
        assert_eq!(plain.peer_key(), None);
        let keyed = plain.clone().with_key(Some(key));
        assert_eq!(keyed.peer_key(), Some(key));
        assert_eq!(keyed.gtc_authority(), Some("10.0.0.1:7420"));
        assert_eq!(keyed.priority, 2);
        let text = keyed.to_string();
        assert_eq!(text, format!("gtc://{key}@10.0.0.1:7420?p=2"));
        assert_eq!(text.parse::<Hint>(), Ok(keyed.clone()));
        // A key already named stays; no key changes nothing.
        let other = PeerKey::of_spki(b"other");
        assert_eq!(keyed.clone().with_key(Some(other)).peer_key(), Some(key));
        assert_eq!(plain.clone().with_key(None), plain);
        for bad in ["gtc://@h:1", "gtc://xyz@h:1", "gtc://a@b@h:1"] {
            assert!(bad.parse::<Hint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn text_form_round_trips_and_defaults_are_implicit() {
        let h: Hint = "gtc://127.0.0.1:7000".parse().expect("parse");
        assert_eq!((h.priority, h.weight), (DEFAULT_PRIORITY, DEFAULT_WEIGHT));
        assert_eq!(h.to_string(), "gtc://127.0.0.1:7000");
        let h = h.with(1, 5);
        assert_eq!(h.to_string(), "gtc://127.0.0.1:7000?p=1&w=5");
        assert_eq!(h.to_string().parse::<Hint>(), Ok(h));
        let w: Hint = "gtc://[::1]:9?w=0".parse().expect("v6");
        assert_eq!(w.weight, 0);
        assert_eq!(w.gtc_authority(), Some("[::1]:9"));
    }

    #[test]
    fn parser_rejects_garbage() {
        for bad in [
            "",
            "127.0.0.1:7000",
            "gtc://",
            "gtc://host",
            "gtc://host:0",
            "gtc://host:65536",
            "gtc://ho st:1",
            "gtc://[zz]:1",
            "GTC://host:1",
            "gtc://host:1?p=1&p=2",
            "gtc://host:1?q=1",
            "gtc://host:1?p=70000",
            "gtc://host:1?p=",
            "http://a\u{e9}b/",
        ] {
            assert!(bad.parse::<Hint>().is_err(), "{bad:?}");
        }
        assert!(Hint::new(&format!("http://{}", "a".repeat(MAX_URI_LEN))).is_err());
    }

    #[test]
    fn order_is_by_priority_then_weighted() {
        let a = Hint::new("gtc://a:1").expect("a").with(2, 1);
        let b = Hint::new("gtc://b:1").expect("b").with(1, 1);
        let c = Hint::new("gtc://c:1").expect("c").with(1, 0);
        let hints = [a.clone(), b.clone(), c.clone()];
        let mut seq = [0u64, 0, 0].into_iter();
        let order = order_hints(&hints, || seq.next().unwrap_or(0));
        assert_eq!(order.last(), Some(&&a));
        assert_eq!(order.len(), 3);
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let heavy = Hint::new("gtc://heavy:1").expect("h").with(1, 9);
        let light = Hint::new("gtc://light:1").expect("l").with(1, 1);
        let hints = [light, heavy.clone()];
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut rng = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let firsts = (0..10_000)
            .filter(|_| order_hints(&hints, &mut rng)[0] == &heavy)
            .count();
        assert!(
            (8_500..9_500).contains(&firsts),
            "heavy first {firsts} of 10000"
        );
    }

    #[test]
    fn an_address_is_written_the_same_everywhere() {
        for (text, uri) in [
            ("127.0.0.1:7420", "gtc://127.0.0.1:7420"),
            ("gtc://127.0.0.1:7420", "gtc://127.0.0.1:7420"),
            ("example.org:7420", "gtc://example.org:7420"),
            ("[::1]:7420", "gtc://[::1]:7420"),
        ] {
            assert_eq!(Hint::from_address(text).expect(text).uri(), uri);
        }
        let key = "0123456789abcdef0123456789abcdef";
        let h = Hint::from_address(&format!("{key}@h:1?p=2")).expect("keyed");
        assert_eq!(
            (h.uri(), h.priority),
            (format!("gtc://{key}@h:1").as_str(), 2)
        );
        for bad in ["h", "h:0", ":7420", "h:65536", "h:x", "", "gtc://"] {
            assert!(Hint::from_address(bad).is_err(), "{bad:?} accepted");
        }
    }
}
