//! `s3://BUCKET/PREFIX/` hints: a mirror in a bucket that wants
//! credentials (docs/mirrors.md), read as any mirror (a
//! `dot_plugins::mirror::Mirror` of [`S3Files`]: the layout's rules,
//! bounds and checks are that module's) through `object_store`, signed
//! with the agent's own environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`: for a service, its `EnvironmentFile`). Without a key
//! and secret there an `s3://` hint fails at once, and no cloud metadata
//! service is ever asked. Tickets carry only the bucket and prefix, never
//! a credential. Each object is bounded by its size before its bytes are
//! taken, and every request has a deadline. [`parse`] is also how `gtc
//! publish` reads its destination.

use std::sync::Arc;
use std::time::Duration;

use dot_plugins::TransferError;
use dot_plugins::gtc::proto::ErrorCode;
use dot_plugins::mirror::{Files, Mirror};
use dot_plugins::transfer::BoxFuture;
use dot_store::Bytes;
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
pub type S3Source = Mirror<S3Files>;

/// The mirror at `uri` (`s3://BUCKET/PREFIX/`), with the credentials of
/// this process's environment.
///
/// # Errors
/// A URI that names no bucket; no key and secret in the environment; a
/// client `object_store` cannot build from it.
pub fn mirror(uri: &str) -> Result<S3Source, TransferError> {
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
    Ok(Mirror::new(S3Files {
        name: uri.to_owned(),
        store: Arc::new(store),
        prefix,
    }))
}

/// A mirror's files in a bucket.
pub struct S3Files {
    name: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl S3Files {
    fn err(&self, message: impl Into<String>) -> TransferError {
        TransferError::Connection {
            peer: self.name.clone(),
            message: message.into(),
        }
    }

    /// The object `rel` beneath the prefix: at most `limit` bytes.
    async fn fetch(&self, rel: &str, limit: usize) -> Result<Bytes, TransferError> {
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
}

impl Files for S3Files {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(
        &self,
        rel: String,
        limit: usize,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<Bytes, TransferError>> {
        Box::pin(async move {
            tokio::time::timeout(deadline, self.fetch(&rel, limit))
                .await
                .map_err(|_| self.err(format!("{rel}: no answer within {deadline:?}")))?
        })
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
