//! HTTP(S) mirrors: any web server, CDN or caching proxy serving a folder
//! in the `.dot/` layout of a portable key (docs/mirrors.md). An object is
//! described by its descriptor file (`BASE/.dot/objects/OID`) and its
//! chunks are the chunk files (`BASE/.dot/chunks/ABC/HASH`), fetched
//! several at a time over kept-alive connections; every chunk is checked
//! against its descriptor like any other, so a mirror can lose or mangle
//! files but never hand over a wrong byte.
//!
//! A mirror is outside input: every body is read up to a bound (a chunk
//! file's descriptor length, a descriptor file's [`MAX_DESCRIPTOR_FILE`])
//! and every request has a deadline.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dot_store::{Access, Descriptor, Oid, VerifiedChunk};

use crate::error::TransferError;
use crate::gtc::proto::ErrorCode;
use crate::portable::parse_descriptor_file;
use crate::requests::Requests;
use crate::transfer::{BoxFuture, ChunkSink, Described, Transfer};

/// Requests in flight to one mirror at once.
pub const IN_FLIGHT: usize = 16;
/// Time to connect to a mirror.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for one whole request, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for a descriptor file: a mirror that hangs holds up the start of
/// a fetch no longer than this.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest descriptor file read from a mirror (1.8 million chunks).
pub const MAX_DESCRIPTOR_FILE: usize = 64 << 20;
/// Where the system keeps its trusted roots (Debian's `ca-certificates`).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client every mirror shares, so connections are kept across
/// fetches: HTTP/1.1, rustls with ring and the system's roots.
pub(crate) fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            if let Ok(certs) = CertificateDer::pem_file_iter(SYSTEM_ROOTS) {
                roots.add_parsable_certificates(certs.flatten());
            }
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(4))
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The source an `http://` or `https://` hint names: a mirror's folder
/// (the URL ends in `/`) or the object's bytes themselves (any other URL:
/// [`crate::http_range`]).
///
/// # Errors
/// A URL that is not `http://` or `https://`.
pub fn source(url: &str) -> Result<Arc<dyn Transfer>, TransferError> {
    if crate::http_range::is_object_url(url) {
        Ok(Arc::new(crate::http_range::RangeSource::new(url)?))
    } else {
        Ok(Arc::new(HttpSource::new(url)?))
    }
}

/// A mirror at a base URL (`http://host/path/`, `https://...`).
#[derive(Clone)]
pub struct HttpSource {
    inner: Arc<Inner>,
}

struct Inner {
    /// Ends in `/`.
    base: String,
    requests: Arc<Requests>,
}

impl HttpSource {
    /// The mirror whose `.dot/` folder is at `base`.
    ///
    /// # Errors
    /// A URL that is not `http://` or `https://`.
    pub fn new(base: &str) -> Result<HttpSource, TransferError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TransferError::Connection {
                peer: base.to_owned(),
                message: "not an http:// or https:// URL".into(),
            });
        }
        let mut base = base.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(HttpSource {
            inner: Arc::new(Inner {
                base,
                requests: Requests::new(IN_FLIGHT),
            }),
        })
    }
}

impl Inner {
    fn err(&self, message: impl Into<String>) -> TransferError {
        TransferError::Connection {
            peer: self.base.clone(),
            message: message.into(),
        }
    }

    /// GETs `path` (beneath the base) within `deadline`: its body, at
    /// most `limit` bytes.
    async fn get(
        &self,
        path: &str,
        limit: usize,
        deadline: Duration,
    ) -> Result<Bytes, TransferError> {
        let client = client().map_err(|e| self.err(e))?;
        let url = format!("{}{path}", self.base);
        let mut resp = client
            .get(&url)
            .timeout(deadline)
            .send()
            .await
            .map_err(|e| self.err(format!("{path}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(TransferError::Refused {
                peer: self.base.clone(),
                code: ErrorCode::NotFound,
                message: format!("{path}: not on this mirror"),
            });
        }
        if !status.is_success() {
            return Err(self.err(format!("{path}: HTTP {status}")));
        }
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(self.err(format!("{path}: longer than {limit} bytes")));
        }
        let mut body = Vec::with_capacity(limit.min(1 << 20));
        while let Some(piece) = resp
            .chunk()
            .await
            .map_err(|e| self.err(format!("{path}: {e}")))?
        {
            if body.len() + piece.len() > limit {
                return Err(self.err(format!("{path}: longer than {limit} bytes")));
            }
            body.extend_from_slice(&piece);
        }
        Ok(body.into())
    }

    async fn describe(&self, oid: Oid) -> Result<Described, TransferError> {
        let body = self
            .get(
                &format!(".dot/objects/{oid}"),
                MAX_DESCRIPTOR_FILE,
                DESCRIBE_TIMEOUT,
            )
            .await?;
        let (size, descriptors) =
            parse_descriptor_file(&body).map_err(|e| TransferError::BadDescriptors {
                peer: self.base.clone(),
                reason: e.to_string(),
            })?;
        Ok(Described { size, descriptors })
    }

    /// Fetches one chunk and checks it.
    async fn chunk(&self, index: u32, desc: Descriptor) -> Result<VerifiedChunk, TransferError> {
        let hex = desc.hash.hex();
        let body = self
            .get(
                &format!(".dot/chunks/{}/{hex}", &hex[..3]),
                desc.len as usize,
                REQUEST_TIMEOUT,
            )
            .await?;
        VerifiedChunk::verify(index, desc, body).map_err(|source| TransferError::Corrupt {
            peer: self.base.clone(),
            source,
        })
    }
}

impl Transfer for HttpSource {
    fn name(&self) -> String {
        self.inner.base.clone()
    }

    fn get_descriptors(
        &self,
        oid: Oid,
        _access: Option<Access>,
    ) -> BoxFuture<'_, Result<Described, TransferError>> {
        Box::pin(self.inner.describe(oid))
    }

    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink) {
        let inner = self.inner.clone();
        self.inner
            .requests
            .spawn_each(oid, chunks, sink, move |index, desc| {
                let inner = inner.clone();
                async move { inner.chunk(index, desc).await }
            });
    }

    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]) {
        self.inner.requests.withdraw(oid, indexes);
    }
}
