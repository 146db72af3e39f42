//! Plain URLs of an object's bytes: a file on any web server, a presigned
//! URL (docs/mirrors.md). Such a hint holds no descriptor list, so it
//! cannot describe the object; it serves beside a source that did (an
//! agent, a mirror), or for a list the receiver already trusts. Chunks
//! are read with `Range` requests at their descriptor offsets, runs of
//! neighbouring chunks in one request (at most [`MAX_RUN`] bytes), several
//! requests at a time over the mirrors' kept-alive connections; each chunk
//! is checked against its descriptor like any other.
//!
//! The server is outside input: a body must be exactly the range asked
//! for (`206 Partial Content`, never more bytes), every request has a
//! deadline, and a server that ignores `Range` (answering the whole file)
//! fails as a source instead of being read to the end.

use std::sync::Arc;
use std::time::Duration;

use dot_store::{Access, Descriptor, Oid, VerifiedChunk};

use crate::error::TransferError;
use crate::http::{IN_FLIGHT, REQUEST_TIMEOUT, client};
use crate::requests::Requests;
use crate::transfer::{BoxFuture, ChunkEvent, ChunkSink, Described, Transfer};

/// Most bytes one request asks for (neighbouring chunks joined).
pub const MAX_RUN: u64 = 4 << 20;
/// Time for the check that the URL serves the object's size in ranges.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// A URL of the object's bytes, read by ranges.
#[derive(Clone)]
pub struct RangeSource {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    requests: Arc<Requests>,
}

impl RangeSource {
    /// The object's bytes at `url` (`http://` or `https://`).
    ///
    /// # Errors
    /// A URL that is not `http://` or `https://`.
    pub fn new(url: &str) -> Result<RangeSource, TransferError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(TransferError::Connection {
                peer: url.to_owned(),
                message: "not an http:// or https:// URL".into(),
            });
        }
        Ok(RangeSource {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                requests: Requests::new(IN_FLIGHT),
            }),
        })
    }
}

/// Whether `url` names an object's bytes (its path does not end in `/`)
/// rather than a mirror's folder.
pub fn is_object_url(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
    after_scheme.contains('/') && !path.ends_with('/')
}

impl Inner {
    fn err(&self, message: impl Into<String>) -> TransferError {
        TransferError::Connection {
            peer: self.url.clone(),
            message: message.into(),
        }
    }

    /// Bytes `start..start + len` of the URL: exactly those, or an error.
    async fn range(
        &self,
        start: u64,
        len: u64,
        deadline: Duration,
    ) -> Result<(Vec<u8>, Option<u64>), TransferError> {
        let client = client().map_err(|e| self.err(e))?;
        let end = start + len - 1;
        let mut resp = client
            .get(&self.url)
            .header(reqwest::header::RANGE, format!("bytes={start}-{end}"))
            .timeout(deadline)
            .send()
            .await
            .map_err(|e| self.err(format!("bytes {start}-{end}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::OK {
            return Err(self.err("the server answers the whole file, not ranges"));
        }
        if status != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(self.err(format!("bytes {start}-{end}: HTTP {status}")));
        }
        // "bytes START-END/TOTAL": the range must be the one asked for.
        let content_range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (range, total) = content_range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(|| self.err(format!("a Content-Range of {content_range:?}")))?;
        if range != format!("{start}-{end}") {
            return Err(self.err(format!(
                "asked for bytes {start}-{end}, answered {content_range:?}"
            )));
        }
        let total = total.parse::<u64>().ok();
        let limit = usize::try_from(len).map_err(|_| self.err("a range too long"))?;
        let mut body = Vec::with_capacity(limit);
        while let Some(piece) = resp
            .chunk()
            .await
            .map_err(|e| self.err(format!("bytes {start}-{end}: {e}")))?
        {
            if body.len() + piece.len() > limit {
                return Err(self.err(format!("more than the {len} bytes asked for")));
            }
            body.extend_from_slice(&piece);
        }
        if body.len() != limit {
            return Err(self.err(format!("{} of the {len} bytes asked for", body.len())));
        }
        Ok((body, total))
    }

    /// Fetches a run of neighbouring chunks in one request; each checked.
    async fn run(&self, run: &[(u32, Descriptor)]) -> Vec<ChunkEvent> {
        let (Some((_, first)), Some((_, last))) = (run.first(), run.last()) else {
            return Vec::new();
        };
        let start = first.offset;
        let len = last.offset + u64::from(last.len) - start;
        match self.range(start, len, REQUEST_TIMEOUT).await {
            Ok((body, _)) => run
                .iter()
                .map(|&(index, d)| {
                    let at = (d.offset - start) as usize;
                    let bytes = bytes::Bytes::copy_from_slice(&body[at..at + d.len as usize]);
                    match VerifiedChunk::verify(index, d, bytes) {
                        Ok(chunk) => ChunkEvent::Chunk(chunk),
                        Err(source) => ChunkEvent::Failed {
                            index,
                            error: TransferError::Corrupt {
                                peer: self.url.clone(),
                                source,
                            },
                        },
                    }
                })
                .collect(),
            Err(error) => run
                .iter()
                .map(|&(index, _)| ChunkEvent::Failed {
                    index,
                    error: error.clone(),
                })
                .collect(),
        }
    }
}

/// `chunks` cut into runs of neighbours (each chunk starting where the one
/// before ends), each at most [`MAX_RUN`] bytes (a single chunk may be
/// more).
fn runs(chunks: Vec<(u32, Descriptor)>) -> Vec<Vec<(u32, Descriptor)>> {
    let mut out: Vec<Vec<(u32, Descriptor)>> = Vec::new();
    for (index, d) in chunks {
        if let Some(run) = out.last_mut()
            && let (Some((_, first)), Some((_, prev))) = (run.first(), run.last())
            && prev.offset + u64::from(prev.len) == d.offset
            && d.offset + u64::from(d.len) - first.offset <= MAX_RUN
        {
            run.push((index, d));
            continue;
        }
        out.push(vec![(index, d)]);
    }
    out
}

impl Transfer for RangeSource {
    fn name(&self) -> String {
        self.inner.url.clone()
    }

