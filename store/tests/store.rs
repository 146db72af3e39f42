//! Store behaviour through its public API, on real files in temp folders.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{bytes, describe};
use dot_store::{Descriptor, Error, Oid, Store, StoreOptions};

fn open(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            durable: false,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

/// A store of at most `budget` bytes.
fn open_with_budget(dir: &Path, budget: u64) -> Store {
    let opts = StoreOptions {
        durable: false,
        budget,
        ..StoreOptions::default()
    };
    Store::open(dir, opts).expect("open")
}

/// Begins filling `oid` with `descs` and writes each chunk of `data`.
fn fill_all(store: &Store, oid: Oid, data: &[u8], descs: &[Descriptor]) {
    store
        .begin_fill(oid, data.len() as u64, descs)
        .expect("begin");
    for (i, d) in descs.iter().enumerate() {
        store
            .write_chunk(oid, i as u32, chunk(data, d))
            .expect("write");
    }
}

fn chunk<'a>(data: &'a [u8], d: &Descriptor) -> &'a [u8] {
    &data[d.offset as usize..d.end() as usize]
}

#[test]
fn put_from_a_stream_stores_a_copy_that_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for n in [0usize, 1, 16 << 10, 3 << 20] {
        let data = bytes(n, n as u64);
        let out = store.put_reader(&mut &data[..]).expect("put");
        assert_eq!(out.oid, Oid::of(&data));
        assert_eq!(out.size, n as u64);
        let info = store.info(out.oid).expect("info").expect("known");
        assert!(info.complete && info.referenced.is_none());
        assert_eq!(info.present, info.chunks);
        assert_eq!(store.read_at(out.oid, 0, n + 10).expect("read"), data);
        let descs = store.descriptors(out.oid).expect("descs");
        assert_eq!(descs.as_ref(), describe(&data).as_slice());
        for (i, d) in descs.iter().enumerate() {
            assert_eq!(
                store.read_chunk(out.oid, i as u32).expect("chunk"),
                chunk(&data, d)
            );
        }
    }
}

#[test]
fn put_writer_streams_and_an_abandoned_writer_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = bytes(5 << 20, 3);
    let mut w = store.put_writer();
    for piece in data.chunks(7777) {
        w.write_all(piece).expect("write");
    }
    let out = w.finish().expect("finish");
    assert_eq!(out.oid, Oid::of(&data));
    assert_eq!(
        store.read_at(out.oid, 1000, 5000).expect("read"),
        &data[1000..6000]
    );

    let mut w = store.put_writer();
    w.write_all(&bytes(100_000, 4)).expect("write");
    drop(w);
    assert_eq!(
        store.list().expect("list").len(),
        1,
        "abandoned put left an object"
    );
    assert_eq!(
        fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
        0
    );
}

#[test]
fn put_by_file_references_without_copying_and_caches_the_oid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let src = dir.path().join("input.bin");
    let data = bytes(2 << 20, 9);
    fs::write(&src, &data).expect("write input");

    let first = store.put_path(&src).expect("put");
    assert!(first.hashed);
    assert_eq!(first.oid, Oid::of(&data));
    assert_eq!(
        store.stored_bytes().expect("usage"),
        0,
        "a referenced put copied bytes"
    );
    let info = store.info(first.oid).expect("info").expect("known");
    assert_eq!(info.referenced.as_deref(), Some(src.as_path()));
    assert_eq!(store.read_at(first.oid, 0, data.len()).expect("read"), data);

    // Unchanged: the OID comes from the cache, nothing is hashed.
    let again = store.put_path(&src).expect("put again");
    assert!(!again.hashed);
    assert_eq!(again.oid, first.oid);
    assert_eq!((again.size, again.chunks), (first.size, first.chunks));
}

