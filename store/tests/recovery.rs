//! What a power cut or a clock step can do to a store, and what opening it
//! afterwards must make of it: object files cut short (complete and
//! partial objects) open as incomplete objects missing exactly the chunks
//! the file no longer holds, and fill again; the re-verification after an
//! unclean stop finds what it must whatever the wall clock did.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod common;
use common::{bytes, describe};
use dot_store::{Descriptor, Error, Oid, Store, StoreOptions};

fn open(dir: &Path, durable: bool) -> Store {
    Store::open(
        dir,
        StoreOptions {
            durable,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

fn chunk<'a>(data: &'a [u8], d: &Descriptor) -> &'a [u8] {
    &data[d.offset as usize..d.end() as usize]
}

fn object_file(dir: &Path, oid: Oid) -> PathBuf {
    dir.join("objects").join(&oid.hex()[..2]).join(oid.hex())
}

/// Cuts `path` to `len` bytes, as a power cut can leave a file whose size
/// never reached the disk.
fn truncate(path: &Path, len: u64) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("truncate object file");
}

/// Overwrites `d`'s bytes in `path` with zeros: written, recorded, but
/// never on disk.
fn zero_chunk(path: &Path, d: &Descriptor) {
    let f = File::options()
        .write(true)
        .open(path)
        .expect("open object file");
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; d.len as usize], d.offset)
        .expect("zero a chunk");
}

/// Indexes of the chunks a file of `len` bytes does not wholly hold.
fn past(descs: &[Descriptor], len: u64) -> Vec<u32> {
    (0..descs.len() as u32)
        .filter(|&i| descs[i as usize].end() > len)
        .collect()
}

/// Writes every missing chunk, finishes, and checks the whole object.
fn refill(store: &Store, oid: Oid, data: &[u8], descs: &[Descriptor]) {
    for i in store.missing(oid).expect("missing") {
        store
            .write_chunk(oid, i, chunk(data, &descs[i as usize]))
            .expect("refill");
    }
    store.finish(oid).expect("finish");
    let info = store.info(oid).expect("info").expect("known");
    assert!(info.complete && info.present == info.chunks);
    assert!(
        store.read_at(oid, 0, data.len()).expect("read") == data,
        "refilled object differs"
    );
    assert!(store.verify().expect("verify").is_clean());
}

#[test]
fn a_complete_object_whose_file_was_cut_short_opens_incomplete_and_fills_again() {
    for durable in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = bytes(3 << 20, 70);
        let descs = describe(&data);
        let oid = {
            let store = open(dir.path(), durable);
            let oid = store.put_reader(&mut &data[..]).expect("put").oid;
            store.close().expect("close");
            oid
        };
        // Cut in the middle of a chunk about half way.
        let k = descs.len() / 2;
        let cut = descs[k].offset + u64::from(descs[k].len) / 2;
        let file = object_file(dir.path(), oid);
        truncate(&file, cut);

        let store = open(dir.path(), durable);
        let info = store.info(oid).expect("info").expect("still known");
        assert!(
            !info.complete,
            "durable={durable}: a short file passed as complete"
        );
        assert_eq!(info.present as usize, k, "durable={durable}");
        assert_eq!(store.missing(oid).expect("missing"), past(&descs, cut));
        // What is held still reads; what is not is refused, never zeros.
        assert_eq!(
            store.read_at(oid, 0, descs[0].len as usize).expect("read"),
            chunk(&data, &descs[0])
        );
        let err = store
            .read_at(oid, descs[k].offset, 10)
            .expect_err("chunk past the cut");
        assert!(matches!(err, Error::ChunkMissing { .. }), "{err}");
        // Grown back to the object's size as a sparse file, holes unmarked.
        assert_eq!(fs::metadata(&file).expect("meta").len(), data.len() as u64);
        refill(&store, oid, &data, &descs);
        store.close().expect("close");
        drop(store);
        let store = open(dir.path(), durable);
        assert!(store.info(oid).expect("info").expect("known").complete);
    }
}

