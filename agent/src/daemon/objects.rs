//! What the store holds, for its user: a page of the list (`gtc ls`),
//! removing one object (`gtc rm`), never one a client holds or a fetch is
//! filling, and checking objects again (`gtc verify`).

use anyhow::bail;
use dot_store::Oid;

use super::Agent;
use crate::api::{LIST_PAGE, Listed, Response, Verified};

/// A page of the store's objects, in OID order, after `after`.
pub(super) async fn list(agent: &Agent, after: Option<String>) -> anyhow::Result<Response> {
    let after = after.map(|a| a.parse::<Oid>()).transpose()?;
    let store = agent.store.clone();
    let mut all = tokio::task::spawn_blocking(move || store.list()).await??;
    all.sort_by(|a, b| a.oid.as_bytes().cmp(b.oid.as_bytes()));
    let from = after.map_or(0, |a| {
        all.partition_point(|i| i.oid.as_bytes() <= a.as_bytes())
    });
    let page: Vec<Listed> = all[from..]
        .iter()
        .take(LIST_PAGE)
        .map(|i| Listed {
            oid: i.oid.to_string(),
            size: i.size,
            state: if i.complete { "complete" } else { "partial" }.to_owned(),
            chunks: i.chunks,
            present: i.present,
            referenced: i.referenced.as_ref().map(|p| p.display().to_string()),
            pins: i.pins,
            last_use: i.last_use,
        })
        .collect();
    let next = (from + page.len() < all.len())
        .then(|| page.last().map(|l| l.oid.clone()))
        .flatten();
    Ok(Response::List {
        objects: page,
        next,
    })
}

/// Removes `oid` unless a client holds it or it is being fetched.
pub(super) async fn remove(agent: &Agent, oid: &str) -> anyhow::Result<()> {
    let oid: Oid = oid.parse()?;
    if agent.fetches.running(oid).is_some() {
        bail!("{oid} is being fetched; remove it once the fetch ends");
    }
    let store = agent.store.clone();
    let removed = tokio::task::spawn_blocking(move || store.remove_unheld(oid)).await??;
    if !removed {
        bail!("{oid} is held by a client (an open get or put) or a reader; it stays");
    }
    agent.fetches.forget(oid);
    Ok(())
}

/// Re-reads `oids` (every object when empty) and checks them; objects
/// being fetched are left out.
pub(super) async fn verify(agent: &Agent, oids: &[String]) -> anyhow::Result<Verified> {
    let wanted = oids
        .iter()
        .map(|o| o.parse::<Oid>())
        .collect::<Result<std::collections::HashSet<Oid>, _>>()?;
    let store = agent.store.clone();
    for &oid in &wanted {
        if store.info(oid)?.is_none() {
            return Err(dot_store::Error::UnknownObject(oid).into());
        }
    }
    let fetches = agent.fetches.clone();
    let r = tokio::task::spawn_blocking(move || {
        store.verify_some(|i| {
            (wanted.is_empty() || wanted.contains(&i.oid)) && fetches.running(i.oid).is_none()
        })
    })
    .await??;
    for &oid in r
        .bad_objects
        .iter()
        .chain(r.changed_files.iter().map(|(o, _)| o))
    {
        agent.fetches.forget(oid);
    }
    Ok(Verified {
        objects: r.objects,
        chunks: r.chunks,
        bytes: r.bytes,
        damaged_chunks: r
            .damaged_chunks
            .iter()
            .map(|(o, i)| (o.to_string(), *i))
            .collect(),
        bad_objects: r.bad_objects.iter().map(ToString::to_string).collect(),
        changed_files: r
            .changed_files
            .iter()
            .map(|(o, p)| (o.to_string(), p.display().to_string()))
            .collect(),
    })
}
