//! Where a fetch gets its chunks: the ticket's hints in RFC 2782 order,
//! asked for the descriptors one priority group at a time, and the source
//! built from the group that answered (one gtc peer, or a [`Multipath`]
//! over every hint of the group and every local address to bind). Gtc
//! sources come from a [`Pool`], so fetches from an agent already
//! connected reuse its connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use dot_plugins::Transfer;
use dot_plugins::gtc::client::{DEFAULT_WINDOW, GtcSource};
use dot_plugins::multipath::Multipath;
use dot_store::descriptor::list_digest;
use dot_store::hint::order_hints;
use dot_store::{Descriptor, Hint, PeerKey, Token};
use tokio::sync::mpsc;

use super::Target;
use super::failures::{Failure, Failures};
use crate::api::ErrorKind;

/// A source that answered with the object's descriptors.
pub(super) struct Source {
    /// The hint or device it reads.
    pub label: String,
    pub plugin: Arc<dyn Transfer>,
    /// The same plugin when it spreads over several paths.
    pub multipath: Option<Arc<Multipath>>,
    /// A portable device rather than a peer.
    pub device: bool,
}

impl Source {
    fn single(hint: &Hint, plugin: Arc<dyn Transfer>) -> Source {
        Source {
            label: hint.to_string(),
            plugin,
            multipath: None,
            device: false,
        }
    }

    pub fn name(&self) -> String {
        match &self.multipath {
            Some(m) => m.name(),
            None => self.label.clone(),
        }
    }
}

/// What describing the object found: the source that answered, where its
/// hint is in the order, the size, the descriptors, and every failure seen.
pub(super) struct Described {
    pub at: usize,
    pub source: Source,
    pub size: u64,
    pub descs: Vec<Descriptor>,
    pub failures: Failures,
}

/// Gtc sources kept at most this long unused (their connections close
/// when the last fetch using them ends), well inside a server's idle
/// deadline.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Gtc sources kept at most.
const POOL_MAX: usize = 64;

/// Where a gtc source connects, from where, and the key it must prove.
type PoolKey = (SocketAddr, Option<IpAddr>, Option<PeerKey>);

/// The gtc sources of recent fetches, one per address, local address and
/// key: a fetch from an agent already connected to reuses that connection
/// (a mail gateway fetches many small objects from one agent) instead of
/// a TLS handshake per object.
#[derive(Clone, Default)]
pub(super) struct Pool {
    sources: Arc<Mutex<HashMap<PoolKey, (GtcSource, Instant)>>>,
}

impl Pool {
    /// The source for `addr` (from `bind`, proving `key`), new or kept.
    pub fn source(
        &self,
        addr: SocketAddr,
        bind: Option<IpAddr>,
        key: Option<PeerKey>,
    ) -> GtcSource {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        sources.retain(|_, (_, used)| now.duration_since(*used) < POOL_IDLE);
        if let Some((source, used)) = sources.get_mut(&(addr, bind, key)) {
            *used = now;
            return source.clone();
        }
        if sources.len() >= POOL_MAX
            && let Some(oldest) = sources
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            sources.remove(&oldest);
        }
        let source = GtcSource::bound(addr, bind, DEFAULT_WINDOW).secured(key);
        sources.insert((addr, bind, key), (source.clone(), now));
        source
    }
}

/// The hints in the order to try them.
pub(super) fn ordered(hints: &[Hint]) -> Vec<Hint> {
    let mut seed = Token::random()
        .map(|t| {
            u64::from_le_bytes([
                t.0[0], t.0[1], t.0[2], t.0[3], t.0[4], t.0[5], t.0[6], t.0[7],
            ])
        })
        .unwrap_or(1)
        | 1;
    order_hints(hints, || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    })
    .into_iter()
    .cloned()
    .collect()
}