    fn get_descriptors(
        &self,
        _oid: Oid,
        _access: Option<Access>,
    ) -> BoxFuture<'_, Result<Described, TransferError>> {
        Box::pin(async move {
            Err(self.inner.err(
                "a plain URL of the object's bytes holds no descriptor list: give it beside an agent or a mirror",
            ))
        })
    }

    fn confirm(
        &self,
        _oid: Oid,
        _access: Option<Access>,
        size: u64,
        _count: u32,
    ) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async move {
            if size == 0 {
                return Ok(());
            }
            let (_, total) = self.inner.range(0, 1, CONFIRM_TIMEOUT).await?;
            if total != Some(size) {
                return Err(TransferError::BadDescriptors {
                    peer: self.name(),
                    reason: format!("it serves {total:?} bytes, the object has {size}"),
                });
            }
            Ok(())
        })
    }

    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink) {
        let inner = self.inner.clone();
        self.inner
            .requests
            .spawn(oid, runs(chunks), sink, move |run| {
                let inner = inner.clone();
                async move {
                    // What is left of a run may have holes: each piece alone.
                    let mut events = Vec::with_capacity(run.len());
                    for piece in runs(run) {
                        events.extend(inner.run(&piece).await);
                    }
                    events
                }
            });
    }

    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]) {
        self.inner.requests.withdraw(oid, indexes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dot_store::ChunkHash;

    fn d(offset: u64, len: u32) -> Descriptor {
        Descriptor {
            hash: ChunkHash([0; 32]),
            offset,
            len,
        }
    }

    #[test]
    fn neighbours_join_into_runs_up_to_the_limit() {
        let chunks = vec![
            (0, d(0, 10)),
            (1, d(10, 10)),
            (3, d(30, 10)),
            (4, d(40, MAX_RUN as u32)),
            (5, d(40 + MAX_RUN, 5)),
        ];
        let runs: Vec<Vec<u32>> = runs(chunks)
            .into_iter()
            .map(|r| r.into_iter().map(|(i, _)| i).collect())
            .collect();
        assert_eq!(runs, vec![vec![0, 1], vec![3], vec![4], vec![5]]);
    }

    #[test]
    fn object_urls_are_told_from_mirror_folders() {
        assert!(is_object_url("http://h/file.iso"));
        assert!(is_object_url(
            "https://b.s3.example/k/obj?X-Amz-Signature=ab/c"
        ));
        assert!(!is_object_url("http://h/dot/"));
        assert!(!is_object_url("http://h/"));
        assert!(!is_object_url("http://h"));
        assert!(!is_object_url("https://h/dot/?x=1"));
    }
}
