//! The on-device layout and the portable source, on a folder standing in
//! for a mounted key (the loop-device tests are in tests/tests/).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use dot_plugins::portable::{DIR, Device, MAX_CHUNKS, PortableSource};
use dot_plugins::transfer::ChunkSink;
use dot_plugins::{ChunkEvent, Transfer, TransferError};
use dot_store::{Descriptor, Oid};

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

// A hostile key: the agent runs as root and a key is someone else's
// filesystem (docs/security.md, "Keys"). On a plain folder standing in for
// the key, each trap a loop device is not needed for.

/// Everything under `dir`, without following links: path -> (kind, bytes
/// or link target, mtime). Two equal snapshots: nothing there changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let t = m.file_type();
            let (kind, content) = if t.is_symlink() {
                let to = fs::read_link(&p).expect("readlink");
                ("link", to.into_os_string().into_encoded_bytes())
            } else if t.is_dir() {
                todo.push(p.clone());
                ("dir", Vec::new())
            } else if t.is_file() {
                ("file", fs::read(&p).expect("read"))
            } else {
                ("special", Vec::new())
            };
            let mtime = m.modified().expect("mtime");
            out.insert(p, (kind.to_owned(), content, mtime));
        }
    }
    out
}

/// A file of `data` in `dir`, its mtime set two hours back.
fn old_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, data).expect("write");
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_modified(two_hours_ago))
        .expect("set mtime");
    p
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(r, 0, "mkfifo {}", p.display());
}

/// A character device like /dev/null (1:3) at `p`; false if this process
/// may not make one (not root).
fn mknod_null(p: &Path) -> bool {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if r != 0 {
        eprintln!(
            "!!! no device node made ({}): the device-node case is skipped !!!",
            std::io::Error::last_os_error()
        );
    }
    r == 0
}

/// The fan-out folder of chunk file `file` (its parent).
fn fan_of(file: &Path) -> PathBuf {
    file.parent().expect("fan-out folder").to_owned()
}

/// The chunk files of `descs` on `dev` for indexes 0..n, asserting they
/// lie in n different fan-out folders (so a trap on one touches no other).
fn distinct_chunk_files(dev: &Device, descs: &[Descriptor], n: usize) -> Vec<PathBuf> {
    assert!(descs.len() >= n, "{} chunks, {n} wanted", descs.len());
    let files: Vec<PathBuf> = descs[..n].iter().map(|d| dev.chunk_path(&d.hash)).collect();
    let fans: std::collections::BTreeSet<PathBuf> = files.iter().map(|f| fan_of(f)).collect();
    assert_eq!(fans.len(), n, "chunks share a fan-out folder: {files:?}");
    files
}

/// Runs `f` on its own thread (with its own runtime for async work) and
/// fails the test if it has not returned within 20 s: a read that blocks
/// on a FIFO would otherwise hang the test (and a runtime waits for its
/// blocking threads when dropped). The stuck thread is left behind.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("hung on the key for 20 s"),
    }
}

