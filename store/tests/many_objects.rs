//! An agent touches far more objects than it may hold files open: the store
//! keeps a bounded set of open objects. Its own test binary, since it
//! lowers the process's open-file limit.

use dot_store::{Oid, Store, StoreOptions};

#[allow(dead_code)] // the shared helpers this test does not need
mod common;
use common::bytes;

#[test]
fn more_objects_than_the_open_file_limit_stay_readable() {
    // SAFETY: plain getrlimit/setrlimit on this test process with valid
    // pointers; no other test runs in this binary.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_cur.min(256);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durable: false,
            ..StoreOptions::default()
        },
    )
    .expect("open store");
    let n = 600;
    let mut oids: Vec<(Oid, Vec<u8>)> = Vec::new();
    for i in 0..n {
        let data = bytes(3000 + i, i as u64 + 1);
        let out = store.put_reader(&mut &data[..]).expect("put");
        // Touch it the way a peer or the mount does.
        assert_eq!(store.read_at(out.oid, 0, data.len()).expect("read"), data);
        oids.push((out.oid, data));
    }
    // Every one of them still reads, in another order.
    for (oid, data) in oids.iter().rev() {
        let got = store.read_bytes(*oid, 0, data.len()).expect("read again");
        assert!(got[..] == data[..], "object {oid} differs");
    }
}
