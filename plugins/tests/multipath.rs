//! The multipath scheduler against simulated paths on tokio's paused clock:
//! each path serves its requests one after another at a set rate, and can
//! stall, lie, or go down and come back. Time is simulated, so the timing
//! assertions are exact and the tests take milliseconds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dot_plugins::multipath::Multipath;
use dot_plugins::transfer::{BoxFuture, ChunkSink};
use dot_plugins::{ChunkEvent, Described, Transfer, TransferError};
use dot_store::{Access, ChunkHash, Descriptor, Oid, VerifiedChunk};
use tokio::sync::mpsc;
use tokio::time::Instant;

mod common;

const CHUNK: usize = 64 << 10;

/// An object cut into fixed 64 KiB chunks.
struct Object {
    oid: Oid,
    data: Vec<u8>,
    descs: Vec<Descriptor>,
}

fn object(chunks: usize) -> Arc<Object> {
    let data = common::bytes(chunks * CHUNK, 7);
    let descs = data
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, c)| Descriptor {
            hash: ChunkHash::of(c),
            offset: (i * CHUNK) as u64,
            len: c.len() as u32,
        })
        .collect();
    Arc::new(Object {
        oid: Oid::of(&data),
        data,
        descs,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    /// Stops answering after this many chunks.
    StallAfter(u64),
    /// Sends wrong bytes.
    Lie,
}

/// A path that serves one request at a time at `rate` bytes per second.
struct SimPath {
    name: String,
    obj: Arc<Object>,
    down: Arc<AtomicBool>,
    queue: mpsc::UnboundedSender<(u32, ChunkSink)>,
    cancelled: Arc<Mutex<HashSet<u32>>>,
    served: Arc<AtomicU64>,
}

impl SimPath {
    fn new(name: &str, obj: &Arc<Object>, rate: f64, mode: Mode) -> Arc<SimPath> {
        let (queue, mut rx) = mpsc::unbounded_channel::<(u32, ChunkSink)>();
        let cancelled = Arc::new(Mutex::new(HashSet::new()));
        let served = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (o, c, s, d) = (obj.clone(), cancelled.clone(), served.clone(), down.clone());
        tokio::spawn(async move {
            while let Some((index, to)) = rx.recv().await {
                if c.lock().expect("lock").remove(&index) {
                    continue;
                }
                if let Mode::StallAfter(n) = mode
                    && s.load(Ordering::Relaxed) >= n
                {
                    std::future::pending::<()>().await;
                }
                let desc = o.descs[index as usize];
                tokio::time::sleep(Duration::from_secs_f64(f64::from(desc.len) / rate)).await;
                if d.load(Ordering::Relaxed) {
                    to.send(ChunkEvent::SourceFailed(TransferError::Connection {
                        peer: "sim".into(),
                        message: "down".into(),
                    }))
                    .await;
                    continue;
                }
                let mut data =
                    o.data[desc.offset as usize..desc.offset as usize + desc.len as usize].to_vec();
                if mode == Mode::Lie {
                    data[0] ^= 1;
                }
                s.fetch_add(1, Ordering::Relaxed);
                // As every source does: verify, and report a lie as corrupt.
                let ev = match VerifiedChunk::verify(index, desc, data.into()) {
                    Ok(chunk) => ChunkEvent::Chunk(chunk),
                    Err(source) => ChunkEvent::SourceFailed(TransferError::Corrupt {
                        peer: "sim".into(),
                        source,
                    }),
                };
                to.send(ev).await;
            }
        });
        Arc::new(SimPath {
            name: name.into(),
            obj: obj.clone(),
            down,
            queue,
            cancelled,
            served,
        })
    }
}

impl Transfer for SimPath {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn get_descriptors(
        &self,
        _oid: Oid,
        _access: Option<Access>,
    ) -> BoxFuture<'_, Result<Described, TransferError>> {
        let d = Described {
            size: self.obj.data.len() as u64,
            descriptors: self.obj.descs.clone(),
        };
        Box::pin(async move { Ok(d) })
    }

    fn get_chunks(&self, _oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink) {
        if self.down.load(Ordering::Relaxed) {
            sink.try_send(ChunkEvent::SourceFailed(TransferError::Connection {
                peer: self.name.clone(),
                message: "down".into(),
            }));
            return;
        }
        for (index, _) in chunks {
            self.cancelled.lock().expect("lock").remove(&index);
            let _ = self.queue.send((index, sink.clone()));
        }
    }

    fn cancel_chunks(&self, _oid: Oid, indexes: &[u32]) {
        self.cancelled.lock().expect("lock").extend(indexes);
    }
}

