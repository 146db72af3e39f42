//! The put pipeline: one pass over the bytes computes the chunk boundaries,
//! every chunk's hash and the whole object's hash, on separate threads.
//!
//! ```text
//! caller thread: fill block -> cut chunks (FastCDC) ----+--> whole-object SHA-256 thread
//!                                                       +--> chunk BLAKE3 thread
//!                                                       +--> sink thread (stream puts only)
//! ```
//!
//! Blocks are shared read-only (`Arc`) by the consumers and come back to the
//! caller through a return channel when the last consumer is done, so a put
//! of any size uses a fixed pool of buffers. The bytes after the last decided
//! boundary of a block are copied to the front of the next one.
//!
//! An object that ends within its first read of [`SMALL`] bytes (most mail,
//! most files written through the mount) is cut and hashed on the caller's
//! thread instead: no threads started, no 4 MiB blocks zeroed.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc;

use sha2::Digest;

use crate::chunker::Chunker;
use crate::descriptor::Descriptor;
use crate::oid::{ChunkHash, Oid};

/// Bytes read per block (plus room for one carried-over chunk).
const BLOCK: usize = 4 << 20;
/// Blocks in flight at once.
const POOL: usize = 6;
/// The first read: an object that ends within it is done on the caller's
/// thread.
const SMALL: usize = 64 << 10;

/// The result of one pass over an object.
#[derive(Debug)]
pub(crate) struct Ingested {
    pub oid: Oid,
    pub size: u64,
    pub descriptors: Vec<Descriptor>,
}

/// Why a pass failed.
#[derive(Debug)]
pub(crate) enum IngestError {
    /// The source failed.
    Input(io::Error),
    /// The sink failed.
    Sink(io::Error),
}

type Block = Arc<Vec<u8>>;

/// Runs the pipeline. `fill` reads into the buffer it is given and returns
/// the count, 0 at the end. `sink`, if given, receives every byte in order.
pub(crate) fn ingest(
    chunker: &dyn Chunker,
    fill: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    sink: Option<&mut (dyn Write + Send)>,
) -> Result<Ingested, IngestError> {
    let mut first = vec![0u8; SMALL];
    let mut filled = 0;
    while filled < SMALL {
        match fill(&mut first[filled..]) {
            Ok(0) => {
                first.truncate(filled);
                return small(chunker, &first, sink);
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IngestError::Input(e)),
        }
    }
    pipeline(chunker, fill, sink, first)
}

/// A whole object already in memory, cut and hashed on this thread.
fn small(
    chunker: &dyn Chunker,
    data: &[u8],
    sink: Option<&mut (dyn Write + Send)>,
) -> Result<Ingested, IngestError> {
    if let Some(sink) = sink {
        sink.write_all(data)
            .and_then(|()| sink.flush())
            .map_err(IngestError::Sink)?;
    }
    Ok(Ingested {
        oid: Oid::of(data),
        size: data.len() as u64,
        descriptors: crate::chunker::describe(chunker, data),
    })
}

