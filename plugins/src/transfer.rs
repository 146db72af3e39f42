//! The transfer-plugin trait: how the agent asks a source for an object.
//!
//! A source first describes the object (size and descriptors), then streams
//! the chunks it is asked for as they arrive, in any order. Bytes from a
//! source are *to be verified*: the caller checks each chunk against its
//! descriptor (the store's `write_chunk` does) before anyone sees it.

use std::future::Future;
use std::pin::Pin;

use dot_store::{Descriptor, Oid, Token};
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
    /// Bytes for chunk `index`, not yet verified.
    Chunk {
        /// Chunk index.
        index: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The source cannot deliver chunk `index`.
    Failed {
        /// Chunk index.
        index: u32,
        /// Why.
        error: TransferError,
    },
    /// The source as a whole failed; no more events will come.
    SourceFailed(TransferError),
}

/// A transfer plugin (the paper's xferPlugin).
pub trait Transfer: Send + Sync {
    /// For logs and statistics, e.g. `gtc://127.0.0.1:7000`.
    fn name(&self) -> String;

    /// The object's size and descriptors.
    fn get_descriptors(
        &self,
        oid: Oid,
        token: Option<Token>,
    ) -> BoxFuture<'_, Result<Described, TransferError>>;

    /// Starts fetching `chunks` (index and descriptor) of `oid`; events
    /// arrive on the returned channel, which closes when all were answered.
    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>) -> mpsc::Receiver<ChunkEvent>;

    /// Withdraws requests for `indexes` of `oid` not yet answered.
    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]);
}
