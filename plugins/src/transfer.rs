//! The transfer-plugin trait: how the agent asks a source for an object.
//!
//! A source first describes the object (size and descriptors), then
//! delivers the chunks it is asked for as they arrive, in any order, into
//! the caller's [`ChunkSink`]. Every source checks each chunk against its
//! descriptor before delivering it: a delivered chunk is a
//! [`VerifiedChunk`], and the store writes it without hashing again. A
//! source whose bytes do not verify reports [`TransferError::Corrupt`].

use std::future::Future;
use std::pin::Pin;

use dot_store::{Access, Descriptor, Oid, VerifiedChunk};
use tokio::sync::mpsc;

use crate::error::TransferError;

/// A boxed future, so that `Transfer` can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a source knows of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Size in bytes.
    pub size: u64,
    /// Its descriptors, checked to tile `size` bytes.
    pub descriptors: Vec<Descriptor>,
}

/// One outcome of a chunk request.
#[derive(Debug)]
pub enum ChunkEvent {
    /// A chunk, checked against its descriptor.
    Chunk(VerifiedChunk),
    /// The source cannot deliver chunk `index`.
    Failed {
        /// Chunk index.
        index: u32,
        /// Why.
        error: TransferError,
    },
    /// The source as a whole failed; no more events will come from this
    /// request.
    SourceFailed(TransferError),
}

/// Where a source delivers chunk events: the caller's one channel, each
/// event tagged with the number the caller gave this source. Cheap to
/// clone. The channel is bounded: a source that gets ahead of its caller
/// waits (and stops reading its peer).
#[derive(Clone, Debug)]
pub struct ChunkSink {
    tx: mpsc::Sender<(usize, ChunkEvent)>,
    source: usize,
}

impl ChunkSink {
    /// A sink delivering into `tx`, tagging events with `source`.
    pub fn new(tx: mpsc::Sender<(usize, ChunkEvent)>, source: usize) -> ChunkSink {
        ChunkSink { tx, source }
    }

    /// Delivers `event`, waiting for room. False once the caller is gone.
    pub async fn send(&self, event: ChunkEvent) -> bool {
        self.tx.send((self.source, event)).await.is_ok()
    }

    /// Delivers `event` from a thread outside the async runtime.
    pub fn blocking_send(&self, event: ChunkEvent) -> bool {
        self.tx.blocking_send((self.source, event)).is_ok()
    }

    /// Delivers `event` if there is room now (for last words of a failing
    /// source, which must not wait).
    pub fn try_send(&self, event: ChunkEvent) -> bool {
        self.tx.try_send((self.source, event)).is_ok()
    }

    /// Whether the caller stopped listening.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A transfer plugin (the paper's xferPlugin).
pub trait Transfer: Send + Sync {
    /// For logs and statistics, e.g. `gtc://127.0.0.1:7000`.
    fn name(&self) -> String;

    /// The object's size and descriptors (`access`: what proves the right
    /// to them, if a ticket gave it).
    fn get_descriptors(
        &self,
        oid: Oid,
        access: Option<Access>,
    ) -> BoxFuture<'_, Result<Described, TransferError>>;

    /// Checks that the source holds `oid` as `size` bytes in `count`
    /// chunks and that `access` opens it, for a receiver that holds a list
    /// it trusts already (a tree's pack, listed in the tree's manifest).
    /// A source that can, checks without sending the list; by default the
    /// list is fetched and its size and count compared (the chunks are
    /// checked against the trusted list either way).
    fn confirm(
        &self,
        oid: Oid,
        access: Option<Access>,
        size: u64,
        count: u32,
    ) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async move {
            let d = self.get_descriptors(oid, access).await?;
            if d.size != size || d.descriptors.len() != count as usize {
                return Err(TransferError::BadDescriptors {
                    peer: self.name(),
                    reason: "it describes the object otherwise than the list held".into(),
                });
            }
            Ok(())
        })
    }

    /// Starts fetching `chunks` (index and descriptor) of `oid`; each one's
    /// outcome goes to `sink` as it comes.
    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink);

    /// Withdraws requests for `indexes` of `oid` not yet answered.
    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]);
}