/// Fetches every chunk of `obj` through `mp`; checks the bytes; returns
/// the (simulated) seconds it took.
async fn fetch_all(mp: &Multipath, obj: &Object) -> f64 {
    let start = Instant::now();
    let wanted = obj
        .descs
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u32, *d))
        .collect();
    let (tx, mut rx) = mpsc::channel(64);
    mp.get_chunks(obj.oid, wanted, ChunkSink::new(tx, 0));
    let mut got = vec![false; obj.descs.len()];
    while got.iter().any(|g| !*g) {
        let Some((_, ev)) = rx.recv().await else {
            break;
        };
        match ev {
            ChunkEvent::Chunk(chunk) => {
                let index = chunk.index();
                let d = obj.descs[index as usize];
                assert_eq!(
                    chunk.data(),
                    &obj.data[d.offset as usize..d.end() as usize],
                    "chunk {index} delivered wrong"
                );
                assert!(!got[index as usize], "chunk {index} delivered twice");
                got[index as usize] = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        got.iter().all(|g| *g),
        "the channel closed before every chunk came"
    );
    start.elapsed().as_secs_f64()
}

fn paths(list: &[&Arc<SimPath>]) -> Vec<Arc<dyn Transfer>> {
    list.iter()
        .map(|p| (*p).clone() as Arc<dyn Transfer>)
        .collect()
}

/// The rate at which one chunk takes `ms` milliseconds (tokio's timer
/// counts whole milliseconds).
fn per_chunk(ms: u32) -> f64 {
    CHUNK as f64 * 1000.0 / f64::from(ms)
}

#[tokio::test(start_paused = true)]
async fn two_equal_paths_share_the_work_and_halve_the_time() {
    let obj = object(200);
    let a = SimPath::new("a", &obj, per_chunk(10), Mode::Normal);
    let b = SimPath::new("b", &obj, per_chunk(10), Mode::Normal);
    let mp = Multipath::new(paths(&[&a, &b]));
    let secs = fetch_all(&mp, &obj).await;
    let ideal = obj.data.len() as f64 / (2.0 * per_chunk(10));
    assert!(secs <= ideal * 1.05, "took {secs:.3} s, ideal {ideal:.3} s");
    let stats = mp.stats();
    for s in &stats {
        assert!(s.chunks >= 80, "{s:?} carried too little");
    }
    assert_eq!(stats.iter().map(|s| s.chunks).sum::<u64>(), 200);
}

#[tokio::test(start_paused = true)]
async fn unequal_paths_finish_near_the_sum_of_their_rates() {
    let obj = object(300);
    let a = SimPath::new("a", &obj, per_chunk(10), Mode::Normal);
    let b = SimPath::new("b", &obj, per_chunk(100), Mode::Normal);
    let mp = Multipath::new(paths(&[&a, &b]));
    let secs = fetch_all(&mp, &obj).await;
    let ideal = obj.data.len() as f64 / (per_chunk(10) + per_chunk(100));
    assert!(secs <= ideal * 1.1, "took {secs:.3} s, ideal {ideal:.3} s");
    assert!(mp.stats()[1].chunks > 0);
}

#[tokio::test(start_paused = true)]
async fn a_very_slow_path_never_makes_it_slower_than_the_fast_one_alone() {
    let obj = object(100);
    let fast = SimPath::new("fast", &obj, per_chunk(10), Mode::Normal);
    let alone = fetch_all(&Multipath::new(paths(&[&fast])), &obj).await;
    let fast = SimPath::new("fast", &obj, per_chunk(10), Mode::Normal);
    // 100 times slower: one chunk takes 1 s, the whole object 100 s.
    let slow = SimPath::new("slow", &obj, per_chunk(1000), Mode::Normal);
    let mp = Multipath::new(paths(&[&slow, &fast]));
    let both = fetch_all(&mp, &obj).await;
    assert!(
        both <= alone * 1.02,
        "both paths {both:.3} s, fast path alone {alone:.3} s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_path_is_dropped_and_its_requests_done_elsewhere() {
    let obj = object(200);
    let a = SimPath::new("a", &obj, per_chunk(10), Mode::Normal);
    let b = SimPath::new("b", &obj, per_chunk(10), Mode::StallAfter(20));
    let mp = Multipath::new(paths(&[&a, &b]));
    let secs = fetch_all(&mp, &obj).await;
    // Borrowing takes the stalled requests before the stall is declared.
    let fast_alone = obj.data.len() as f64 / per_chunk(10);
    assert!(secs <= fast_alone * 1.1, "took {secs:.3} s");
    assert!(b.served.load(Ordering::Relaxed) == 20);
}

#[tokio::test(start_paused = true)]
async fn a_lying_path_delivers_nothing_and_is_dropped_for_good() {
    let obj = object(100);
    let liar = SimPath::new("liar", &obj, per_chunk(5), Mode::Lie);
    let honest = SimPath::new("honest", &obj, per_chunk(10), Mode::Normal);
    let mp = Multipath::new(paths(&[&liar, &honest]));
    fetch_all(&mp, &obj).await;
    let stats = mp.stats();
    assert_eq!(stats[0].chunks, 0, "{stats:?}");
    assert_eq!(stats[0].drops, 1, "{stats:?}");
    assert_eq!(stats[1].chunks, 100);
}

#[tokio::test(start_paused = true)]
async fn a_path_that_fails_is_used_again_when_it_comes_back() {
    let obj = object(400);
    let a = SimPath::new("a", &obj, per_chunk(50), Mode::Normal);
    let b = SimPath::new("b", &obj, per_chunk(50), Mode::Normal);
    b.down.store(true, Ordering::Relaxed);
    let mp = Arc::new(Multipath::new(paths(&[&a, &b])));
    let (m, o) = (mp.clone(), obj.clone());
    let fetch = tokio::spawn(async move { fetch_all(&m, &o).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = mp.stats()[1].chunks;
    assert_eq!(before, 0);
    b.down.store(false, Ordering::Relaxed);
    let secs = fetch.await.expect("fetch task");
    let stats = mp.stats();
    assert!(stats[1].drops >= 1, "{stats:?}");
    assert!(stats[1].chunks > 50, "{stats:?}");
    assert!(
        secs < obj.data.len() as f64 / per_chunk(50),
        "took {secs:.3} s"
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_path_is_down_the_requests_fail() {
    let obj = object(10);
    let a = SimPath::new("a", &obj, per_chunk(100), Mode::Normal);
    a.down.store(true, Ordering::Relaxed);
    let mp = Multipath::new(paths(&[&a]));
    let wanted = obj
        .descs
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u32, *d))
        .collect();
    let start = Instant::now();
    let (tx, mut rx) = mpsc::channel(64);
    mp.get_chunks(obj.oid, wanted, ChunkSink::new(tx, 0));
    let (_, ev) = rx.recv().await.expect("an event");
    assert!(matches!(ev, ChunkEvent::SourceFailed(_)), "{ev:?}");
    let waited = start.elapsed();
    assert!(waited >= dot_plugins::multipath::ALL_DOWN, "{waited:?}");
    assert!(
        waited <= dot_plugins::multipath::ALL_DOWN + Duration::from_secs(1),
        "{waited:?}"
    );
}
