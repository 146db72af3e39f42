//! The `open-to` prefixes of the config and the `--open-to` flag.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dot_plugins::gtc::access::IpPrefix;

use super::{Target, text};

pub(super) const IP_PREFIX: Target = Target {
    name: "ip-prefix",
    asserts: "IpPrefix::from_str: a prefix that parses prints as text that parses to the \
              same prefix, and holds the address it was written with (an IPv4-mapped \
              address in a prefix wider than /96 excepted: that one is IPv6)",
    seeds: || {
        [
            "10.0.0.0/8",
            "192.168.1.7",
            "fd00::/8",
            "::/0",
            "0.0.0.0/0",
            "::1/128",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dict: &[
        b"/", b".", b":", b"::", b"::ffff:", b"/32", b"/128", b"/129", b"%",
    ],
    max_len: 80,
    run,
};

fn run(data: &[u8]) -> bool {
    let s = text(data);
    let Ok(p) = s.parse::<IpPrefix>() else {
        return false;
    };
    let again = p.to_string();
    assert_eq!(
        again.parse::<IpPrefix>().ok(),
        Some(p),
        "{s:?} printed {again:?}"
    );
    if let Some(addr) = s.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) {
        // An IPv6 prefix wider than ::ffff:0:0/96 holds no IPv4 peer, not
        // even one it was written with in mapped form.
        let mapped_in_wide_v6 = addr.to_canonical().is_ipv4() && again.contains(':');
        assert!(
            p.contains(addr) || mapped_in_wide_v6,
            "{s:?} does not hold {addr}"
        );
    }
    // Any other address: no panic.
    let mut b = [0u8; 16];
    for (i, x) in data.iter().enumerate() {
        b[i % 16] ^= *x;
    }
    let _ = p.contains(IpAddr::V6(Ipv6Addr::from(b)));
    let _ = p.contains(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])));
    true
}