#[test]
fn a_complete_object_whose_file_holds_no_whole_chunk_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(1 << 20, 71);
    let descs = describe(&data);
    let oid = {
        let store = open(dir.path(), true);
        store.put_reader(&mut &data[..]).expect("put").oid
    };
    let file = object_file(dir.path(), oid);
    truncate(&file, u64::from(descs[0].len) - 1);
    let store = open(dir.path(), true);
    assert!(
        store.info(oid).expect("info").is_none(),
        "kept an empty object"
    );
    assert!(!file.exists(), "its file stayed");
    // Nothing of it is held: a fill starts from scratch.
    assert_eq!(
        store
            .begin_fill(oid, data.len() as u64, &descs)
            .expect("begin")
            .len(),
        descs.len()
    );
    refill(&store, oid, &data, &descs);
}

#[test]
fn a_partial_object_whose_file_was_cut_short_loses_only_the_chunks_past_the_cut() {
    for durable in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = bytes(3 << 20, 72);
        let oid = Oid::of(&data);
        let descs = describe(&data);
        let n = descs.len();
        // Every chunk but the last few of each quarter.
        let written: Vec<u32> = (0..n as u32).filter(|i| i % 4 != 3).collect();
        {
            let store = open(dir.path(), durable);
            store
                .begin_fill(oid, data.len() as u64, &descs)
                .expect("begin");
            for &i in &written {
                store
                    .write_chunk(oid, i, chunk(&data, &descs[i as usize]))
                    .expect("write");
            }
            store.close().expect("close");
        }
        let k = n * 2 / 3;
        let cut = descs[k].offset + 1;
        truncate(&object_file(dir.path(), oid), cut);

        let store = open(dir.path(), durable);
        let want: Vec<u32> = (0..n as u32)
            .filter(|i| !written.contains(i) || descs[*i as usize].end() > cut)
            .collect();
        assert_eq!(
            store.missing(oid).expect("missing"),
            want,
            "durable={durable}"
        );
        let info = store.info(oid).expect("info").expect("known");
        assert!(!info.complete);
        assert_eq!(info.present as usize, n - want.len());
        refill(&store, oid, &data, &descs);
    }
}

#[test]
fn a_partial_object_whose_file_vanished_has_nothing_present() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(1 << 20, 73);
    let oid = Oid::of(&data);
    let descs = describe(&data);
    {
        let store = open(dir.path(), true);
        store
            .begin_fill(oid, data.len() as u64, &descs)
            .expect("begin");
        for (i, d) in descs.iter().enumerate().step_by(2) {
            store
                .write_chunk(oid, i as u32, chunk(&data, d))
                .expect("write");
        }
        store.close().expect("close");
    }
    fs::remove_file(object_file(dir.path(), oid)).expect("remove object file");
    let store = open(dir.path(), true);
    assert_eq!(store.missing(oid).expect("missing").len(), descs.len());
    refill(&store, oid, &data, &descs);
}

#[test]
fn verify_marks_chunks_past_the_end_of_a_file_cut_short_while_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(2 << 20, 74);
    let descs = describe(&data);
    let store = open(dir.path(), false);
    let a = store.put_reader(&mut &data[..]).expect("put").oid;
    let other = bytes(2 << 20, 75);
    let other_descs = describe(&other);
    let b = store.put_reader(&mut &other[..]).expect("put").oid;
    // `a` is open (read with pread, not mapped); `b` is not open yet.
    assert_eq!(store.read_at(a, 0, 100).expect("read"), &data[..100]);
    let cut_a = descs[descs.len() - 3].offset + 7;
    let cut_b = other_descs[1].end() + 100;
    truncate(&object_file(dir.path(), a), cut_a);
    truncate(&object_file(dir.path(), b), cut_b);
    let report = store.verify().expect("verify");
    let mut found = report.damaged_chunks.clone();
    found.sort();
    let mut want: Vec<(Oid, u32)> = past(&descs, cut_a).into_iter().map(|i| (a, i)).collect();
    want.extend(past(&other_descs, cut_b).into_iter().map(|i| (b, i)));
    want.sort();
    assert_eq!(found, want);
    assert!(report.bad_objects.is_empty(), "{report:?}");
    assert_eq!(store.missing(a).expect("missing"), past(&descs, cut_a));
    assert_eq!(
        store.missing(b).expect("missing"),
        past(&other_descs, cut_b)
    );
    refill(&store, a, &data, &descs);
    refill(&store, b, &other, &other_descs);
}

