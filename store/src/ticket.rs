//! Tickets: an OID, its hints and an access token in one shell-safe word.
//!
//! Text form: `dot1.` followed by the unpadded base64url encoding of
//!
//! ```text
//! oid: 32 bytes (SHA-256 of the object)
//! then fields, each: tag u8, len u8, value[len]
//!   0x01 access token, 16 bytes
//!   0x02 descriptor-list digest, 32 bytes (see descriptor::list_digest)
//!   0x03 hint: priority u16 BE, weight u16 BE, form u8, address
//!        form 0: URI as UTF-8; form 1: gtc IPv4 (4 bytes + port u16 BE);
//!        form 2: gtc IPv6 (16 bytes + port u16 BE)
//!   0x04 the sender's peer key, 16 bytes (see [`PeerKey`]): the key
//!        of each gtc hint that names none itself (see [`Hint::peer_key`]);
//!        without one, those hints are spoken to over plain TCP
//!   0x05 empty: the object is a tree's manifest (see [`crate::tree`])
//!   0x06 a tree's OID, 32 bytes: the object is a file of that tree, and
//!        the token is the tree's (a peer serves the tree's files to
//!        whoever holds the tree's token)
//! ```
//!
//! Tags at or above 0x80 are optional and skipped by readers that do not
//! know them; unknown tags below 0x80 make the ticket invalid. The whole text
//! is at most [`MAX_TICKET_LEN`] bytes of `[A-Za-z0-9._-]`, so it works as a
//! file name under the FUSE mount, a shell word and a URL path segment.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::error::ParseError;
use crate::hint::Hint;
use crate::oid::{Oid, clip, hex};
use crate::peer_key::PeerKey;

/// Prefix of a ticket's text form.
pub const TICKET_PREFIX: &str = "dot1.";
/// Longest ticket text.
pub const MAX_TICKET_LEN: usize = 255;

const TAG_TOKEN: u8 = 0x01;
const TAG_LIST: u8 = 0x02;
const TAG_HINT: u8 = 0x03;
const TAG_KEY: u8 = 0x04;
const TAG_TREE: u8 = 0x05;
const TAG_VIA: u8 = 0x06;

/// A secret that entitles its holder to fetch one object from a peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub [u8; 16]);

impl Token {
    /// A fresh random token from the kernel's generator.
    ///
    /// # Errors
    /// If the kernel cannot supply random bytes.
    pub fn random() -> std::io::Result<Token> {
        let mut t = [0u8; 16];
        let mut filled = 0;
        while filled < t.len() {
            // SAFETY: the pointer and length describe the unfilled part of `t`.
            let n =
                unsafe { libc::getrandom(t[filled..].as_mut_ptr().cast(), t.len() - filled, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
                continue;
            }
            filled += n as usize;
        }
        Ok(Token(t))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// What proves the right to fetch an object from a peer: the object's
/// token, or, for a file of a tree, the tree's token and the tree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Access {
    /// The token presented.
    pub token: Token,
    /// The tree the token opens, when the object is one of its files.
    pub via: Option<Oid>,
}

impl From<Token> for Access {
    fn from(token: Token) -> Access {
        Access { token, via: None }
    }
}

/// What a receiver needs to fetch an object: its OID, where to get it, and
/// the token the sources ask for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ticket {
    oid: Oid,
    token: Option<Token>,
    list_digest: Option<[u8; 32]>,
    key: Option<PeerKey>,
    tree: bool,
    via: Option<Oid>,
    hints: Vec<Hint>,
}

impl Ticket {
    /// A ticket for `oid`. Hints are kept in the order given (put the most
    /// preferred first); those that do not fit in [`MAX_TICKET_LEN`] are
    /// dropped from the end. [`Ticket::hints`] tells which were kept.
    pub fn new(
        oid: Oid,
        token: Option<Token>,
        list_digest: Option<[u8; 32]>,
        hints: Vec<Hint>,
    ) -> Ticket {
        let mut t = Ticket {
            oid,
            token,
            list_digest,
            key: None,
            tree: false,
            via: None,
            hints,
        };
        t.fit();
        t
    }