/// The threaded pass, starting with `prefix` (read, not yet hashed).
fn pipeline(
    chunker: &dyn Chunker,
    fill: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    sink: Option<&mut (dyn Write + Send)>,
    prefix: Vec<u8>,
) -> Result<Ingested, IngestError> {
    let cap = BLOCK + chunker.max_len();
    let (ret_tx, ret_rx) = mpsc::channel::<Block>();
    std::thread::scope(|scope| {
        let (whole_tx, whole_rx) = mpsc::sync_channel::<(Block, Range<usize>)>(POOL);
        let ret = ret_tx.clone();
        let whole = scope.spawn(move || {
            let mut h = sha2::Sha256::new();
            for (block, range) in whole_rx {
                h.update(&block[range]);
                let _ = ret.send(block);
            }
            Oid(h.finalize().into())
        });
        let (chunk_tx, chunk_rx) = mpsc::sync_channel::<(Block, Vec<Range<usize>>)>(POOL);
        let ret = ret_tx.clone();
        let chunks = scope.spawn(move || {
            let mut hashes = Vec::new();
            for (block, ranges) in chunk_rx {
                hashes.extend(ranges.into_iter().map(|r| ChunkHash::of(&block[r])));
                let _ = ret.send(block);
            }
            hashes
        });
        let (sink_tx, sink_handle) = match sink {
            Some(sink) => {
                let (tx, rx) = mpsc::sync_channel::<(Block, Range<usize>)>(POOL);
                let ret = ret_tx.clone();
                let handle = scope.spawn(move || {
                    let mut result = Ok(());
                    for (block, range) in rx {
                        if result.is_ok() {
                            result = sink.write_all(&block[range]);
                        }
                        let _ = ret.send(block);
                    }
                    result.and_then(|()| sink.flush())
                });
                (Some(tx), Some(handle))
            }
            None => (None, None),
        };
        drop(ret_tx);

        let mut made = 0usize;
        let mut spare: Vec<Vec<u8>> = Vec::new();
        // Bytes copied to the front of the next block; at first the prefix,
        // which no consumer has seen yet.
        let mut carry = prefix;
        let mut prefix_unsent = true;
        let mut spans: Vec<(u64, u32)> = Vec::new();
        let mut base = 0u64;
        let mut input_error = None;
        loop {
            let mut buf = match spare.pop() {
                Some(b) => b,
                None if made < POOL => {
                    made += 1;
                    vec![0u8; cap]
                }
                None => loop {
                    // Every block is out with a consumer; wait for one whose
                    // last holder just returned it.
                    match ret_rx.recv() {
                        Ok(block) => {
                            if let Some(b) = Arc::into_inner(block) {
                                break b;
                            }
                        }
                        // All consumers died: only a panic does that.
                        Err(_) => break vec![0u8; cap],
                    }
                },
            };
            buf[..carry.len()].copy_from_slice(&carry);
            let fresh_start = if std::mem::take(&mut prefix_unsent) {
                0
            } else {
                carry.len()
            };
            let mut filled = carry.len();
            let mut eof = false;
            while filled < cap {
                match fill(&mut buf[filled..cap]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        input_error = Some(e);
                        break;
                    }
                }
            }
            if input_error.is_some() {
                break;
            }
            let mut ranges = Vec::new();
            let mut pos = 0;
            while pos < filled {
                let Some(len) = chunker.next_chunk(&buf[pos..filled], eof) else {
                    break;
                };
                let len = len.clamp(1, filled - pos);
                ranges.push(pos..pos + len);
                spans.push((base + pos as u64, len as u32));
                pos += len;
            }
            carry.clear();
            carry.extend_from_slice(&buf[pos..filled]);
            base += pos as u64;
            let block = Arc::new(buf);
            let mut sent = false;
            if filled > fresh_start {
                sent |= whole_tx.send((block.clone(), fresh_start..filled)).is_ok();
                if let Some(tx) = &sink_tx {
                    sent |= tx.send((block.clone(), fresh_start..filled)).is_ok();
                }
            }
            if !ranges.is_empty() {
                sent |= chunk_tx.send((block.clone(), ranges)).is_ok();
            }
            // Let go of this block now: a consumer handing its copy back
            // must find it the last one, or the buffer leaves the pool (and
            // with all of them gone, the next wait never ends).
            if !sent {
                if let Some(b) = Arc::into_inner(block) {
                    spare.push(b);
                }
            } else {
                drop(block);
            }
            if eof {
                break;
            }
            while let Ok(block) = ret_rx.try_recv() {
                if let Some(b) = Arc::into_inner(block) {
                    spare.push(b);
                }
            }
        }
        drop(whole_tx);
        drop(chunk_tx);
        drop(sink_tx);
        let oid = whole.join();
        let hashes = chunks.join();
        let sink_result = sink_handle.map(|h| h.join());
        if let Some(e) = input_error {
            return Err(IngestError::Input(e));
        }
        let (Ok(oid), Ok(hashes)) = (oid, hashes) else {
            return Err(IngestError::Input(io::Error::other(
                "a hashing thread panicked",
            )));
        };
        match sink_result {
            Some(Ok(Err(e))) => return Err(IngestError::Sink(e)),
            Some(Err(_)) => {
                return Err(IngestError::Sink(io::Error::other(
                    "the sink thread panicked",
                )));
            }
            _ => {}
        }
        let descriptors = spans
            .into_iter()
            .zip(hashes)
            .map(|((offset, len), hash)| Descriptor { hash, offset, len })
            .collect();
        Ok(Ingested {
            oid,
            size: base,
            descriptors,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::{ChunkerSpec, chunk_lengths};

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x2545F4914F6CDD1Du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn run(spec: ChunkerSpec, bytes: &[u8], read_size: usize) -> (Ingested, Vec<u8>) {
        let chunker = spec.build().expect("spec");
        let mut at = 0;
        let mut fill = |buf: &mut [u8]| {
            let n = buf.len().min(read_size).min(bytes.len() - at);
            buf[..n].copy_from_slice(&bytes[at..at + n]);
            at += n;
            Ok(n)
        };
        let mut sunk = Vec::new();
        let out = ingest(chunker.as_ref(), &mut fill, Some(&mut sunk)).expect("ingest");
        (out, sunk)
    }

    #[test]
    fn one_pass_matches_separate_computations() {
        let all = data(13 << 20);
        let sizes = [1, 5000, SMALL - 1, SMALL, SMALL + 1, 13 << 20];
        for (spec, size) in [ChunkerSpec::default(), ChunkerSpec::Fixed { size: 65536 }]
            .into_iter()
            .flat_map(|spec| sizes.map(|n| (spec, n)))
        {
            let bytes = &all[..size];
            for read_size in [1000, 1 << 20, 64 << 20] {
                let (out, sunk) = run(spec, bytes, read_size);
                assert_eq!(out.oid, Oid::of(bytes));
                assert_eq!(out.size, bytes.len() as u64);
                assert_eq!(sunk, bytes);
                let lens = chunk_lengths(spec.build().expect("spec").as_ref(), bytes);
                assert_eq!(out.descriptors.len(), lens.len());
                let mut at = 0u64;
                for (d, len) in out.descriptors.iter().zip(lens) {
                    assert_eq!((d.offset, d.len as usize), (at, len));
                    assert_eq!(
                        d.hash,
                        ChunkHash::of(&bytes[at as usize..at as usize + len])
                    );
                    at += len as u64;
                }
            }
        }
    }

    #[test]
    fn empty_input_is_an_object_with_no_chunks() {
        let (out, _) = run(ChunkerSpec::default(), &[], 10);
        assert_eq!(out.oid, Oid::of(b""));
        assert!(out.descriptors.is_empty());
    }

    #[test]
    fn input_errors_are_reported() {
        let chunker = ChunkerSpec::default().build().expect("spec");
        let mut n = 0;
        let mut fill = |buf: &mut [u8]| {
            n += 1;
            if n > 3 {
                Err(io::Error::other("disk gone"))
            } else {
                Ok(buf.len().min(1 << 20))
            }
        };
        assert!(matches!(
            ingest(chunker.as_ref(), &mut fill, None),
            Err(IngestError::Input(_))
        ));
    }
}
