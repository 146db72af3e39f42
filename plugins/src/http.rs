//! HTTP(S) sources: a mirror's folder on any web server, CDN or caching
//! proxy ([`HttpFiles`], read as a [`Mirror`]), or a plain URL of the
//! object's bytes ([`crate::http_range`]); [`source`] tells them apart.
//! One client serves them all: kept-alive HTTP/1.1 connections, rustls
//! (ring) with the system's roots, at most 4 redirects.
//!
//! A server is outside input: every body is read up to a bound (a chunk
//! file's descriptor length, a descriptor file's
//! [`crate::mirror::MAX_DESCRIPTOR_FILE`]) and every request has a
//! deadline.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use crate::error::TransferError;
use crate::gtc::proto::ErrorCode;
pub use crate::mirror::{DESCRIBE_TIMEOUT, IN_FLIGHT, MAX_DESCRIPTOR_FILE, REQUEST_TIMEOUT};
use crate::mirror::{Files, Mirror};
use crate::transfer::{BoxFuture, Transfer};

/// Time to connect to a mirror.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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
        Ok(Arc::new(mirror(url)?))
    }
}

/// A mirror's folder at a base URL (`http://host/path/`, `https://...`).
pub type HttpSource = Mirror<HttpFiles>;

/// The mirror whose `.dot/` folder is at `base`.
///
/// # Errors
/// A URL that is not `http://` or `https://`.
pub fn mirror(base: &str) -> Result<HttpSource, TransferError> {
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
    Ok(Mirror::new(HttpFiles { base }))
}

/// A mirror's files over HTTP(S).
pub struct HttpFiles {
    /// Ends in `/`.
    base: String,
}

impl HttpFiles {
    fn err(&self, message: impl Into<String>) -> TransferError {
        TransferError::Connection {
            peer: self.base.clone(),
            message: message.into(),
        }
    }

    /// GETs `path` (beneath the base) within `deadline`: its body, at
    /// most `limit` bytes.
    async fn fetch(
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
}

impl Files for HttpFiles {
    fn name(&self) -> &str {
        &self.base
    }

    fn get(
        &self,
        rel: String,
        limit: usize,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<Bytes, TransferError>> {
        Box::pin(async move { self.fetch(&rel, limit, deadline).await })
    }
}
