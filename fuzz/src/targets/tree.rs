//! Trees' manifests, as a peer or a key hands them over.

use dot_store::descriptor::list_digest;
use dot_store::tree::{Entry, Kind, MAX_NAME, Manifest, Mtime, Pack};
use dot_store::{ChunkHash, Descriptor, Oid};

use super::Target;

pub(super) const TREE: Target = Target {
    name: "tree",
    asserts: "Manifest::decode: a manifest that decodes re-encodes to the same bytes, \
              every entry is safe to make beneath a folder (names of 1..=255 bytes, no . or .., \
              no NUL, each parent a folder listed before it, paths in ascending order), and \
              the packed files tile the pack",
    seeds,
    dict: &[
        b"DOT-TREE\x01\x00",
        b"\x01\x01\xed",
        b"\x02\x01\xa4",
        b"\x03\x01\xff",
        b"/",
        b"..",
        b".",
        b"\x00",
        b"\xff\xff\xff\xff",
    ],
    max_len: 4096,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    let at = Mtime {
        secs: 1_600_000_000,
        nanos: 5,
    };
    let entry = |path: &str, kind| Entry {
        path: path.as_bytes().to_vec(),
        mode: 0o644,
        mtime: at,
        kind,
    };
    let file = |content: &[u8]| Kind::File {
        size: content.len() as u64,
        oid: Oid::of(content),
        list_digest: [7; 32],
    };
    // The pack's chunks: "abc" (one chunk), "", "defg" (two).
    let chunks: Vec<Descriptor> = [(0u64, &b"abc"[..]), (3, b"de"), (5, b"fg")]
        .iter()
        .map(|&(offset, bytes)| Descriptor {
            hash: ChunkHash::of(bytes),
            offset,
            len: bytes.len() as u32,
        })
        .collect();
    let trees = [
        Manifest::new(0o755, at, None, Vec::new(), Vec::new()),
        Manifest::new(
            0o700,
            at,
            Some(Pack {
                size: 7,
                oid: Oid::of(b"abcdefg"),
                list_digest: list_digest(&chunks),
            }),
            vec![
                entry("p", Kind::Dir),
                entry("p/a", Kind::Packed { size: 3, offset: 0 }),
                entry("p/b", Kind::Packed { size: 0, offset: 0 }),
                entry("p/c", Kind::Packed { size: 4, offset: 0 }),
                entry("q", file(b"large")),
            ],
            chunks.clone(),
        ),
        Manifest::new(
            0o700,
            at,
            None,
            vec![
                entry("a", Kind::Dir),
                entry("a/b", file(b"b")),
                entry(
                    "a/c",
                    Kind::Symlink {
                        target: b"../x".to_vec(),
                    },
                ),
                entry("e", Kind::Dir),
                entry("z", file(b"")),
            ],
            Vec::new(),
        ),
    ];
    trees
        .into_iter()
        .filter_map(Result::ok)
        .map(|m| m.encode())
        .collect()
}

fn run(data: &[u8]) -> bool {
    let Ok(m) = Manifest::decode(data) else {
        return false;
    };
    assert_eq!(
        m.encode(),
        data,
        "a decoded manifest re-encodes differently"
    );
    let mut dirs = std::collections::HashSet::new();
    let mut last: Option<&[u8]> = None;
    for e in m.entries() {
        assert!(last.is_none_or(|l| l < e.path.as_slice()), "out of order");
        last = Some(&e.path);
        for name in e.components() {
            assert!(
                !name.is_empty() && name.len() <= MAX_NAME,
                "bad name length"
            );
            assert!(
                name != b"." && name != b".." && !name.contains(&0),
                "unsafe name"
            );
        }
        assert!(
            e.parent().is_empty() || dirs.contains(e.parent()),
            "orphan entry"
        );
        if e.kind == Kind::Dir {
            dirs.insert(e.path.as_slice());
        }
    }
    // Packed files tile the pack, in order.
    let mut at = 0u64;
    for e in m.entries() {
        if let Kind::Packed { size, offset } = e.kind {
            assert_eq!(offset, at, "a packed file out of place");
            at += size;
        }
    }
    assert_eq!(
        at,
        m.pack.map_or(0, |p| p.size),
        "packed files do not fill the pack"
    );
    // Its chunks are the pack's list the header names, a cut at every
    // file's end.
    if let Some(p) = m.pack {
        assert_eq!(list_digest(m.pack_descriptors()), p.list_digest);
    }
    for e in m.entries() {
        if let Kind::Packed { size, offset } = e.kind {
            let end = offset + size;
            assert!(
                size == 0
                    || m.pack_descriptors()
                        .iter()
                        .any(|d| d.offset + u64::from(d.len) == end),
                "a chunk crosses a file's end"
            );
        }
    }
    true
}
