//! `s3://BUCKET/PREFIX/` hints: a mirror in a bucket that wants
//! credentials (docs/mirrors.md). The agent reads the same `.dot/` layout
//! an HTTP mirror serves (the descriptor file, then chunk files) through
//! `object_store`, signed with the agent's own environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`: for a service, its
//! `EnvironmentFile`; without a key and secret there, an `s3://` hint
//! fails at once, and no cloud metadata service is ever asked). Tickets
//! carry only the bucket and prefix, never a credential. Every object read is bounded by its size before its bytes
//! are taken, every request has a deadline, and every chunk is checked
//! against its descriptor like any other (`object_store`'s own deadlines:
//! 5 s to connect, 30 s a request; 10 s for a descriptor file). [`parse`] is also how `gtc
//! publish` reads its destination.

use std::sync::Arc;

use dot_plugins::http::{DESCRIBE_TIMEOUT, IN_FLIGHT, MAX_DESCRIPTOR_FILE};
use dot_plugins::portable::parse_descriptor_file;
use dot_plugins::requests::Requests;
use dot_plugins::transfer::{BoxFuture, ChunkSink, Described, Transfer};
use dot_plugins::{TransferError, gtc::proto::ErrorCode};
use dot_store::{Access, Descriptor, Oid, VerifiedChunk};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;

/// `s3://BUCKET/PREFIX` split, the prefix without slashes at its ends.
pub fn parse(dest: &str) -> Option<(String, String)> {
    let rest = dest.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// A mirror in a bucket.
#[derive(Clone)]
pub struct S3Source {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    requests: Arc<Requests>,
}

impl S3Source {
    /// The mirror at `uri` (`s3://BUCKET/PREFIX/`), with the credentials
    /// of this process's environment.
    ///
    /// # Errors
    /// A URI that names no bucket; a client `object_store` cannot build
    /// from the environment.
    pub fn new(uri: &str) -> Result<S3Source, TransferError> {
        let err = |message: String| TransferError::Connection {
            peer: uri.to_owned(),
            message,
        };
        let (bucket, prefix) = parse(uri).ok_or_else(|| err("names no bucket".into()))?;
        // Credentials from the environment only: never a guess at a cloud
        // metadata service.
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            || std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none()
        {
            return Err(err(
                "no credentials for s3:// hints: give the agent AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            ));
        }
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| {
                err(format!(
                    "S3 (credentials and endpoint from AWS_* variables): {e}"
                ))
            })?;
        Ok(S3Source {
            inner: Arc::new(Inner {
                name: uri.to_owned(),
                store: Arc::new(store),
                prefix,
                requests: Requests::new(IN_FLIGHT),
            }),
        })
    }
}

impl Inner {
    fn err(&self, message: impl Into<String>) -> TransferError {
        TransferError::Connection {
            peer: self.name.clone(),
            message: message.into(),
        }
    }

    /// The object `rel` beneath the prefix: at most `limit` bytes.
    async fn get(&self, rel: &str, limit: usize) -> Result<dot_store::Bytes, TransferError> {
        let key = Key::from(if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        });
        let got = match self.store.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(TransferError::Refused {
                    peer: self.name.clone(),
                    code: ErrorCode::NotFound,
                    message: format!("{rel}: not in this bucket"),
                });
            }
            Err(e) => return Err(self.err(format!("{rel}: {e}"))),
        };
        if got.meta.size > limit as u64 {
            return Err(self.err(format!("{rel}: longer than {limit} bytes")));
        }
        let body = got
            .bytes()
            .await
            .map_err(|e| self.err(format!("{rel}: {e}")))?;
        if body.len() > limit {
            return Err(self.err(format!("{rel}: longer than {limit} bytes")));
        }
        Ok(body)
    }

    async fn describe(&self, oid: Oid) -> Result<Described, TransferError> {
        let body = tokio::time::timeout(
            DESCRIBE_TIMEOUT,
            self.get(&format!(".dot/objects/{oid}"), MAX_DESCRIPTOR_FILE),
        )
        .await
        .map_err(|_| self.err("no descriptor file within 10 s"))??;
        let (size, descriptors) =
            parse_descriptor_file(&body).map_err(|e| TransferError::BadDescriptors {
                peer: self.name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Described { size, descriptors })
    }

    async fn chunk(&self, index: u32, desc: Descriptor) -> Result<VerifiedChunk, TransferError> {
        let hex = desc.hash.hex();
        let body = self
            .get(
                &format!(".dot/chunks/{}/{hex}", &hex[..3]),
                desc.len as usize,
            )
            .await?;
        VerifiedChunk::verify(index, desc, body).map_err(|source| TransferError::Corrupt {
            peer: self.name.clone(),
            source,
        })
    }
}

impl Transfer for S3Source {
    fn name(&self) -> String {
        self.inner.name.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split_into_bucket_and_prefix() {
        assert_eq!(parse("s3://b/p/q/"), Some(("b".into(), "p/q".into())));
        assert_eq!(parse("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(parse("s3:///p"), None);
        assert_eq!(parse("http://b/p"), None);
        assert_eq!(parse("/var/www"), None);
    }
}