    /// The same ticket marking its object as a tree's manifest.
    #[must_use]
    pub fn as_tree(mut self) -> Ticket {
        self.tree = true;
        self.fit();
        self
    }

    /// The ticket of one file of this tree: its OID and descriptor-list
    /// digest, with this ticket's token, key and hints, naming this tree
    /// as what the token opens.
    #[must_use]
    pub fn member(&self, oid: Oid, list_digest: [u8; 32]) -> Ticket {
        let mut t = Ticket {
            oid,
            list_digest: Some(list_digest),
            tree: false,
            via: Some(self.oid),
            ..self.clone()
        };
        t.fit();
        t
    }

    /// The same ticket with `hint` added after its hints (a mirror the
    /// object was published to); `None` if the ticket has no room for it.
    #[must_use]
    pub fn with_hint(mut self, hint: Hint) -> Option<Ticket> {
        self.hints.push(hint.clone());
        self.fit();
        self.hints.contains(&hint).then_some(self)
    }

    /// Whether the object is a tree's manifest.
    pub fn is_tree(&self) -> bool {
        self.tree
    }

    /// The tree whose token this ticket carries, for a file of a tree.
    pub fn via(&self) -> Option<Oid> {
        self.via
    }

    /// The same ticket naming the sender's peer key: its receivers speak
    /// TLS to the hints and refuse a server that cannot prove that key.
    #[must_use]
    pub fn with_key(mut self, key: PeerKey) -> Ticket {
        self.key = Some(key);
        self.fit();
        self
    }

    /// Drops hints from the end until the text fits [`MAX_TICKET_LEN`].
    fn fit(&mut self) {
        while self.encoded_len() > MAX_TICKET_LEN {
            self.hints.pop();
        }
    }

    /// The sender's peer key, if the ticket names one (then its hints are
    /// spoken to over TLS, and must prove it).
    pub fn key(&self) -> Option<PeerKey> {
        self.key
    }

    /// The object.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// The access token, if the ticket carries one.
    pub fn token(&self) -> Option<Token> {
        self.token
    }

    /// What a source is shown for the object: the token, with the tree it
    /// opens for a file of a tree.
    pub fn access(&self) -> Option<Access> {
        self.token.map(|token| Access {
            token,
            via: self.via,
        })
    }

    /// The digest of the object's descriptor list, if the ticket carries one.
    pub fn list_digest(&self) -> Option<[u8; 32]> {
        self.list_digest
    }

    /// The sources, most preferred first.
    pub fn hints(&self) -> &[Hint] {
        &self.hints
    }

    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(self.oid.as_bytes());
        if let Some(t) = self.token {
            field(&mut out, TAG_TOKEN, &t.0);
        }
        if let Some(d) = self.list_digest {
            field(&mut out, TAG_LIST, &d);
        }
        if let Some(k) = self.key {
            field(&mut out, TAG_KEY, &k.0);
        }
        if self.tree {
            field(&mut out, TAG_TREE, &[]);
        }
        if let Some(v) = self.via {
            field(&mut out, TAG_VIA, v.as_bytes());
        }
        for h in &self.hints {
            let mut v = Vec::with_capacity(32);
            v.extend_from_slice(&h.priority.to_be_bytes());
            v.extend_from_slice(&h.weight.to_be_bytes());
            // A hint naming its own key keeps its URI form, and so does
            // one whose address is not written the way the compact form
            // decodes (`[0::1]` for `[::1]`): a ticket decodes to the
            // hints it was made with.
            let compact = h
                .gtc_authority()
                .filter(|_| h.peer_key().is_none())
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .filter(|a| Hint::gtc(*a).uri() == h.uri());
            match compact {
                Some(SocketAddr::V4(a)) => {
                    v.push(1);
                    v.extend_from_slice(&a.ip().octets());
                    v.extend_from_slice(&a.port().to_be_bytes());
                }
                Some(SocketAddr::V6(a)) => {
                    v.push(2);
                    v.extend_from_slice(&a.ip().octets());
                    v.extend_from_slice(&a.port().to_be_bytes());
                }
                None => {
                    v.push(0);
                    v.extend_from_slice(h.uri().as_bytes());
                }
            }
            field(&mut out, TAG_HINT, &v);
        }
        out
    }