/// [`within`] for async work.
fn within_async<F: std::future::Future + Send + 'static>(f: F) -> F::Output
where
    F::Output: Send + 'static,
{
    within(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
}

#[test]
fn a_dot_folder_that_is_a_symbolic_link_is_refused() {
    // The link points at a complete store: following it would "work".
    let (home, real, oid, _data) = exported();
    let outside = tempfile::tempdir().expect("tempdir");
    fs::rename(real.path().join(DIR), outside.path().join("store")).expect("move");
    old_file(
        &outside.path().join("store/tmp"),
        "w-old",
        b"left by a pulled write",
    );
    let before = snapshot(outside.path());
    let key = tempfile::tempdir().expect("tempdir");
    symlink(outside.path().join("store"), key.path().join(DIR)).expect("symlink");

    let err = Device::open(key.path()).expect_err("a linked .dot opened");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = Device::create(key.path()).expect_err("a linked .dot made a store");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let dev = Device::open(real.path());
    assert!(dev.is_err(), "the moved store is still at its old place");
    // Nothing read, written or deleted through the link.
    assert_eq!(snapshot(outside.path()), before);
    let _ = (home, oid);
}

#[test]
fn linked_special_and_mis_sized_files_on_a_key_are_never_read() {
    within_async(async {
        let (_home, key, oid, data) = exported();
        let dev = Device::open(key.path()).expect("open");
        let (_, descs) = dev.read_descriptors(oid).expect("descriptors");
        let files = distinct_chunk_files(&dev, &descs, 5);
        let outside = tempfile::tempdir().expect("tempdir");
        // 0: its fan-out folder is a link to an outside folder holding the
        // real chunk file.
        fs::rename(fan_of(&files[0]), outside.path().join("fan")).expect("move fan-out");
        symlink(outside.path().join("fan"), fan_of(&files[0])).expect("symlink");
        // 1: the chunk file is a link to an outside file of its real bytes.
        fs::rename(&files[1], outside.path().join("chunk")).expect("move chunk");
        symlink(outside.path().join("chunk"), &files[1]).expect("symlink");
        // 2: a FIFO (an open for reading would wait for a writer forever).
        fs::remove_file(&files[2]).expect("rm");
        mkfifo(&files[2]);
        // 3: a device node like /dev/null (as root).
        let node = {
            fs::remove_file(&files[3]).expect("rm");
            mknod_null(&files[3])
        };
        // 4: a chunk file one byte too long (refused by its length, unread).
        let mut long = fs::read(&files[4]).expect("read");
        long.push(0);
        fs::write(&files[4], &long).expect("lengthen");
        let before = snapshot(outside.path());

        let src = PortableSource::new(dev.clone());
        let (got, mut failed) = tokio::time::timeout(Duration::from_secs(10), read_all(&src, oid))
            .await
            .expect("the read hung on the key");
        failed.sort_unstable();
        assert_eq!(failed, vec![0, 1, 2, 3, 4]);
        for (i, d) in descs.iter().enumerate().skip(5) {
            let chunk = got[i].as_ref().expect("an ordinary chunk file is read");
            assert_eq!(chunk, &data[d.offset as usize..d.end() as usize]);
        }
        for (i, d) in descs.iter().enumerate().take(5) {
            let err = dev.read_chunk(i as u32, d).expect_err("a trap was read");
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{i}: {err}");
            let why = err.to_string();
            let said = match i {
                0 | 1 => "symbolic link",
                2 => "FIFO",
                3 if node => "character device",
                3 => "",
                _ => "corrupt",
            };
            assert!(why.contains(said), "chunk {i}: {why}");
            assert!(
                !dev.has_chunk(&d.hash) || i == 4,
                "chunk {i} counted as held"
            );
        }
        assert_eq!(snapshot(outside.path()), before);
    });
}

#[test]
fn a_fifo_linked_or_sparse_descriptor_file_is_refused_at_once() {
    within_async(async {
        let (_home, key, oid, _data) = exported();
        let path = key.path().join(DIR).join("objects").join(oid.to_string());
        let good = fs::read(&path).expect("read");
        let src = PortableSource::new(Device::open(key.path()).expect("open"));
        let refused = |what: &'static str| {
            let src = &src;
            async move {
                let t0 = Instant::now();
                let got =
                    tokio::time::timeout(Duration::from_secs(10), src.get_descriptors(oid, None))
                        .await
                        .unwrap_or_else(|_| panic!("{what}: the describe hung"));
                match got {
                    Err(TransferError::BadDescriptors { reason, .. }) => {
                        eprintln!("{what}: refused in {:?}: {reason}", t0.elapsed());
                        reason
                    }
                    other => panic!("{what}: {other:?}"),
                }
            }
        };
        // A FIFO: an open would wait for a writer forever.
        fs::remove_file(&path).expect("rm");
        mkfifo(&path);
        assert!(refused("FIFO").await.contains("FIFO"));
        // A link to a good descriptor file outside.
        let outside = tempfile::tempdir().expect("tempdir");
        fs::remove_file(&path).expect("rm");
        fs::write(outside.path().join("desc"), &good).expect("write");
        symlink(outside.path().join("desc"), &path).expect("symlink");
        assert!(refused("link").await.contains("symbolic link"));
        // A sparse file whose length backs a claim of 2^24 chunks (and whose
        // size allows them): 604 MB of holes. Read as it claims, it cost
        // ~1.4 GB; now the first record (zeros) ends it.
        fs::remove_file(&path).expect("rm");
        let count = MAX_CHUNKS;
        let mut head = Vec::new();
        head.extend_from_slice(b"DOTDESC1");
        head.extend_from_slice(&(u64::from(count) << 16).to_le_bytes());
        head.extend_from_slice(&count.to_le_bytes());
        fs::write(&path, &head).expect("write");
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(20 + 36 * u64::from(count)))
            .expect("sparse");
        let peak = || {
            fs::read_to_string("/proc/self/status")
                .expect("status")
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .expect("VmHWM")
        };
        let before = peak();
        let why = refused("sparse").await;
        let grew = peak().saturating_sub(before);
        assert!(why.contains("chunk 0"), "{why}");
        assert!(grew < 256 << 10, "the peak memory grew by {grew} kB");
        // A count the size does not allow: fewer chunks than 4 MiB each could
        // make it.
        let mut few = good.clone();
        few[8..16].copy_from_slice(&(64u64 << 30).to_le_bytes());
        fs::remove_file(&path).expect("rm");
        fs::write(&path, &few).expect("write");
        assert!(refused("too few chunks").await.contains("cannot make"));
    });
}

