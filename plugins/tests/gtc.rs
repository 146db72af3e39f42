//! The gtc plugin over real TCP on loopback: a server on one store, a
//! source fetching into another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dot_plugins::gtc::client::GtcSource;
use dot_plugins::gtc::proto::ErrorCode;
use dot_plugins::gtc::server::{ServerStats, serve};
use dot_plugins::transfer::ChunkSink;
use dot_plugins::{ChunkEvent, Transfer, TransferError};
use dot_store::{Oid, Store, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

mod common;
use common::{bytes, store};

async fn start_server(store: Store) -> (SocketAddr, Arc<ServerStats>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Arc::new(ServerStats::default());
    tokio::spawn(serve(listener, store, stats.clone()));
    (addr, stats)
}

/// Fetches every missing chunk of `oid` from `src` into `dst`; returns how
/// many chunks were requested.
async fn fetch(src: &GtcSource, dst: &Store, oid: Oid, token: Token) -> Result<usize, String> {
    let described = src
        .get_descriptors(oid, Some(token.into()))
        .await
        .map_err(|e| e.to_string())?;
    let dst2 = dst.clone();
    let descs = described.descriptors.clone();
    let missing = tokio::task::spawn_blocking(move || {
        dst2.begin_fill(oid, described.size, &descs)?;
        dst2.fill_from_local(oid)?;
        dst2.missing(oid)
    })
    .await
    .expect("join")
    .map_err(|e| e.to_string())?;
    let wanted: Vec<_> = missing
        .iter()
        .map(|&i| (i, described.descriptors[i as usize]))
        .collect();
    let count = wanted.len();
    let (tx, mut events) = mpsc::channel(64);
    src.get_chunks(oid, wanted, ChunkSink::new(tx, 0));
    let mut got = 0;
    while got < count {
        match events.recv().await.map(|(_, ev)| ev) {
            Some(ChunkEvent::Chunk(chunk)) => {
                dst.write_verified(oid, &chunk).map_err(|e| e.to_string())?;
                got += 1;
            }
            Some(ChunkEvent::Failed { index, error }) => {
                return Err(format!("chunk {index}: {error}"));
            }
            Some(ChunkEvent::SourceFailed(e)) => return Err(e.to_string()),
            None => return Err("events ended early".into()),
        }
    }
    let dst2 = dst.clone();
    tokio::task::spawn_blocking(move || dst2.finish(oid))
        .await
        .expect("join")
        .map_err(|e| e.to_string())?;
    Ok(count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_every_size_arrive_intact() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b) = (store(a_dir.path()), store(b_dir.path()));
    let (addr, stats) = start_server(a.clone()).await;
    let src = GtcSource::new(addr, 16);
    for (n, seed) in [(0usize, 1u64), (1, 2), (64 << 10, 3), (5 << 20, 4)] {
        let data = bytes(n, seed);
        let oid = a.put_reader(&mut &data[..]).expect("put").oid;
        let token = a.token(oid).expect("token");
        fetch(&src, &b, oid, token).await.expect("fetch");
        assert_eq!(b.read_at(oid, 0, n).expect("read"), data, "size {n}");
    }
    assert!(stats.chunks_served.load(Ordering::Relaxed) > 50);
}

/// A server authorises at most `MAX_AUTHORIZED` objects per connection;
/// one source (as a receiving agent keeps per peer, for mail) describes
/// more than that by moving to a new connection in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_describes_more_objects_than_one_connection_may_hold() {
    use dot_plugins::gtc::session::MAX_AUTHORIZED;
    let dir = tempfile::tempdir().expect("a");
    let a = store(dir.path());
    let (addr, _) = start_server(a.clone()).await;
    let src = GtcSource::new(addr, 16);
    let n = MAX_AUTHORIZED as u32 + 300;
    let objects: Vec<(Oid, Token)> = (0..n)
        .map(|i| {
            let oid = a.put_reader(&mut &i.to_be_bytes()[..]).expect("put").oid;
            (oid, a.token(oid).expect("token"))
        })
        .collect();
    for (i, (oid, token)) in objects.into_iter().enumerate() {
        let d = src.get_descriptors(oid, Some(token.into())).await;
        assert!(d.is_ok(), "object {i}: {:?}", d.err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_missing_chunks_are_fetched() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b) = (store(a_dir.path()), store(b_dir.path()));
    let (addr, stats) = start_server(a.clone()).await;
    let base = bytes(4 << 20, 7);
    b.put_reader(&mut &base[..])
        .expect("b holds the old version");
    let mut edited = base.clone();
    edited.splice(2000..2000, b"a small edit".iter().copied());
    let oid = a.put_reader(&mut &edited[..]).expect("put").oid;
    let token = a.token(oid).expect("token");
    let total = a.descriptors(oid).expect("descs").len();
    let fetched = fetch(&GtcSource::new(addr, 8), &b, oid, token)
        .await
        .expect("fetch");
    assert!(
        (1..=3).contains(&fetched),
        "fetched {fetched} of {total} chunks"
    );
    assert_eq!(
        stats.chunks_served.load(Ordering::Relaxed),
        fetched as u64,
        "server sent more than asked"
    );
    assert_eq!(b.read_at(oid, 0, edited.len()).expect("read"), edited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_learns_nothing_and_gets_no_chunk() {
    let dir = tempfile::tempdir().expect("a");
    let a = store(dir.path());
    let (addr, stats) = start_server(a.clone()).await;
    let oid = a.put_reader(&mut &bytes(300_000, 8)[..]).expect("put").oid;
    a.token(oid).expect("token");
    let src = GtcSource::new(addr, 8);
    match src.get_descriptors(oid, Some(Token([2; 16]).into())).await {
        Err(TransferError::Refused {
            code: ErrorCode::Unauthorized,
            ..
        }) => {}
        other => panic!("wrong token accepted: {other:?}"),
    }
    // Knowing the descriptors from elsewhere does not help either.
    let d = a.descriptors(oid).expect("descs")[0];
    let (tx, mut events) = mpsc::channel(64);
    src.get_chunks(oid, vec![(0, d)], ChunkSink::new(tx, 0));
    match tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("answer")
        .map(|(_, ev)| ev)
    {
        Some(ChunkEvent::Failed {
            error:
                TransferError::Refused {
                    code: ErrorCode::Unauthorized,
                    ..
                },
            ..
        }) => {}
        other => panic!("chunk served without authorisation: {other:?}"),
    }
    assert_eq!(stats.chunks_served.load(Ordering::Relaxed), 0);
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    // An object the server does not hold gets the very same answer: a
    // probe cannot tell which objects it holds.
    let wrong = match src.get_descriptors(oid, Some(Token([2; 16]).into())).await {
        Err(TransferError::Refused { code, message, .. }) => (code, message),
        other => panic!("{other:?}"),
    };
    let absent = match src
        .get_descriptors(Oid::of(b"not here"), Some(Token([2; 16]).into()))
        .await
    {
        Err(TransferError::Refused { code, message, .. }) => (code, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(wrong, absent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_only_that_connection() {
    let dir = tempfile::tempdir().expect("a");
    let a = store(dir.path());
    let (addr, stats) = start_server(a.clone()).await;
    // A frame claiming 4 GiB, a garbage type, and no Hello at all.
    for junk in [
        &[0xff, 0xff, 0xff, 0xff, 1][..],
        &[0, 0, 0, 1, 0x77][..],
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(junk).await.expect("send");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("server closes");
        assert!(n.is_ok());
    }
    assert_eq!(stats.violations.load(Ordering::Relaxed), 3);
    // The server still serves others.
    let data = bytes(100_000, 9);
    let oid = a.put_reader(&mut &data[..]).expect("put").oid;
    let token = a.token(oid).expect("token");
    let b_dir = tempfile::tempdir().expect("b");
    let b = store(b_dir.path());
    fetch(&GtcSource::new(addr, 4), &b, oid, token)
        .await
        .expect("fetch after junk");
}

/// A peer that speaks the protocol but flips a bit in chunk `bad` of
/// every object it serves (the descriptors it sends are the true ones).
async fn start_lying_server(store: Store, bad: u32) -> SocketAddr {
    use dot_plugins::gtc::double::{self, Behaviour};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let behaviour = Behaviour {
        corrupt: Some(bad),
        ..Behaviour::default()
    };
    tokio::spawn(double::serve(
        listener,
        store,
        behaviour,
        Arc::default(),
        None,
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_peer_never_gets_a_wrong_byte_into_the_store() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b) = (store(a_dir.path()), store(b_dir.path()));
    let data = bytes(2 << 20, 11);
    let oid = a.put_reader(&mut &data[..]).expect("put").oid;
    let token = a.token(oid).expect("token");
    let liar = start_lying_server(a.clone(), 3).await;
    let err = fetch(&GtcSource::new(liar, 8), &b, oid, token)
        .await
        .expect_err("lie detected");
    assert!(err.contains("chunk 3"), "{err}");
    assert!(
        !b.has_chunk(oid, 3).expect("has"),
        "the corrupt chunk was stored"
    );
    // An honest source finishes the object; what the liar sent correctly is kept.
    let (honest, stats) = start_server(a.clone()).await;
    let refetched = fetch(&GtcSource::new(honest, 8), &b, oid, token)
        .await
        .expect("honest fetch");
    assert!(
        refetched < a.descriptors(oid).expect("descs").len(),
        "refetched everything"
    );
    assert!(stats.chunks_served.load(Ordering::Relaxed) >= 1);
    assert_eq!(b.read_at(oid, 0, data.len()).expect("read"), data);
}