#[test]
fn a_changed_referenced_file_is_detected_and_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("input.bin");
    let data = bytes(1 << 20, 10);
    fs::write(&src, &data).expect("write input");
    let store = open(dir.path());
    let oid = store.put_path(&src).expect("put").oid;
    assert!(store.read_chunk(oid, 0).is_ok());

    // Same size, new bytes, mtime moved.
    let mut changed = data.clone();
    changed[10] ^= 1;
    fs::write(&src, &changed).expect("rewrite");
    let f = File::options().write(true).open(&src).expect("open");
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("mtime");
    match store.read_chunk(oid, 0) {
        Err(Error::FileChanged { oid: o, gone, .. }) => assert_eq!((o, gone), (oid, false)),
        other => panic!("changed file served: {other:?}"),
    }
    // The reader that found it made the store forget it.
    assert!(store.info(oid).expect("info").is_none());

    // Same size and the old mtime restored: the chunk hash still catches it.
    let reopened = tempfile::tempdir().expect("tempdir");
    let src2 = reopened.path().join("input.bin");
    fs::write(&src2, &data).expect("write");
    let store2 = open(reopened.path());
    let oid2 = store2.put_path(&src2).expect("put").oid;
    let mtime = fs::metadata(&src2)
        .expect("meta")
        .modified()
        .expect("mtime");
    fs::write(&src2, &changed).expect("rewrite");
    File::options()
        .write(true)
        .open(&src2)
        .expect("open")
        .set_modified(mtime)
        .expect("mtime");
    // Found by a check of the whole store, before any read.
    let report = store2.verify().expect("verify");
    assert_eq!(report.changed_files.len(), 1, "{report:?}");
    assert!(
        store2.info(oid2).expect("info").is_none(),
        "changed object still listed"
    );
}

#[test]
fn a_receiver_fills_an_object_chunk_by_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = bytes(3 << 20, 11);
    let oid = Oid::of(&data);
    let descs = describe(&data);
    let missing = store
        .begin_fill(oid, data.len() as u64, &descs)
        .expect("begin");
    assert_eq!(missing.len(), descs.len());
    assert!(matches!(
        store.read_chunk(oid, 0),
        Err(Error::ChunkMissing { .. })
    ));
    assert!(matches!(store.finish(oid), Err(Error::ChunkMissing { .. })));

    // Wrong bytes are refused and change nothing.
    let mut bad = chunk(&data, &descs[1]).to_vec();
    bad[0] ^= 0xff;
    assert!(matches!(
        store.write_chunk(oid, 1, &bad),
        Err(Error::ChunkMismatch { index: 1, .. })
    ));
    assert!(matches!(
        store.write_chunk(oid, 1, &bad[1..]),
        Err(Error::ChunkLength { .. })
    ));
    assert!(matches!(
        store.write_chunk(oid, 999_999, &bad),
        Err(Error::NoSuchChunk { .. })
    ));
    assert!(!store.has_chunk(oid, 1).expect("has"));

    // A waiter on the last chunk wakes when it arrives.
    let last = descs.len() as u32 - 1;
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || store.wait_chunk(oid, last, Duration::from_secs(30)))
    };
    for (i, d) in descs.iter().enumerate().rev() {
        assert!(
            store
                .write_chunk(oid, i as u32, chunk(&data, d))
                .expect("write")
        );
    }
    assert!(
        !store
            .write_chunk(oid, 0, chunk(&data, &descs[0]))
            .expect("rewrite"),
        "second write of a present chunk"
    );
    waiter.join().expect("join").expect("waiter woke");
    assert!(store.missing(oid).expect("missing").is_empty());
    store.finish(oid).expect("finish");
    let info = store.info(oid).expect("info").expect("known");
    assert!(info.complete);
    assert_eq!(store.read_at(oid, 0, data.len()).expect("read"), data);
}

