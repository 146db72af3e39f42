//! Publishing to an S3-compatible bucket: a folder in the `.dot/` layout
//! (made by the agent's export) copied under `s3://BUCKET/PREFIX/`, only
//! the files the bucket lacks, the descriptor files last (so an object is
//! listed only once its chunks are there). Credentials, region and
//! endpoint come from the usual environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP` for a plain-HTTP gateway), read by `object_store`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;

/// Uploads at once.
const UPLOADS: usize = 8;

pub use dot_agent::s3::parse;

/// Every file beneath `dir`, as paths relative to it (`.dot/...`).
fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_file() {
                out.push(e.path().strip_prefix(dir)?.to_owned());
            }
        }
    }
    Ok(out)
}

/// Copies the `.dot/` files beneath `dir` (chunks and descriptor files,
/// not `tmp/`) to `bucket` under `prefix`, skipping those already there;
/// returns (files uploaded, bytes uploaded).
///
/// # Errors
/// Missing credentials or endpoint, refusals, network failures.
pub fn upload(dir: &Path, bucket: &str, prefix: &str) -> anyhow::Result<(usize, u64)> {
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .context("S3 (credentials and endpoint from AWS_* variables)")?,
    );
    let key = |rel: &Path| -> anyhow::Result<Key> {
        let rel = rel.to_str().context("a non-UTF-8 name")?;
        Ok(Key::from(if prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{prefix}/{rel}")
        }))
    };
    let mut wanted: Vec<PathBuf> = files(dir)?
        .into_iter()
        .filter(|p| p.starts_with(".dot/chunks") || p.starts_with(".dot/objects"))
        .collect();
    // Chunks first, descriptor files last.
    wanted.sort_by_key(|p| p.starts_with(".dot/objects"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let root = key(Path::new(".dot"))?;
        let there: HashSet<Key> = store
            .list(Some(&root))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .with_context(|| format!("listing s3://{bucket}/{root}"))?;
        let (mut files, mut bytes) = (0usize, 0u64);
        for last in [false, true] {
            let mut uploads = tokio::task::JoinSet::new();
            for rel in wanted
                .iter()
                .filter(|p| p.starts_with(".dot/objects") == last)
            {
                let k = key(rel)?;
                if there.contains(&k) {
                    continue;
                }
                while uploads.len() >= UPLOADS {
                    if let Some(done) = uploads.join_next().await {
                        bytes += done??;
                        files += 1;
                    }
                }
                let (store, path) = (store.clone(), dir.join(rel));
                uploads.spawn(async move {
                    let data = tokio::fs::read(&path)
                        .await
                        .with_context(|| format!("reading {}", path.display()))?;
                    let n = data.len() as u64;
                    store
                        .put(&k, data.into())
                        .await
                        .with_context(|| format!("uploading {k}"))?;
                    anyhow::Ok(n)
                });
            }
            while let Some(done) = uploads.join_next().await {
                bytes += done??;
                files += 1;
            }
        }
        if wanted.is_empty() {
            bail!("nothing to upload from {}", dir.display());
        }
        Ok((files, bytes))
    })
}
