//! The gtc peer protocol: frames as a peer sends them, and a descriptor
//! list put together from `Desc` pages as the fetching client does.

use dot_plugins::gtc::desc_list::DescList;
use dot_plugins::gtc::proto::{self, DescPage, ErrorCode, Frame, MAX_ERROR_MSG};
use dot_store::descriptor::check_descriptors;
use dot_store::{Bytes, ChunkHash, Descriptor, Oid, Token};

use super::Target;

pub(super) const FRAME: Target = Target {
    name: "frame",
    asserts: "gtc frames back to back (proto::decode, parse_frame): a frame decoded \
              re-encodes to a frame that decodes the same (an Error message cut at 1024 \
              bytes); parse_frame agrees with decode; a frame cut short is incomplete, not \
              an error",
    seeds: frame_seeds,
    dict: &[b"DOT1", b"\x00\x00\x00", b"\x01", b"\x03", b"\x05", b"\x07"],
    max_len: 4096,
    run: frame,
};

pub(super) const DESC_LIST: Target = Target {
    name: "desc-list",
    asserts: "Desc pages fed to the client's DescList as they decode: a list it calls \
              whole tiles its object exactly (check_descriptors), lengths summing to the size",
    seeds: desc_list_seeds,
    dict: &[b"\x00\x00\x00", b"\x03", b"\xff\xff\xff\xff"],
    max_len: 4096,
    run: desc_list,
};

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// A page of `descs` (chunks of 10 bytes) of an object of `size` bytes
/// with `total` chunks, starting at descriptor `first`.
fn page(first: u32, n: u32, total: u32, size: u64) -> DescPage {
    DescPage {
        req: 1,
        size,
        total,
        first,
        descs: (first..first + n)
            .map(|i| Descriptor {
                hash: ChunkHash::of(&i.to_be_bytes()),
                offset: u64::from(i) * 10,
                len: 10,
            })
            .collect(),
    }
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let all = vec![
        Frame::Hello {
            version: proto::VERSION,
        },
        Frame::DescReq {
            req: 1,
            oid: Oid::of(b"x"),
            token: Token([9; 16]),
            first: 0,
            via: None,
        },
        Frame::DescReq {
            req: 3,
            oid: Oid::of(b"x"),
            token: Token([9; 16]),
            first: 2,
            via: Some(Oid::of(b"tree")),
        },
        Frame::Desc(page(0, 3, 3, 30)),
        Frame::Desc(page(2, 0, 2, 20)),
        Frame::ChunkReq {
            req: 2,
            oid: Oid::of(b"x"),
            index: 1,
        },
        Frame::Chunk {
            req: 2,
            index: 1,
            data: Bytes::from_static(b"chunk bytes"),
        },
        Frame::Cancel { req: 3 },
        Frame::Error {
            req: 4,
            code: ErrorCode::NotFound,
            message: "no such object".into(),
        },
    ];
    let mut seeds: Vec<Vec<u8>> = all
        .iter()
        .map(|f| encoded(std::slice::from_ref(f)))
        .collect();
    seeds.push(encoded(&all));
    seeds
}

fn frame(data: &[u8]) -> bool {
    let mut at = 0;
    let mut any = false;
    while let Ok(Some((f, n))) = proto::decode(&data[at..]) {
        assert!(
            n > 4 && at + n <= data.len(),
            "used {n} bytes of {}",
            data.len() - at
        );
        let whole = &data[at..at + n];
        assert_eq!(proto::decode(&whole[..n - 1]), Ok(None), "a cut frame");
        assert_eq!(
            proto::parse_frame(Bytes::copy_from_slice(whole)).as_ref(),
            Ok(&f)
        );
        check_reencoded(&f);
        at += n;
        any = true;
    }
    any
}

fn check_reencoded(f: &Frame) {
    let mut buf = Vec::new();
    f.encode(&mut buf);
    let (g, n) = match proto::decode(&buf) {
        Ok(Some(x)) => x,
        other => panic!("{f:?} re-encoded does not decode: {other:?}"),
    };
    assert_eq!(n, buf.len());
    match (f, &g) {
        (
            Frame::Error { req, code, message },
            Frame::Error {
                req: r2,
                code: c2,
                message: m2,
            },
        ) if message.len() > MAX_ERROR_MSG => {
            assert_eq!((req, code), (r2, c2));
            assert!(m2.len() <= MAX_ERROR_MSG && message.starts_with(m2.as_str()));
        }
        _ => assert_eq!(&g, f),
    }
}

fn desc_list_seeds() -> Vec<Vec<u8>> {
    vec![
        encoded(&[Frame::Desc(page(0, 5, 5, 50))]),
        encoded(&[
            Frame::Desc(page(0, 2, 5, 50)),
            Frame::Desc(page(2, 3, 5, 50)),
        ]),
        encoded(&[
            Frame::Desc(page(0, 1, 3, 30)),
            Frame::Desc(page(1, 1, 3, 30)),
            Frame::Desc(page(2, 1, 3, 30)),
        ]),
        encoded(&[Frame::Desc(page(0, 0, 0, 0))]),
    ]
}

fn desc_list(data: &[u8]) -> bool {
    let mut list = DescList::new();
    let mut at = 0;
    while let Ok(Some((f, n))) = proto::decode(&data[at..]) {
        at += n;
        let Frame::Desc(page) = f else {
            continue;
        };
        match list.add(page) {
            Ok(false) => {}
            Ok(true) => {
                let Ok((size, descs)) = list.finish() else {
                    return false;
                };
                assert_eq!(check_descriptors(size, &descs), Ok(()));
                let sum: u64 = descs.iter().map(|d| u64::from(d.len)).sum();
                assert_eq!(sum, size);
                return true;
            }
            Err(_) => return false,
        }
    }
    false
}
