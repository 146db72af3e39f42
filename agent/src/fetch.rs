//! Getting an object: from the store if it is complete there, else from
//! the ticket's sources in hint order (RFC 2782), falling back to the next
//! source when one fails or lies. Every chunk is verified by the store as
//! it is written; the object is complete only after its whole hash matched.

use anyhow::{Context, anyhow, bail};
use dot_plugins::gtc::client::{DEFAULT_WINDOW, GtcSource};
use dot_plugins::{ChunkEvent, Transfer};
use dot_store::descriptor::list_digest;
use dot_store::hint::order_hints;
use dot_store::{Hint, Oid, Store, Ticket, Token};

/// What a get did.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    /// The object.
    pub oid: Oid,
    /// Its size.
    pub size: u64,
    /// Chunk bytes taken from peers.
    pub from_peers: u64,
    /// Bytes already held (this object or chunks of others).
    pub local: u64,
}

/// What a get names: a ticket, or a bare OID.
pub struct Target {
    /// The object.
    pub oid: Oid,
    /// Its access token, from the ticket.
    pub token: Option<Token>,
    /// Digest of its descriptor list, from the ticket.
    pub list_digest: Option<[u8; 32]>,
    /// Where to fetch it.
    pub hints: Vec<Hint>,
}

impl Target {
    /// Parses a ticket or OID; `hints`, if not empty, replace the ticket's.
    ///
    /// # Errors
    /// A clear message for a malformed ticket, OID or hint.
    pub fn parse(text: &str, hints: &[String]) -> anyhow::Result<Target> {
        let mut t = if text.starts_with(dot_store::oid::OID_PREFIX) {
            Target {
                oid: text.parse()?,
                token: None,
                list_digest: None,
                hints: Vec::new(),
            }
        } else {
            let ticket: Ticket = text.parse()?;
            Target {
                oid: ticket.oid(),
                token: ticket.token(),
                list_digest: ticket.list_digest(),
                hints: ticket.hints().to_vec(),
            }
        };
        if !hints.is_empty() {
            t.hints = hints
                .iter()
                .map(|h| h.parse::<Hint>())
                .collect::<Result<_, _>>()?;
        }
        Ok(t)
    }
}

/// Makes `target` complete in `store`.
///
/// # Errors
/// When no source could deliver it; the message lists each source's failure.
pub async fn fetch(store: &Store, target: &Target) -> anyhow::Result<Fetched> {
    let oid = target.oid;
    let s = store.clone();
    if let Some(info) = tokio::task::spawn_blocking(move || s.info(oid))
        .await??
        .filter(|i| i.complete)
    {
        return Ok(Fetched {
            oid,
            size: info.size,
            from_peers: 0,
            local: info.size,
        });
    }
    let mut seed = Token::random()
        .map(|t| {
            u64::from_le_bytes([
                t.0[0], t.0[1], t.0[2], t.0[3], t.0[4], t.0[5], t.0[6], t.0[7],
            ])
        })
        .unwrap_or(1)
        | 1;
    let order = order_hints(&target.hints, || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    });
    let mut failures = Vec::new();
    for hint in order {
        let Some(authority) = hint.gtc_authority() else {
            failures.push(format!("{hint}: unsupported method"));
            continue;
        };
        let addr = match tokio::net::lookup_host(authority)
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                failures.push(format!("{hint}: cannot resolve"));
                continue;
            }
        };
        let source = GtcSource::new(addr, DEFAULT_WINDOW);
        match fetch_from(store, &source, target).await {
            Ok(f) => return Ok(f),
            Err(e) => {
                tracing::warn!(oid = %oid, source = %hint, error = %format!("{e:#}"), "source failed; trying the next");
                failures.push(format!("{hint}: {e:#}"));
            }
        }
    }
    if failures.is_empty() {
        bail!("{oid} is not here and no source is known for it (give a ticket or --hint)");
    }
    Err(anyhow!("could not get {oid}: {}", failures.join("; ")))
}

async fn fetch_from(store: &Store, source: &GtcSource, target: &Target) -> anyhow::Result<Fetched> {
    let oid = target.oid;
    let described = source.get_descriptors(oid, target.token).await?;
    if let Some(want) = target.list_digest {
        if list_digest(&described.descriptors) != want {
            bail!("descriptor list does not match the ticket");
        }
    }
    let size = described.size;
    let s = store.clone();
    let descs = described.descriptors.clone();
    let missing = tokio::task::spawn_blocking(move || {
        s.begin_fill(oid, size, &descs)?;
        s.fill_from_local(oid)?;
        s.missing(oid)
    })
    .await??;
    let wanted: Vec<_> = missing
        .iter()
        .map(|&i| (i, described.descriptors[i as usize]))
        .collect();
    let missing_bytes: u64 = wanted.iter().map(|(_, d)| u64::from(d.len)).sum();
    let count = wanted.len();
    let mut events = source.get_chunks(oid, wanted);
    let mut from_peers = 0u64;
    let mut got = 0;
    while got < count {
        match events.recv().await {
            Some(ChunkEvent::Chunk { index, data }) => {
                store
                    .write_chunk(oid, index, &data)
                    .with_context(|| format!("from {}", source.name()))?;
                from_peers += data.len() as u64;
                got += 1;
            }
            Some(ChunkEvent::Failed { index, error }) => bail!("chunk {index}: {error}"),
            Some(ChunkEvent::SourceFailed(e)) => return Err(e.into()),
            None => bail!("{} stopped answering", source.name()),
        }
    }
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.finish(oid)).await??;
    Ok(Fetched {
        oid,
        size,
        from_peers,
        local: size - missing_bytes,
    })
}