    fn encoded_len(&self) -> usize {
        let n = self.payload().len();
        TICKET_PREFIX.len() + (n * 4).div_ceil(3)
    }
}

fn field(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    // Hint URIs are at most MAX_URI_LEN (200) bytes plus a gtc hint's
    // 33-byte `KEY@`, so every value fits.
    out.push(tag);
    out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&value[..value.len().min(255)]);
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TICKET_PREFIX)?;
        f.write_str(&b64_encode(&self.payload()))
    }
}

impl FromStr for Ticket {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Ticket, ParseError> {
        let err = |reason: &str| ParseError::new("ticket", format!("{reason}: {:?}", clip(s)));
        if s.len() > MAX_TICKET_LEN {
            return Err(err("longer than 255 bytes"));
        }
        let body = s
            .strip_prefix(TICKET_PREFIX)
            .ok_or_else(|| err("expected dot1.<base64url>"))?;
        let bytes = b64_decode(body).ok_or_else(|| err("not canonical unpadded base64url"))?;
        if bytes.len() < 32 {
            return Err(err("too short to hold an OID"));
        }
        let mut oid = [0u8; 32];
        oid.copy_from_slice(&bytes[..32]);
        let mut t = Ticket {
            oid: Oid(oid),
            token: None,
            list_digest: None,
            key: None,
            tree: false,
            via: None,
            hints: Vec::new(),
        };
        let mut rest = &bytes[32..];
        while !rest.is_empty() {
            let [tag, len, tail @ ..] = rest else {
                return Err(err("truncated field"));
            };
            let len = usize::from(*len);
            if tail.len() < len {
                return Err(err("truncated field"));
            }
            let (value, next) = tail.split_at(len);
            rest = next;
            match *tag {
                TAG_TOKEN if t.token.is_none() => {
                    t.token = Some(Token(
                        value
                            .try_into()
                            .map_err(|_| err("token must be 16 bytes"))?,
                    ));
                }
                TAG_LIST if t.list_digest.is_none() => {
                    t.list_digest = Some(
                        value
                            .try_into()
                            .map_err(|_| err("list digest must be 32 bytes"))?,
                    );
                }
                TAG_KEY if t.key.is_none() => {
                    t.key = Some(PeerKey(
                        value
                            .try_into()
                            .map_err(|_| err("peer key must be 16 bytes"))?,
                    ));
                }
                TAG_TREE if !t.tree => {
                    if !value.is_empty() {
                        return Err(err("the tree mark holds no value"));
                    }
                    t.tree = true;
                }
                TAG_VIA if t.via.is_none() => {
                    t.via = Some(Oid(value
                        .try_into()
                        .map_err(|_| err("a tree's OID must be 32 bytes"))?));
                }
                TAG_HINT => t
                    .hints
                    .push(decode_hint(value).ok_or_else(|| err("malformed hint"))?),
                TAG_TOKEN | TAG_LIST | TAG_KEY | TAG_TREE | TAG_VIA => {
                    return Err(err("repeated field"));
                }
                tag if tag >= 0x80 => {}
                _ => return Err(err("unknown required field")),
            }
        }
        Ok(t)
    }
}

