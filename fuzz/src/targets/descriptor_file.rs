//! Descriptor files read from a key (`.dot/objects/<oid>`).

use dot_plugins::portable::{descriptor_file_bytes, parse_descriptor_file};
use dot_store::descriptor::check_descriptors;
use dot_store::{ChunkHash, Descriptor, MAX_CHUNK_LEN};

use super::Target;

pub(super) const DESCRIPTOR_FILE: Target = Target {
    name: "descriptor-file",
    asserts: "a key's descriptor file: one that reads tiles its object exactly and is \
              byte for byte what the writer makes of it; one that does not is InvalidData",
    seeds,
    dict: &[b"DOTDESC1", b"\x00\x00\x40\x00", b"\x01\x00\x00\x00"],
    max_len: 2048,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    let list = |lens: &[u32]| {
        let mut offset = 0u64;
        let descs: Vec<Descriptor> = lens
            .iter()
            .map(|&len| {
                let d = Descriptor {
                    hash: ChunkHash::of(&offset.to_le_bytes()),
                    offset,
                    len,
                };
                offset += u64::from(len);
                d
            })
            .collect();
        descriptor_file_bytes(offset, &descs)
    };
    vec![
        list(&[]),
        list(&[1]),
        list(&[10, 20, 5]),
        list(&[MAX_CHUNK_LEN, 7]),
    ]
}

fn run(data: &[u8]) -> bool {
    match parse_descriptor_file(data) {
        Ok((size, descs)) => {
            assert_eq!(check_descriptors(size, &descs), Ok(()));
            assert!(
                descriptor_file_bytes(size, &descs) == data,
                "re-encoded differently"
            );
            true
        }
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            false
        }
    }
}
