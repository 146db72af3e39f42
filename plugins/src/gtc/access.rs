//! Who may fetch an object by its OID alone, without the object's access
//! token: the addresses an agent's `open-to` configuration names (a trusted
//! LAN, the hosts of one user). Everyone else must present the token a
//! ticket carries.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address prefix: `10.0.0.0/8`, `192.168.1.7` (one host), `fd00::/8`.
/// An IPv4-mapped prefix (`::ffff:10.0.0.0/104`) is kept as the IPv4
/// prefix it names (`10.0.0.0/8`), since peers' addresses are compared in
/// their canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Whether `ip` is inside the prefix (an IPv4 address seen as
    /// IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Why a prefix did not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or ADDRESS/LENGTH prefix")]
pub struct BadPrefix(String);

impl FromStr for IpPrefix {
    type Err = BadPrefix;

    fn from_str(s: &str) -> Result<IpPrefix, BadPrefix> {
        let bad = || BadPrefix(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
        };
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
            && len >= 96
        {
            return Ok(IpPrefix {
                addr: IpAddr::V4(v4),
                len: len - 96,
            });
        }
        Ok(IpPrefix { addr, len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The serving side's access rules.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Peers in these prefixes fetch by OID alone.
    pub open_to: Vec<IpPrefix>,
}

impl Policy {
    /// Whether `peer` may fetch without the object's token.
    pub fn is_open_to(&self, peer: IpAddr) -> bool {
        self.open_to.iter().any(|p| p.contains(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn prefixes_parse_and_match() {
        let lan: IpPrefix = "10.1.0.0/16".parse().expect("prefix");
        assert!(lan.contains(ip("10.1.200.3")));
        assert!(!lan.contains(ip("10.2.0.1")));
        assert!(lan.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(!lan.contains(ip("fd00::1")));
        let host: IpPrefix = "127.0.0.1".parse().expect("host");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let all: IpPrefix = "0.0.0.0/0".parse().expect("all v4");
        assert!(all.contains(ip("192.0.2.1")));
        let v6: IpPrefix = "fd00::/8".parse().expect("v6");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "host",
            "10.0.0.0/x",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad}");
        }
        assert_eq!(lan.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn an_ipv4_mapped_prefix_matches_its_ipv4_peers() {
        // Found by the `ip-prefix` fuzz target: `::ffff:a.b.c.d` prefixes
        // were kept as IPv6 while peers are compared in canonical (IPv4)
        // form, so such a prefix matched nobody, not even its own address.
        let p: IpPrefix = "::ffff:10.1.0.0/112".parse().expect("prefix");
        assert_eq!(p.to_string(), "10.1.0.0/16");
        assert!(p.contains(ip("10.1.2.3")) && p.contains(ip("::ffff:10.1.2.3")));
        assert!(!p.contains(ip("10.2.0.1")));
        let host: IpPrefix = "::ffff:15.0.0.8".parse().expect("host");
        assert!(host.contains(ip("::ffff:f00:8")) && host.contains(ip("15.0.0.8")));
        // A wider IPv6 prefix stays IPv6 and opens nothing to IPv4 peers.
        let wide: IpPrefix = "::ffff:0.0.0.0/80".parse().expect("prefix");
        assert!(!wide.contains(ip("10.0.0.1")));
    }

    #[test]
    fn the_default_policy_is_closed() {
        assert!(!Policy::default().is_open_to(ip("127.0.0.1")));
        let p = Policy {
            open_to: vec!["127.0.0.0/8".parse().expect("prefix")],
        };
        assert!(p.is_open_to(ip("127.0.0.5")) && !p.is_open_to(ip("10.0.0.1")));
    }
}