/// The positions of the hints that share `order[at]`'s priority (`order`
/// is sorted by priority): the one place a priority group is found.
fn priority_group(order: &[Hint], at: usize) -> Range<usize> {
    let prio = order[at].priority;
    let start = order[..at]
        .iter()
        .rposition(|h| h.priority != prio)
        .map_or(0, |p| p + 1);
    let end = at
        + order[at..]
            .iter()
            .take_while(|h| h.priority == prio)
            .count();
    start..end
}

/// Asks the sources for the object's descriptors, one priority group after
/// the other; within a group all at once (a slow path must not hold up the
/// start). Returns the first that answers with the list the ticket vouches
/// for (if it gives a digest). With a list already `known` (and vouched
/// for), the sources only confirm they hold the object and open it to the
/// ticket's token ([`Transfer::confirm`]): the list is not sent again.
pub(super) async fn describe(
    pool: &Pool,
    target: &Target,
    order: &[Hint],
    known: Option<Arc<dot_plugins::transfer::Described>>,
) -> anyhow::Result<Described> {
    let oid = target.oid;
    let mut failures = Failures::default();
    let mut start = 0;
    while start < order.len() {
        let group = priority_group(order, start);
        start = group.end;
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Dropped (and so aborted) when this returns: the slower hints'
        // describes end with the fetch that started them.
        let mut asking = tokio::task::JoinSet::new();
        for at in group {
            let (tx, hint, token) = (tx.clone(), order[at].clone(), target.access);
            let (pool, known) = (pool.clone(), known.clone());
            asking.spawn(async move {
                let mut why = Failures::default();
                let answer = match (plugin_for(&pool, &hint, &mut why).await, known) {
                    (Some(plugin), None) => Some(
                        plugin
                            .get_descriptors(oid, token)
                            .await
                            .map(|d| (plugin, d)),
                    ),
                    (Some(plugin), Some(known)) => {
                        let count = known.descriptors.len() as u32;
                        Some(
                            plugin
                                .confirm(oid, token, known.size, count)
                                .await
                                .map(|()| (plugin, (*known).clone())),
                        )
                    }
                    (None, _) => None,
                };
                let _ = tx.send((at, answer, why));
            });
        }
        drop(tx);
        while let Some((at, answer, mut why)) = rx.recv().await {
            failures.append(&mut why);
            let hint = &order[at];
            match answer {
                Some(Ok((plugin, d))) => {
                    if target
                        .list_digest
                        .is_some_and(|want| list_digest(&d.descriptors) != want)
                    {
                        failures.push_said(
                            &hint.to_string(),
                            "descriptor list does not match the ticket",
                            ErrorKind::Integrity,
                        );
                        continue;
                    }
                    return Ok(Described {
                        at,
                        source: Source::single(hint, plugin),
                        size: d.size,
                        descs: d.descriptors,
                        failures,
                    });
                }
                Some(Err(e)) => failures.push(&hint.to_string(), &e.into()),
                None => {}
            }
        }
    }
    if failures.is_empty() {
        return Err(Failure {
            why: format!(
                "{oid} is not here and no source is known for it (give a ticket or --hint)"
            ),
            kind: Some(ErrorKind::NotFound),
        }
        .into());
    }
    Err(failures.into_error(oid).into())
}