/// Fills `data` into a non-durable store in `dir` and drops it without
/// closing (an unclean stop); returns the object file.
fn fill_and_stop_uncleanly(dir: &Path, data: &[u8]) -> PathBuf {
    let store = open(dir, false);
    let oid = Oid::of(data);
    let descs = describe(data);
    store
        .begin_fill(oid, data.len() as u64, &descs)
        .expect("begin");
    for (i, d) in descs.iter().enumerate() {
        store
            .write_chunk(oid, i as u32, chunk(data, d))
            .expect("write");
    }
    store.finish(oid).expect("finish");
    store.flush().expect("flush");
    store.backing_path(oid).expect("path")
}

/// Sets the mtime of every file and folder under `dir` (and `dir`) to `t`.
/// A file gone between the listing and its open (a store left running
/// drops its temporary and journal files when it likes) is skipped.
fn set_mtimes(dir: &Path, t: SystemTime) {
    for entry in fs::read_dir(dir).expect("list").flatten() {
        let p = entry.path();
        if p.is_dir() {
            set_mtimes(&p, t);
        } else {
            match File::options()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_modified(t))
            {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("set mtime of {}: {e}", p.display()),
            }
        }
    }
    File::open(dir)
        .and_then(|f| f.set_modified(t))
        .expect("set folder mtime");
}

#[test]
fn after_an_unclean_stop_a_clock_step_does_not_hide_objects_from_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(2 << 20, 76);
    let oid = Oid::of(&data);
    let descs = describe(&data);
    let lost = descs.len() / 3;
    let file = fill_and_stop_uncleanly(dir.path(), &data);
    zero_chunk(&file, &descs[lost]);
    // The clock was a day ahead when the session opened and was stepped
    // back before the object was written: every file and folder of the
    // store (the clock-based scheme's marker among them, whose mtime was
    // the session's start) carries a time a day after the object's last
    // use. That scheme re-verified objects used since its marker's mtime,
    // and missed this one.
    set_mtimes(dir.path(), SystemTime::now() + Duration::from_secs(86_400));
    let store = open(dir.path(), false);
    assert_eq!(
        store.missing(oid).expect("missing"),
        vec![lost as u32],
        "the lost chunk was not found"
    );
    refill(&store, oid, &data, &descs);
}

#[test]
fn unclean_stops_in_a_row_and_a_durable_open_still_check_what_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = bytes(1 << 20, 77);
    let b = bytes(1 << 20, 78);
    let (oid_a, oid_b) = (Oid::of(&a), Oid::of(&b));
    let (descs_a, descs_b) = (describe(&a), describe(&b));
    // Session 1 writes A and stops uncleanly; session 2 checks A (fine),
    // writes B and stops uncleanly too.
    fill_and_stop_uncleanly(dir.path(), &a);
    let file_b = fill_and_stop_uncleanly(dir.path(), &b);
    zero_chunk(&file_b, &descs_b[1]);
    // Session 3, durable, still owes the check of session 2's writes.
    let store = open(dir.path(), true);
    assert_eq!(store.missing(oid_b).expect("missing"), vec![1]);
    assert!(store.missing(oid_a).expect("missing").is_empty());
    refill(&store, oid_b, &b, &descs_b);
    drop(store);
    // Session 3 was durable: killed or not, it owes no check.
    zero_chunk(&object_file(dir.path(), oid_a), &descs_a[0]);
    let store = open(dir.path(), false);
    assert!(store.info(oid_a).expect("info").expect("known").complete);
}

#[test]
fn a_marker_of_the_clock_based_scheme_makes_one_check_of_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = bytes(1 << 20, 79);
    let descs = describe(&data);
    let oid = {
        let store = open(dir.path(), false);
        let oid = store.put_reader(&mut &data[..]).expect("put").oid;
        store.close().expect("close");
        oid
    };
    zero_chunk(&object_file(dir.path(), oid), &descs[2]);
    let marker = dir.path().join("open.unclean");
    File::create(&marker).expect("marker");
    let store = open(dir.path(), false);
    assert_eq!(store.missing(oid).expect("missing"), vec![2]);
    assert!(!marker.exists(), "the old marker stayed");
    refill(&store, oid, &data, &descs);
}
