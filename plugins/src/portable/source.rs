//! A key as a transfer source: describes the objects whose descriptor
//! files it holds (under a deadline) and hands out the chunks it holds,
//! each verified.

use std::collections::HashSet;
use std::io::{self};
use std::path::Path;
use std::sync::{Arc, Mutex};

use dot_store::{Access, Descriptor, Oid};

use crate::error::TransferError;
use crate::transfer::{BoxFuture, ChunkEvent, ChunkSink, Described, Transfer};

use super::*;

/// A device as a transfer source: hands out the chunks it holds, each
/// verified; a missing or corrupt chunk file is a failed chunk (fetched
/// elsewhere), never a wrong byte.
pub struct PortableSource {
    device: Arc<Device>,
    name: String,
    cancelled: Arc<Mutex<HashSet<(Oid, u32)>>>,
}

impl PortableSource {
    /// A source reading `device`.
    pub fn new(device: Device) -> PortableSource {
        PortableSource {
            name: format!("portable://{}", device.mount_point().display()),
            device: Arc::new(device),
            cancelled: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

impl PortableSource {
    /// Where the device is mounted.
    pub fn mount_point(&self) -> &Path {
        self.device.mount_point()
    }
}

impl Transfer for PortableSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn get_descriptors(
        &self,
        oid: Oid,
        _access: Option<Access>,
    ) -> BoxFuture<'_, Result<Described, TransferError>> {
        let device = self.device.clone();
        let name = self.name.clone();
        Box::pin(async move {
            // Off the async workers, and waited for only so long: a key
            // that hangs is a failed source, never a stuck fetch.
            let read = tokio::time::timeout(
                DESCRIBE_DEADLINE,
                tokio::task::spawn_blocking(move || device.read_descriptors(oid)),
            )
            .await;
            let Ok(read) = read else {
                return Err(TransferError::Connection {
                    peer: name,
                    message: format!("no description within {DESCRIBE_DEADLINE:?}"),
                });
            };
            match read {
                Ok(Ok((size, descriptors))) => Ok(Described { size, descriptors }),
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    Err(TransferError::BadDescriptors {
                        peer: name,
                        reason: e.to_string(),
                    })
                }
                Ok(Err(e)) => Err(TransferError::Connection {
                    peer: name,
                    message: e.to_string(),
                }),
                Err(e) => Err(TransferError::Connection {
                    peer: name,
                    message: e.to_string(),
                }),
            }
        })
    }

    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink) {
        let device = self.device.clone();
        let name = self.name.clone();
        let cancelled = self.cancelled.clone();
        tokio::task::spawn_blocking(move || {
            for (index, desc) in chunks {
                if cancelled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(oid, index))
                {
                    continue;
                }
                let ev = match device.read_chunk(index, &desc) {
                    Ok(Some(chunk)) => ChunkEvent::Chunk(chunk),
                    Ok(None) => ChunkEvent::Failed {
                        index,
                        error: TransferError::Connection {
                            peer: name.clone(),
                            message: "chunk not on the device".into(),
                        },
                    },
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        tracing::warn!(device = %name, index, error = %e, "corrupt chunk file ignored");
                        ChunkEvent::Failed {
                            index,
                            error: TransferError::Connection {
                                peer: name.clone(),
                                message: e.to_string(),
                            },
                        }
                    }
                    Err(e) => {
                        // The device itself failed (pulled): nothing more
                        // will come from it.
                        sink.blocking_send(ChunkEvent::SourceFailed(TransferError::Connection {
                            peer: name.clone(),
                            message: e.to_string(),
                        }));
                        return;
                    }
                };
                if !sink.blocking_send(ev) {
                    return;
                }
            }
        });
    }

    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]) {
        let mut c = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 1 << 20 {
            c.clear();
        }
        c.extend(indexes.iter().map(|i| (oid, *i)));
    }
}