#[test]
fn waiting_for_a_chunk_that_never_comes_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = bytes(100_000, 12);
    let oid = Oid::of(&data);
    store
        .begin_fill(oid, data.len() as u64, &describe(&data))
        .expect("begin");
    let t = Instant::now();
    assert!(matches!(
        store.wait_chunk(oid, 0, Duration::from_millis(200)),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[test]
fn descriptor_lists_that_lie_are_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = bytes(500_000, 14);
    let oid = Oid::of(&data);
    let mut descs = describe(&data);
    // A list with a gap is refused before anything is stored.
    let mut gap = descs.clone();
    gap.remove(1);
    assert!(matches!(
        store.begin_fill(oid, data.len() as u64, &gap),
        Err(Error::BadDescriptors { .. })
    ));
    assert!(store.info(oid).expect("info").is_none());

    // A well-formed list for other bytes: every chunk verifies, the object does not.
    let other = bytes(500_000, 15);
    descs = describe(&other);
    fill_all(&store, oid, &other, &descs);
    assert!(matches!(
        store.finish(oid),
        Err(Error::ObjectMismatch { .. })
    ));
    assert!(
        store.info(oid).expect("info").is_none(),
        "a lying object was kept"
    );
}

#[test]
fn chunks_held_by_any_object_are_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let base = bytes(4 << 20, 16);
    store.put_reader(&mut &base[..]).expect("put base");

    // A new version: an insertion near the start.
    let mut edited = base[..1000].to_vec();
    edited.extend_from_slice(b"inserted bytes");
    edited.extend_from_slice(&base[1000..]);
    let oid = Oid::of(&edited);
    let descs = describe(&edited);
    store
        .begin_fill(oid, edited.len() as u64, &descs)
        .expect("begin");
    let reused = store.fill_from_local(oid).expect("reuse");
    let missing = store.missing(oid).expect("missing");
    assert_eq!(reused as usize + missing.len(), descs.len());
    assert!(
        missing.len() <= 3,
        "{} of {} chunks still missing",
        missing.len(),
        descs.len()
    );
    for i in missing {
        store
            .write_chunk(oid, i, chunk(&edited, &descs[i as usize]))
            .expect("write");
    }
    store.finish(oid).expect("finish");
    assert_eq!(store.read_at(oid, 0, edited.len()).expect("read"), edited);
}

#[test]
fn pinned_objects_stay_and_the_least_recently_used_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with_budget(dir.path(), 5 << 20);
    let a = store
        .put_reader(&mut &bytes(2 << 20, 20)[..])
        .expect("a")
        .oid;
    store.pin(a);
    let b = store
        .put_reader(&mut &bytes(2 << 20, 21)[..])
        .expect("b")
        .oid;
    let c = store
        .put_reader(&mut &bytes(2 << 20, 22)[..])
        .expect("c")
        .oid;
    // 6 MiB > 5 MiB: b, the oldest unpinned, went; pinned a stayed.
    let have = |o| store.info(o).expect("info").is_some();
    assert!(have(a) && !have(b) && have(c));
    assert!(
        !dir.path()
            .join("objects")
            .join(&b.hex()[..2])
            .join(b.hex())
            .exists(),
        "evicted file remains"
    );
    store.unpin(a);
    let d = store
        .put_reader(&mut &bytes(2 << 20, 23)[..])
        .expect("d")
        .oid;
    assert!(have(d));
    assert!(store.stored_bytes().expect("usage") <= 5 << 20);
    assert_eq!(
        [a, c].iter().filter(|o| have(**o)).count(),
        1,
        "one of a and c evicted"
    );
}

#[test]
fn verify_finds_damage_and_marks_it_for_refetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(3 << 20, 30);
    let oid = {
        let store = open(dir.path());
        let oid = store.put_reader(&mut &data[..]).expect("put").oid;
        assert!(store.verify().expect("verify").is_clean());
        oid
    };
    // Flip a byte inside chunk 2 of the stored file.
    let store = open(dir.path());
    let d = store.descriptors(oid).expect("descs")[2];
    let path = dir
        .path()
        .join("objects")
        .join(&oid.hex()[..2])
        .join(oid.hex());
    let mut raw = fs::read(&path).expect("read object file");
    raw[d.offset as usize + 5] ^= 0x40;
    fs::write(&path, &raw).expect("corrupt");
    let report = store.verify().expect("verify");
    assert_eq!(report.damaged_chunks, vec![(oid, 2)]);
    let info = store.info(oid).expect("info").expect("known");
    assert!(!info.complete);
    assert_eq!(store.missing(oid).expect("missing"), vec![2]);
    // Refetching the chunk repairs the object.
    store.write_chunk(oid, 2, chunk(&data, &d)).expect("repair");
    store.finish(oid).expect("finish");
    assert!(store.verify().expect("verify").is_clean());
}

#[test]
fn partial_objects_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(2 << 20, 40);
    let oid = Oid::of(&data);
    let descs = describe(&data);
    {
        let store = open(dir.path());
        store
            .begin_fill(oid, data.len() as u64, &descs)
            .expect("begin");
        for (i, d) in descs.iter().enumerate().step_by(2) {
            store
                .write_chunk(oid, i as u32, chunk(&data, d))
                .expect("write");
        }
        store.flush().expect("flush");
    }
    let store = open(dir.path());
    let missing = store.missing(oid).expect("missing");
    assert_eq!(
        missing,
        (1..descs.len() as u32).step_by(2).collect::<Vec<_>>()
    );
    for i in missing {
        store
            .write_chunk(oid, i, chunk(&data, &descs[i as usize]))
            .expect("write");
    }
    store.finish(oid).expect("finish");
}