#[test]
fn exporting_to_a_hostile_key_writes_only_inside_it() {
    within(|| {
        let (home, scratch, oid, data) = exported();
        let (_, descs) = Device::open(scratch.path())
            .expect("open")
            .read_descriptors(oid)
            .expect("descriptors");
        let outside = tempfile::tempdir().expect("tempdir");
        let o = outside.path();
        for d in ["tmp", "fan", "objects"] {
            fs::create_dir(o.join(d)).expect("mkdir");
        }
        let old = old_file(&o.join("tmp"), "w-old", b"an hour and more old");
        fs::write(o.join("target"), b"not a chunk").expect("write");
        let before = snapshot(o);
        // The key: a real .dot whose folders and files are traps.
        let key = tempfile::tempdir().expect("tempdir");
        let dev_root = key.path().join(DIR);
        fs::create_dir_all(dev_root.join("chunks")).expect("mkdir");
        symlink(o.join("tmp"), dev_root.join("tmp")).expect("symlink");
        symlink(o.join("objects"), dev_root.join("objects")).expect("symlink");
        let probe = Device::open(key.path()).expect("open");
        let files = distinct_chunk_files(&probe, &descs, 4);
        symlink(o.join("fan"), fan_of(&files[0])).expect("symlink");
        for f in &files[1..] {
            fs::create_dir(fan_of(f)).expect("mkdir");
        }
        symlink(o.join("target"), &files[1]).expect("symlink");
        mkfifo(&files[2]);
        let _ = mknod_null(&files[3]);

        let dev = Device::create(key.path()).expect("create");
        let s = store(home.path());
        dev.export(&s, oid, |_, _| {}).expect("export");
        assert_eq!(
            snapshot(o),
            before,
            "the export changed a folder off the key"
        );
        assert!(old.exists());
        // What was a link, a FIFO or a node is now a real folder or file.
        for p in [
            dev_root.join("tmp"),
            dev_root.join("objects"),
            fan_of(&files[0]),
        ] {
            assert!(
                fs::symlink_metadata(&p).expect("lstat").is_dir(),
                "{}",
                p.display()
            );
        }
        for f in &files {
            assert!(
                fs::symlink_metadata(f).expect("lstat").is_file(),
                "{}",
                f.display()
            );
        }
        assert_eq!(fs::read_dir(dev_root.join("tmp")).expect("tmp").count(), 0);
        // And the key holds the object.
        let (size, again) = dev.read_descriptors(oid).expect("descriptors");
        assert_eq!((size, again.len()), (data.len() as u64, descs.len()));
        for (i, d) in descs.iter().enumerate() {
            let c = dev.read_chunk(i as u32, d).expect("read").expect("there");
            assert_eq!(c.data(), &data[d.offset as usize..d.end() as usize]);
        }
    });
}

#[test]
fn stale_tmp_cleanup_deletes_only_old_regular_files_in_the_real_tmp() {
    let key = tempfile::tempdir().expect("tempdir");
    let tmp = key.path().join(DIR).join("tmp");
    fs::create_dir_all(&tmp).expect("mkdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let target = old_file(outside.path(), "w-target", b"outside");
    let before = snapshot(outside.path());
    let stale = old_file(&tmp, "w-stale", b"pulled mid-write");
    let fresh = tmp.join("w-fresh");
    fs::write(&fresh, b"being written").expect("write");
    let other = old_file(&tmp, "notes", b"not ours");
    symlink(&target, tmp.join("w-link")).expect("symlink");
    mkfifo(&tmp.join("w-fifo"));
    fs::create_dir(tmp.join("w-dir")).expect("mkdir");
    old_file(&tmp.join("w-dir"), "w-inner", b"in a sub-folder");

    Device::create(key.path()).expect("create");
    assert!(!stale.exists(), "a stale write was left");
    for kept in [
        &fresh,
        &other,
        &tmp.join("w-fifo"),
        &tmp.join("w-dir/w-inner"),
    ] {
        assert!(kept.exists(), "{} was deleted", kept.display());
    }
    assert!(fs::symlink_metadata(tmp.join("w-link")).is_ok(), "the link");
    assert_eq!(snapshot(outside.path()), before);
}
