//! A mirror: any store of files holding the `.dot/` layout of a portable
//! key (docs/mirrors.md), wherever its files are read from (a web server,
//! a bucket: [`Files`]). An object is described by its descriptor file
//! (`.dot/objects/OID`, at most [`MAX_DESCRIPTOR_FILE`], within
//! [`DESCRIBE_TIMEOUT`]) and its chunks are the chunk files
//! (`.dot/chunks/ABC/HASH`, each read up to its descriptor's length),
//! several at a time; every chunk is checked against its descriptor like
//! any other, so a mirror can lose or mangle files but never hand over a
//! wrong byte.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dot_store::{Access, Descriptor, Oid, VerifiedChunk};

use crate::error::TransferError;
use crate::portable::parse_descriptor_file;
use crate::requests::Requests;
use crate::transfer::{BoxFuture, ChunkSink, Described, Transfer};

/// Requests in flight to one mirror at once.
pub const IN_FLIGHT: usize = 16;
/// Time for one whole request, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for a descriptor file: a mirror that hangs holds up the start of
/// a fetch no longer than this.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest descriptor file read from a mirror (1.8 million chunks).
pub const MAX_DESCRIPTOR_FILE: usize = 64 << 20;

/// Where a mirror's files are read from.
pub trait Files: Send + Sync + 'static {
    /// The mirror's address, for logs and errors.
    fn name(&self) -> &str;

    /// The file at `rel` (`.dot/...`, beneath the mirror's root): at most
    /// `limit` bytes (a longer one is an error), within `deadline`.
    fn get(
        &self,
        rel: String,
        limit: usize,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<Bytes, TransferError>>;
}

/// A mirror whose files `F` reads.
pub struct Mirror<F: Files> {
    files: Arc<F>,
    requests: Arc<Requests>,
}

impl<F: Files> Mirror<F> {
    /// The mirror `files` reads.
    pub fn new(files: F) -> Mirror<F> {
        Mirror {
            files: Arc::new(files),
            requests: Requests::new(IN_FLIGHT),
        }
    }
}

async fn describe<F: Files>(files: &F, oid: Oid) -> Result<Described, TransferError> {
    let rel = format!(".dot/objects/{oid}");
    let body = files
        .get(rel, MAX_DESCRIPTOR_FILE, DESCRIBE_TIMEOUT)
        .await?;
    let (size, descriptors) =
        parse_descriptor_file(&body).map_err(|e| TransferError::BadDescriptors {
            peer: files.name().to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Described { size, descriptors })
}

/// Fetches one chunk file and checks it.
async fn chunk<F: Files>(
    files: &F,
    index: u32,
    desc: Descriptor,
) -> Result<VerifiedChunk, TransferError> {
    let hex = desc.hash.hex();
    let rel = format!(".dot/chunks/{}/{hex}", &hex[..3]);
    let body = files.get(rel, desc.len as usize, REQUEST_TIMEOUT).await?;
    VerifiedChunk::verify(index, desc, body).map_err(|source| TransferError::Corrupt {
        peer: files.name().to_owned(),
        source,
    })
}

impl<F: Files> Transfer for Mirror<F> {
    fn name(&self) -> String {
        self.files.name().to_owned()
    }

    fn get_descriptors(
        &self,
        oid: Oid,
        _access: Option<Access>,
    ) -> BoxFuture<'_, Result<Described, TransferError>> {
        Box::pin(describe(self.files.as_ref(), oid))
    }

    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink) {
        let files = self.files.clone();
        self.requests
            .spawn_each(oid, chunks, sink, move |index, desc| {
                let files = files.clone();
                async move { chunk(files.as_ref(), index, desc).await }
            });
    }

    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]) {
        self.requests.withdraw(oid, indexes);
    }
}