#[test]
fn concurrent_users_share_one_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = Arc::new(bytes(4 << 20, 50));
    let oid = Oid::of(&data);
    let descs = Arc::new(describe(&data));
    store
        .begin_fill(oid, data.len() as u64, &descs)
        .expect("begin");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (store, data, descs) = (store.clone(), data.clone(), descs.clone());
            std::thread::spawn(move || {
                for (i, d) in descs.iter().enumerate() {
                    if i % 4 == w || i % 3 == 0 {
                        store
                            .write_chunk(oid, i as u32, chunk(&data, d))
                            .expect("write");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("join");
    }
    store.finish(oid).expect("finish");
    assert_eq!(store.read_at(oid, 0, data.len()).expect("read"), *data);
}

#[test]
fn tokens_are_derived_not_stored_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let oid = store
        .put_reader(&mut &bytes(1000, 60)[..])
        .expect("put")
        .oid;
    let t = store.token(oid).expect("token");
    assert_eq!(store.token(oid).expect("again"), t, "one token per object");
    assert_eq!(store.check_token(oid, t).expect("check"), Some(true));
    let mut wrong = t;
    wrong.0[15] ^= 1;
    assert_eq!(store.check_token(oid, wrong).expect("check"), Some(false));
    assert_eq!(
        store.check_token(Oid::of(b"unknown"), t).expect("check"),
        None
    );
    assert!(store.token(Oid::of(b"unknown")).is_err());
    // The index holds no token; the key file is private; the same key
    // gives the same token after a reopen, another key another token.
    let index = std::fs::read(dir.path().join("index.sqlite")).expect("index");
    assert!(
        !index.windows(16).any(|w| w == t.0),
        "the token is in the index"
    );
    let key = dir.path().join("token.key");
    let mode = std::fs::metadata(&key).expect("key").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.token(oid).expect("reopened"), t);
    drop(store);
    std::fs::remove_file(&key).expect("remove key");
    let store = open(dir.path());
    assert_ne!(store.token(oid).expect("new key"), t, "a new key revokes");
}

#[test]
fn after_an_unclean_stop_recent_objects_are_reverified_and_a_clean_close_skips_it() {
    // What a machine crash can do to a non-durable store: the index says
    // a chunk is present but its bytes never reached the disk (zeros).
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(2 << 20, 41);
    let oid = Oid::of(&data);
    let descs = describe(&data);
    let lost = descs.len() / 2;
    let object_file = {
        let store = open(dir.path());
        store
            .begin_fill(oid, data.len() as u64, &descs)
            .expect("begin");
        for (i, d) in descs.iter().enumerate() {
            store
                .write_chunk(oid, i as u32, chunk(&data, d))
                .expect("write");
        }
        store.flush().expect("flush");
        store.backing_path(oid).expect("path")
        // Dropped without close: an unclean stop.
    };
    let d = descs[lost];
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&object_file)
        .expect("open object file");
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; d.len as usize], d.offset)
        .expect("zero a chunk");
    drop(f);
    let store = open(dir.path());
    assert_eq!(
        store.missing(oid).expect("missing"),
        vec![lost as u32],
        "the lost chunk was not found"
    );
    store
        .write_chunk(oid, lost as u32, chunk(&data, &d))
        .expect("refill");
    store.finish(oid).expect("finish");
    store.close().expect("close");
    drop(store);
    // Closed cleanly: the next open trusts the index (the same damage
    // now goes unnoticed until a read, which is what verify is for).
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&object_file)
        .expect("open object file");
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; d.len as usize], d.offset)
        .expect("zero a chunk");
    drop(f);
    let store = open(dir.path());
    assert!(store.info(oid).expect("info").expect("known").complete);
}

