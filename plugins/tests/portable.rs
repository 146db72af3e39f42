//! The on-device layout and the portable source, on a folder standing in
//! for a mounted key (the loop-device tests are in tests/tests/).

use std::fs;

use dot_plugins::portable::{DIR, Device, PortableSource};
use dot_plugins::transfer::ChunkSink;
use dot_plugins::{ChunkEvent, Transfer, TransferError};
use dot_store::Oid;

mod common;
use common::{bytes, store};

/// A store holding a 1 MiB object, and a key it was exported to.
fn exported() -> (tempfile::TempDir, tempfile::TempDir, Oid, Vec<u8>) {
    let home = tempfile::tempdir().expect("tempdir");
    let key = tempfile::tempdir().expect("tempdir");
    let s = store(home.path());
    let data = bytes(1 << 20, 3);
    let oid = s.put_reader(&mut &data[..]).expect("put").oid;
    let dev = Device::create(key.path()).expect("create");
    let mut seen = Vec::new();
    let size = dev
        .export(&s, oid, |done, total| seen.push((done, total)))
        .expect("export");
    assert_eq!(size, data.len() as u64);
    assert_eq!(
        seen.last(),
        Some(&(size, size)),
        "progress ends at the size"
    );
    (home, key, oid, data)
}

async fn read_all(src: &PortableSource, oid: Oid) -> (Vec<Option<Vec<u8>>>, Vec<u32>) {
    let d = src.get_descriptors(oid, None).await.expect("descriptors");
    let wanted: Vec<_> = d
        .descriptors
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u32, *d))
        .collect();
    let mut got = vec![None; wanted.len()];
    let mut failed = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    src.get_chunks(oid, wanted, ChunkSink::new(tx, 0));
    while let Some((_, ev)) = rx.recv().await {
        match ev {
            ChunkEvent::Chunk(chunk) => got[chunk.index() as usize] = Some(chunk.data().to_vec()),
            ChunkEvent::Failed { index, .. } => failed.push(index),
            ChunkEvent::SourceFailed(e) => panic!("device failed: {e}"),
        }
    }
    (got, failed)
}

#[tokio::test]
async fn an_exported_object_is_read_back_whole_from_the_key_alone() {
    let (_home, key, oid, data) = exported();
    let dev = Device::open(key.path()).expect("open");
    assert_eq!(dev.objects(), vec![oid]);
    let (got, failed) = read_all(&PortableSource::new(dev), oid).await;
    assert!(failed.is_empty());
    let joined: Vec<u8> = got.into_iter().flat_map(|c| c.expect("chunk")).collect();
    assert_eq!(joined, data);
    // Only vfat-safe names, and nothing left in tmp/.
    let tmp = key.path().join(DIR).join("tmp");
    assert_eq!(fs::read_dir(tmp).expect("tmp").count(), 0);
}

#[tokio::test]
async fn a_corrupt_or_missing_chunk_file_is_a_failed_chunk_never_a_wrong_byte() {
    let (_home, key, oid, _data) = exported();
    let dev = Device::open(key.path()).expect("open");
    let (_, descs) = dev.read_descriptors(oid).expect("descriptors");
    let chunk_file = |i: usize| dev.chunk_path(&descs[i].hash);
    let mut bad = fs::read(chunk_file(1)).expect("chunk");
    bad[10] ^= 0xff;
    fs::write(chunk_file(1), &bad).expect("corrupt");
    fs::remove_file(chunk_file(2)).expect("remove");
    fs::write(chunk_file(3), b"short").expect("truncate");
    let (got, mut failed) = read_all(&PortableSource::new(dev), oid).await;
    failed.sort_unstable();
    assert_eq!(failed, vec![1, 2, 3]);
    assert!(got[0].is_some() && got[4].is_some());
}

#[tokio::test]
async fn a_malformed_descriptor_file_is_a_clear_error() {
    let (_home, key, oid, _data) = exported();
    let path = key.path().join(DIR).join("objects").join(oid.to_string());
    let good = fs::read(&path).expect("read");
    let src = PortableSource::new(Device::open(key.path()).expect("open"));
    for (what, bytes) in [
        ("truncated", good[..good.len() - 7].to_vec()),
        ("bad magic", [b"NOTDESC1".as_slice(), &good[8..]].concat()),
        ("huge count", {
            let mut b = good.clone();
            b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        }),
        ("wrong size", {
            let mut b = good.clone();
            b[8..16].copy_from_slice(&1u64.to_le_bytes());
            b
        }),
    ] {
        fs::write(&path, &bytes).expect("write");
        match src.get_descriptors(oid, None).await {
            Err(TransferError::BadDescriptors { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    fs::remove_file(&path).expect("rm");
    assert!(src.get_descriptors(oid, None).await.is_err());
}

#[test]
fn exporting_again_repairs_damaged_chunk_files() {
    let (home, key, oid, data) = exported();
    let dev = Device::open(key.path()).expect("open");
    let (_, descs) = dev.read_descriptors(oid).expect("descriptors");
    let chunk_file = |i: usize| dev.chunk_path(&descs[i].hash);
    let mut bad = fs::read(chunk_file(0)).expect("chunk");
    bad[0] ^= 1;
    fs::write(chunk_file(0), &bad).expect("flip a byte");
    fs::write(chunk_file(1), b"").expect("empty");
    let s = store(home.path());
    dev.export(&s, oid, |_, _| {}).expect("export again");
    for (i, d) in descs.iter().enumerate().take(2) {
        let got = dev
            .read_chunk(i as u32, d)
            .expect("readable")
            .expect("present");
        assert_eq!(
            got.data(),
            &data[d.offset as usize..d.end() as usize],
            "chunk {i}"
        );
    }
}
