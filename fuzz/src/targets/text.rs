//! The short text forms: hints, OIDs with chunk hashes and peer keys, and
//! descriptors.

use dot_store::descriptor::MAX_OBJECT_SIZE;
use dot_store::{ChunkHash, Descriptor, Hint, MAX_CHUNK_LEN, Oid, PeerKey};

use super::{Target, text};

pub(super) const HINT: Target = Target {
    name: "hint",
    asserts: "Hint::from_str: a hint that parses prints as text that parses to the same \
              hint; naming a peer key keeps it a hint that parses",
    seeds: || {
        [
            "gtc://192.0.2.7:7420",
            "gtc://[2001:db8::1]:7420?p=20&w=3",
            "gtc://peer.example:1?w=0",
            "gtc://00112233445566778899aabbccddeeff@10.0.0.1:65535",
            "http://example.org/x?p=1",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dict: &[
        b"gtc://", b"://", b"?p=", b"&w=", b"@", b":", b"[", b"]", b"::", b"65535", b"65536",
    ],
    max_len: 260,
    run: hint,
};

pub(super) const OID: Target = Target {
    name: "oid",
    asserts: "Oid, ChunkHash and PeerKey from_str: what parses prints back as the input \
              (a peer key: in lowercase) and parses to the same value",
    seeds: || {
        vec![
            Oid::of(b"x").to_string().into_bytes(),
            ChunkHash::of(b"x").to_string().into_bytes(),
            PeerKey([0xab; 16]).to_string().into_bytes(),
        ]
    },
    dict: &[b"dot1-sha256-", b"dot2-", b"-sha1-", b"0", b"f", b"F", b"g"],
    max_len: 100,
    run: oid,
};

pub(super) const DESCRIPTOR: Target = Target {
    name: "descriptor",
    asserts: "Descriptor::from_str: what parses prints back as the input, has a length in \
              1..=4 MiB and ends within the largest object",
    seeds: || {
        let d = Descriptor {
            hash: ChunkHash::of(b"x"),
            offset: 65536,
            len: 4096,
        };
        let last = Descriptor {
            offset: MAX_OBJECT_SIZE - u64::from(MAX_CHUNK_LEN),
            len: MAX_CHUNK_LEN,
            ..d
        };
        vec![d.to_string().into_bytes(), last.to_string().into_bytes()]
    },
    dict: &[
        b"@",
        b"+",
        b"0",
        b"4194304",
        b"4194305",
        b"18446744073709551615",
    ],
    max_len: 120,
    run: descriptor,
};

fn hint(data: &[u8]) -> bool {
    let s = text(data);
    let Ok(h) = s.parse::<Hint>() else {
        return false;
    };
    let again = h.to_string();
    assert_eq!(
        again.parse::<Hint>().ok(),
        Some(h.clone()),
        "{s:?} printed {again:?}"
    );
    assert_eq!(
        Hint::new(h.uri()).ok().map(|n| n.uri().to_owned()),
        Some(h.uri().to_owned())
    );
    let _ = (h.scheme(), h.gtc_authority(), h.peer_key());
    let keyed = h.clone().with_key(Some(PeerKey([7; 16])));
    let text = keyed.to_string();
    assert_eq!(
        text.parse::<Hint>().ok(),
        Some(keyed),
        "{s:?} with a peer key printed {text:?}"
    );
    true
}

fn oid(data: &[u8]) -> bool {
    let s = text(data);
    let mut ok = false;
    if let Ok(o) = s.parse::<Oid>() {
        assert_eq!(o.to_string(), s);
        ok = true;
    }
    if let Ok(h) = s.parse::<ChunkHash>() {
        assert_eq!(h.to_string(), s);
        ok = true;
    }
    if let Ok(k) = s.parse::<PeerKey>() {
        assert_eq!(k.to_string(), s.to_ascii_lowercase());
        assert_eq!(k.to_string().parse::<PeerKey>().ok(), Some(k));
        ok = true;
    }
    ok
}

fn descriptor(data: &[u8]) -> bool {
    let s = text(data);
    let Ok(d) = s.parse::<Descriptor>() else {
        return false;
    };
    assert_eq!(d.to_string(), s);
    assert!((1..=MAX_CHUNK_LEN).contains(&d.len));
    assert!(d.end() <= MAX_OBJECT_SIZE);
    true
}