#[test]
fn read_bytes_serves_present_chunks_of_a_partial_object_and_refuses_missing_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = bytes(3 << 20, 11);
    let oid = Oid::of(&data);
    let descs = describe(&data);
    assert!(descs.len() >= 3, "the test needs several chunks");
    store
        .begin_fill(oid, data.len() as u64, &descs)
        .expect("begin");
    store
        .write_chunk(oid, 0, chunk(&data, &descs[0]))
        .expect("chunk 0");
    let d0 = descs[0];
    // Inside the present chunk: served (mapped), equal to the source.
    let got = store
        .read_bytes(oid, 10, d0.len as usize - 10)
        .expect("read");
    assert_eq!(&got[..], &data[10..d0.end() as usize]);
    // Reaching into the missing chunk: refused, never zeros.
    let err = store
        .read_bytes(oid, 0, d0.len as usize + 1)
        .expect_err("chunk 1 is missing");
    assert!(
        matches!(err, dot_store::Error::ChunkMissing { index: 1, .. }),
        "{err}"
    );
    // Once every chunk is in: the whole object, clipped at its end.
    for (i, d) in descs.iter().enumerate().skip(1) {
        store
            .write_chunk(oid, i as u32, chunk(&data, d))
            .expect("chunk");
    }
    store.finish(oid).expect("finish");
    let all = store
        .read_bytes(oid, 0, data.len() + 100)
        .expect("read all");
    assert_eq!(all.len(), data.len());
    assert!(all[..] == data[..], "bytes differ");
    assert!(
        store
            .read_bytes(oid, data.len() as u64, 10)
            .expect("at end")
            .is_empty()
    );
    assert_eq!(all.to_vec(), data);
}

#[test]
fn a_partial_object_counts_only_the_chunks_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let data = bytes(2 << 20, 91);
    let oid = Oid::of(&data);
    let descs = describe(&data);
    store
        .begin_fill(oid, data.len() as u64, &descs)
        .expect("begin");
    assert_eq!(store.stored_bytes().expect("bytes"), 0);
    let d = descs[1];
    store
        .write_chunk(oid, 1, &data[d.offset as usize..d.end() as usize])
        .expect("write");
    // Counted at once, while its mark is still on its way to the index.
    assert_eq!(store.stored_bytes().expect("bytes"), u64::from(d.len));
    store.flush().expect("flush");
    assert_eq!(store.stored_bytes().expect("bytes"), u64::from(d.len));
}

#[test]
fn filled_objects_stay_within_the_budget_before_their_marks_are_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with_budget(dir.path(), 5 << 20);
    for seed in 0..4 {
        let data = bytes(2 << 20, 300 + seed);
        let oid = Oid::of(&data);
        fill_all(&store, oid, &data, &describe(&data));
        store.finish(oid).expect("finish");
        let held = store.stored_bytes().expect("bytes");
        assert!(held <= 5 << 20, "after fill {seed}: {held} held");
    }
    assert!(store.evictions().0 >= 1);
}

#[test]
fn a_stream_cut_into_segments_chunks_each_segment_as_if_alone() {
    use dot_store::ChunkerSpec;
    use dot_store::chunker::{Cuts, describe};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let spec: ChunkerSpec = "cdc:1024:4096:32768".parse().expect("spec");
    let chunker = spec.build().expect("chunker");
    // Three segments of pseudo-random bytes, one empty, one small.
    let segments: Vec<Vec<u8>> = vec![
        bytes(50_000, 1),
        Vec::new(),
        bytes(700, 2),
        bytes(130_000, 3),
    ];
    let mut want = Vec::new();
    let mut at = 0u64;
    for seg in &segments {
        for mut d in describe(chunker.as_ref(), seg) {
            d.offset += at;
            want.push(d);
        }
        at += seg.len() as u64;
    }
    let cuts = Cuts::default();
    let mut w = store.put_writer_cut(Some(spec), Some(cuts.clone()));
    let mut end = 0u64;
    for seg in &segments {
        end += seg.len() as u64;
        cuts.push(end).expect("in order");
        // Written in pieces that do not follow the segments.
        for piece in seg.chunks(3000) {
            std::io::Write::write_all(&mut w, piece).expect("write");
        }
    }
    let out = w.finish().expect("put");
    let got = store.descriptors(out.oid).expect("descriptors");
    assert_eq!(
        &got[..],
        want.as_slice(),
        "chunks end at every segment's end"
    );
    assert!(cuts.push(end - 1).is_err(), "ends go forward only");
}