fn decode_hint(v: &[u8]) -> Option<Hint> {
    let [p0, p1, w0, w1, form, addr @ ..] = v else {
        return None;
    };
    let priority = u16::from_be_bytes([*p0, *p1]);
    let weight = u16::from_be_bytes([*w0, *w1]);
    let hint = match (*form, addr.len()) {
        (0, _) => Hint::new(std::str::from_utf8(addr).ok()?).ok()?,
        (1, 6) => {
            let ip: [u8; 4] = addr[..4].try_into().ok()?;
            Hint::gtc(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                u16::from_be_bytes([addr[4], addr[5]]),
            ))
        }
        (2, 18) => {
            let ip: [u8; 16] = addr[..16].try_into().ok()?;
            Hint::gtc(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                u16::from_be_bytes([addr[16], addr[17]]),
            ))
        }
        _ => return None,
    };
    // A compact gtc form must not hide port 0.
    if *form != 0 && hint.gtc_authority().is_some_and(|a| a.ends_with(":0")) {
        return None;
    }
    Some(hint.with(priority, weight))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url, the alphabet of a ticket's text (public for the
/// fuzz targets, which build ticket texts from raw payloads).
#[doc(hidden)]
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity((data.len() * 4).div_ceil(3));
    for group in data.chunks(3) {
        let mut n = 0u32;
        for (i, b) in group.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=group.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes unpadded base64url, rejecting non-canonical input (a final
/// character with bits set past the data), so each byte string has exactly
/// one text form.
#[doc(hidden)]
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let s = s.as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for group in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in group.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = group.len() - 1;
        if n & ((1 << (24 - 8 * bytes)) - 1) != 0 {
            return None;
        }
        for i in 0..bytes {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_written_unlike_its_compact_form_round_trips() {
        // Found by the `ticket-payload` fuzz target: `gtc://[0::1]:5` was
        // sent in the compact form and came back as `gtc://[::1]:5`, so a
        // ticket did not decode to the ticket it was made from.
        for uri in [
            "gtc://[0::1]:5",
            "gtc://[::FFFF:1.2.3.4]:5",
            "gtc://[::1]:5",
        ] {
            let hint = Hint::new(uri).expect("hint");
            let t = Ticket::new(Oid([1; 32]), None, None, vec![hint]);
            let back: Ticket = t.to_string().parse().expect("parses");
            assert_eq!(back, t, "{uri}");
            assert_eq!(back.hints()[0].uri(), uri);
        }
    }

    fn sample() -> Ticket {
        Ticket::new(
            Oid::of(b"hello"),
            Some(Token([7; 16])),
            Some([9; 32]),
            vec![
                Hint::gtc("127.0.0.1:7000".parse().expect("addr")),
                Hint::gtc("[::1]:7001".parse().expect("addr")).with(20, 3),
                Hint::new("http://mirror.example/x").expect("uri"),
            ],
        )
    }

    #[test]
    fn round_trips_and_is_shell_safe() {
        let t = sample();
        let s = t.to_string();
        assert!(s.len() <= MAX_TICKET_LEN, "{}", s.len());
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{s}"
        );
        assert_eq!(s.parse::<Ticket>(), Ok(t));
    }

    #[test]
    fn a_peer_key_round_trips_and_a_typical_ticket_still_fits() {
        let key = PeerKey::of_spki(b"some public key");
        let t = Ticket::new(
            Oid::of(b"hello"),
            Some(Token([7; 16])),
            Some([9; 32]),
            vec![
                Hint::gtc("192.168.100.200:7420".parse().expect("addr")),
                Hint::gtc("[2001:db8::1234]:7420".parse().expect("addr")),
            ],
        )
        .with_key(key);
        let s = t.to_string();
        assert!(s.len() <= MAX_TICKET_LEN, "{}", s.len());
        assert_eq!(t.hints().len(), 2, "a hint was dropped for the key");
        let back: Ticket = s.parse().expect("parses");
        assert_eq!(back.key(), Some(key));
        assert_eq!(back, t);
    }

    #[test]
    fn a_tree_and_its_members_round_trip_with_their_hints() {
        let key = PeerKey::of_spki(b"some public key");
        let tree = Ticket::new(
            Oid::of(b"manifest"),
            Some(Token([7; 16])),
            Some([9; 32]),
            vec![
                Hint::gtc("192.168.100.200:7420".parse().expect("addr")),
                Hint::gtc("[2001:db8::1234]:7420".parse().expect("addr")),
            ],
        )
        .with_key(key)
        .as_tree();
        let back: Ticket = tree.to_string().parse().expect("parses");
        assert!(back.is_tree() && back.via().is_none());
        assert_eq!(back, tree);
        let member = tree.member(Oid::of(b"file"), [3; 32]);
        let s = member.to_string();
        assert!(s.len() <= MAX_TICKET_LEN, "{}", s.len());
        let m: Ticket = s.parse().expect("parses");
        assert_eq!(m.hints().len(), 2, "a member keeps its tree's hints");
        assert!(!m.is_tree());
        assert_eq!(m.via(), Some(tree.oid()));
        assert_eq!((m.token(), m.key()), (tree.token(), tree.key()));
        assert_eq!(m.list_digest(), Some([3; 32]));
        // A repeated or malformed mark is refused.
        let mut payload = tree.payload();
        payload.extend_from_slice(&[TAG_TREE, 0]);
        assert!(
            format!("{TICKET_PREFIX}{}", b64_encode(&payload))
                .parse::<Ticket>()
                .is_err()
        );
        let mut payload = tree.payload();
        payload.extend_from_slice(&[TAG_VIA, 1, 0]);
        assert!(
            format!("{TICKET_PREFIX}{}", b64_encode(&payload))
                .parse::<Ticket>()
                .is_err()
        );
    }

    #[test]
    fn too_many_hints_are_dropped_from_the_end() {
        let hints: Vec<Hint> = (1..60u16)
            .map(|p| Hint::gtc(SocketAddr::from(([10, 0, 0, 1], p))))
            .collect();
        let t = Ticket::new(Oid::of(b"x"), Some(Token([1; 16])), None, hints.clone());
        assert!(t.to_string().len() <= MAX_TICKET_LEN);
        assert!(!t.hints().is_empty() && t.hints().len() < hints.len());
        assert_eq!(t.hints(), &hints[..t.hints().len()]);
    }

    #[test]
    fn parser_rejects_garbage() {
        let good = sample().to_string();
        let mut bad = vec![
            String::new(),
            "dot1.".to_owned(),
            "dot1.AAAA".to_owned(),
            format!("dot2.{}", &good[5..]),
            format!("{good}A"),
            good.replace('A', "*"),
            format!("{}{}", good, "A".repeat(300)),
        ];
        // Truncated fields.
        let payload = sample().payload();
        bad.push(format!(
            "{TICKET_PREFIX}{}",
            b64_encode(&payload[..payload.len() - 3])
        ));
        // Unknown required tag.
        let mut p = payload.clone();
        p.extend_from_slice(&[0x10, 1, 0]);
        bad.push(format!("{TICKET_PREFIX}{}", b64_encode(&p)));
        for s in bad {
            assert!(s.parse::<Ticket>().is_err(), "{s}");
        }
        // Unknown optional tag is skipped.
        let mut p = payload;
        p.extend_from_slice(&[0x90, 2, 0, 0]);
        assert_eq!(
            format!("{TICKET_PREFIX}{}", b64_encode(&p)).parse::<Ticket>(),
            Ok(sample())
        );
    }

    #[test]
    fn base64_is_canonical() {
        for n in 0..10usize {
            let data: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37)).collect();
            assert_eq!(b64_decode(&b64_encode(&data)), Some(data));
        }
        assert_eq!(b64_decode("AB"), None); // stray low bits
        assert_eq!(b64_decode("AQ"), Some(vec![1]));
    }
}