/// The source to fetch from, given the one that described the object
/// (`order[at]`), and the hints left as fallbacks. The hints of its
/// priority (agents, each from every local address in `binds`, and
/// mirrors) are paths of one [`Multipath`] source; a single path stays a
/// plain source.
pub(super) async fn paths(
    pool: &Pool,
    target: &Target,
    first: Source,
    order: &[Hint],
    at: usize,
    chunks: u32,
    binds: &[IpAddr],
) -> (Source, Vec<Hint>) {
    let (oid, token) = (target.oid, target.access);
    let group = priority_group(order, at);
    let rest = order[group.end..].to_vec();
    // The hint that answered first, then the others of its priority.
    let mut hints: Vec<&Hint> = vec![&order[at]];
    hints.extend(group.filter(|&i| i != at).map(|i| &order[i]));
    if hints.len() < 2 && binds.len() < 2 {
        if let [bind] = binds
            && let Some(addr) = resolve(&order[at], &mut Failures::default()).await
        {
            let plugin = pool.source(addr, Some(*bind), order[at].peer_key());
            plugin.grant(oid, token, chunks);
            return (
                Source {
                    plugin: Arc::new(plugin),
                    ..first
                },
                rest,
            );
        }
        return (first, rest);
    }
    let binds: Vec<Option<IpAddr>> = if binds.is_empty() {
        vec![None]
    } else {
        binds.iter().copied().map(Some).collect()
    };
    let mut plugins: Vec<Arc<dyn Transfer>> = Vec::new();
    for (i, hint) in hints.into_iter().enumerate() {
        // A mirror is one path, whatever the local addresses.
        if matches!(hint.scheme(), "http" | "https" | "s3") {
            if i == 0 {
                plugins.push(first.plugin.clone());
            } else if let Ok(mirror) = mirror(hint.uri()) {
                plugins.push(mirror);
            }
            continue;
        }
        let Some(addr) = resolve(hint, &mut Failures::default()).await else {
            continue;
        };
        for bind in &binds {
            // The source that answered already is the first path.
            if plugins.is_empty() && bind.is_none() {
                plugins.push(first.plugin.clone());
            } else {
                let path = pool.source(addr, *bind, hint.peer_key());
                path.grant(oid, token, chunks);
                plugins.push(Arc::new(path));
            }
        }
    }
    if plugins.len() < 2 {
        return (first, rest);
    }
    let multipath = Arc::new(Multipath::new(plugins));
    let source = Source {
        label: first.label,
        plugin: multipath.clone(),
        multipath: Some(multipath),
        device: false,
    };
    (source, rest)
}

/// Connects to a further source and checks it describes the object as the
/// fetch does.
pub(super) async fn connect(
    pool: &Pool,
    hint: &Hint,
    target: &Target,
    size: u64,
    descs: &[Descriptor],
) -> anyhow::Result<Source> {
    let mut failures = Failures::default();
    let Some(plugin) = plugin_for(pool, hint, &mut failures).await else {
        return Err(failures.into_error(target.oid).into());
    };
    let d = plugin.get_descriptors(target.oid, target.access).await?;
    if d.size != size || d.descriptors.as_slice() != descs {
        bail!("describes the object differently");
    }
    Ok(Source::single(hint, plugin))
}

/// The source a hint names: another agent (`gtc://`), kept in the pool,
/// or a mirror (`http://`, `https://`, `s3://`).
async fn plugin_for(
    pool: &Pool,
    hint: &Hint,
    failures: &mut Failures,
) -> Option<Arc<dyn Transfer>> {
    if matches!(hint.scheme(), "http" | "https" | "s3") {
        return match mirror(hint.uri()) {
            Ok(s) => Some(s),
            Err(e) => {
                failures.push(&hint.to_string(), &e.into());
                None
            }
        };
    }
    let addr = resolve(hint, failures).await?;
    Some(Arc::new(pool.source(addr, None, hint.peer_key())))
}

/// The source an `http://`, `https://` or `s3://` hint names.
fn mirror(uri: &str) -> Result<Arc<dyn Transfer>, dot_plugins::TransferError> {
    if uri.starts_with("s3://") {
        return Ok(Arc::new(crate::s3::mirror(uri)?));
    }
    dot_plugins::http::source(uri)
}

/// The address of a gtc hint.
async fn resolve(hint: &Hint, failures: &mut Failures) -> Option<SocketAddr> {
    let Some(authority) = hint.gtc_authority() else {
        failures.push_said(
            &hint.to_string(),
            "unsupported method",
            ErrorKind::Unreachable,
        );
        return None;
    };
    match tokio::net::lookup_host(authority)
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => Some(addr),
        Ok(None) | Err(_) => {
            failures.push_said(&hint.to_string(), "cannot resolve", ErrorKind::Unreachable);
            None
        }
    }
}
