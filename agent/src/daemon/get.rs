//! Gets: the fetch is started (or joined), the object announced, then
//! streamed as verified ranges (through the store's file passed to the
//! client, or as data) or read at the offsets the client asks for.

use std::sync::atomic::Ordering;

use anyhow::{Context, anyhow, bail};
use dot_store::{Oid, Store};
use tokio::net::UnixStream;
use tokio::sync::broadcast;

use super::Agent;
use super::clients::{Conn, OpenGet, error, error_of, send_fd};
use crate::api::{self, GetMode, MAX_READ, Response};
use crate::fetch::{FetchState, Target};

/// Opens the store's own file of `oid` to pass to the client, or `None`
/// when the object is a referenced file (its bytes are re-verified on each
/// read, so they travel as data).
fn open_backing(store: &Store, oid: Oid) -> anyhow::Result<Option<std::fs::File>> {
    let info = store.info(oid)?.context("the object left the store")?;
    if info.referenced.is_some() {
        return Ok(None);
    }
    let path = store.backing_path(oid)?;
    Ok(Some(
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
    ))
}

/// `get`: starts (or joins) the fetch, announces the object, then streams
/// it or waits for reads, by mode.
pub(super) async fn get(
    agent: &Agent,
    conn: &mut Conn,
    ticket: &str,
    hints: &[String],
    mode: GetMode,
) -> anyhow::Result<()> {
    let started = match Target::parse(ticket, hints).map(|t| agent.fetches.fill_in(t)) {
        Ok(target) => agent
            .fetches
            .start_counted(&target, mode != GetMode::Random)
            .await
            .map(|f| (target, f)),
        Err(e) => Err(e),
    };
    let (target, (fetch, peers_before)) = match started {
        Ok(x) => x,
        Err(e) => {
            api::write_json(&mut conn.stream, &error_of(&e)).await?;
            return Ok(());
        }
    };
    let oid = fetch.oid;
    conn.pin(&agent.store, oid);
    let store = agent.store.clone();
    let file = match tokio::task::spawn_blocking(move || open_backing(&store, oid)).await? {
        Ok(f) => f,
        Err(e) => {
            api::write_json(&mut conn.stream, &error(format!("{e:#}"))).await?;
            return Ok(());
        }
    };
    api::write_json(
        &mut conn.stream,
        &Response::Object {
            oid: oid.to_string(),
            size: fetch.size,
            via_fd: file.is_some(),
        },
    )
    .await?;
    if let Some(f) = &file {
        send_fd(&conn.stream, f).await?;
    }
    let open = OpenGet {
        trusted: fetch.trusts(&target),
        target,
        via_fd: file.is_some(),
        fetch,
    };
    if mode == GetMode::Random {
        conn.get = Some(open);
        return Ok(());
    }
    let streamed = stream_object(agent, &mut conn.stream, &open, mode).await?;
    let resp = match streamed {
        Ok(()) => {
            // What this get waited for; the rest was here when it came.
            let from_peers = open
                .fetch
                .from_peers
                .load(Ordering::Relaxed)
                .saturating_sub(peers_before)
                .min(open.fetch.size);
            let from_devices = open
                .fetch
                .from_devices
                .load(Ordering::Relaxed)
                .min(open.fetch.size - from_peers);
            Response::End {
                from_peers,
                local: open.fetch.size - from_peers - from_devices,
                from_devices,
            }
        }
        Err(e) => error_of(&e),
    };
    api::write_json(&mut conn.stream, &resp).await?;
    Ok(())
}

/// What woke a waiting reader.
enum Wake {
    /// Chunk `index` arrived.
    Arrived(u32),
    /// Arrivals were missed, or the fetch's state changed: look again.
    Rescan,
}

/// Waits for the fetch to move on; errors if it failed.
async fn wait_for(
    open: &OpenGet,
    arrivals: &mut broadcast::Receiver<u32>,
    state: &mut tokio::sync::watch::Receiver<FetchState>,
) -> anyhow::Result<Wake> {
    let wake = tokio::select! {
        r = arrivals.recv() => match r {
            Ok(i) => Wake::Arrived(i),
            Err(broadcast::error::RecvError::Lagged(_)) => Wake::Rescan,
            Err(broadcast::error::RecvError::Closed) => {
                bail!("the fetch of {} ended", open.fetch.oid)
            }
        },
        r = state.changed() => {
            if r.is_err() {
                bail!("the fetch of {} ended", open.fetch.oid);
            }
            Wake::Rescan
        }
    };
    if let FetchState::Failed(why) = &*state.borrow() {
        return Err(why.clone().into());
    }
    Ok(wake)
}

/// The least time between two announcements of one get.
const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Streams the object as `Ready` ranges (with their bytes, if not via the
/// descriptor). The outer error ends the connection; the inner one is the
/// get's failure.
async fn stream_object(
    agent: &Agent,
    stream: &mut UnixStream,
    open: &OpenGet,
    mode: GetMode,
) -> anyhow::Result<anyhow::Result<()>> {
    let store = &agent.store;
    let fetch = &open.fetch;
    let n = fetch.descs.len();
    let mut arrivals = fetch.arrivals();
    let mut state = fetch.watch_state();
    let mut sent = vec![false; n];
    let mut left = n;
    // Sequential: everything before `next` is sent.
    let mut next = 0usize;
    let mut rescan = true;
    let mut woke: Vec<u32> = Vec::new();
    while left > 0 {
        // The readable ranges not yet sent, neighbours coalesced.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let take = |i: usize, ranges: &mut Vec<(u64, u64)>| {
            let d = fetch.descs[i];
            match ranges.last_mut() {
                Some((off, len)) if *off + *len == d.offset => *len += u64::from(d.len),
                _ => ranges.push((d.offset, u64::from(d.len))),
            }
        };
        let mut candidates: Vec<usize> = Vec::new();
        if mode == GetMode::Sequential {
            // The scan below sees every arrival before now; what comes
            // later wakes the wait.
            while arrivals.try_recv().is_ok() {}
            while next < n {
                match open.fetch.readable(store, next as u32, open.trusted) {
                    Ok(true) => {
                        take(next, &mut ranges);
                        next += 1;
                        left -= 1;
                    }
                    Ok(_) => break,
                    Err(e) => return Ok(Err(e)),
                }
            }
        } else {
            if rescan {
                candidates.extend((0..n).filter(|&i| !sent[i]));
                rescan = false;
            }
            candidates.extend(woke.drain(..).map(|i| i as usize));
            while let Ok(i) = arrivals.try_recv() {
                candidates.push(i as usize);
            }
            for i in candidates {
                if i >= n || sent[i] {
                    continue;
                }
                match open.fetch.readable(store, i as u32, open.trusted) {
                    Ok(true) => {
                        sent[i] = true;
                        left -= 1;
                        take(i, &mut ranges);
                    }
                    Ok(false) => {}
                    Err(e) => return Ok(Err(e)),
                }
            }
        }
        let announced = !ranges.is_empty();
        for (offset, len) in ranges {
            if let Err(e) = send_range(store, stream, open, offset, len).await? {
                return Ok(Err(e));
            }
        }
        if left == 0 {
            break;
        }
        if announced {
            // Let arrivals gather: one announcement (and one wake-up of
            // the client) for many chunks on a slow link.
            tokio::time::sleep(ANNOUNCE_EVERY).await;
        }
        match wait_for(open, &mut arrivals, &mut state).await {
            Ok(Wake::Arrived(i)) => woke.push(i),
            Ok(Wake::Rescan) => rescan = true,
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(()))
}

/// Announces `offset..offset+len` as ready. When the client does not read
/// through a descriptor, the range goes as pieces of at most 1 MiB, each
/// announced and followed by its bytes, so neither side buffers more. The
/// outer error ends the connection; the inner one (the bytes could not be
/// read: a referenced file changed, say) is the get's failure.
async fn send_range(
    store: &Store,
    stream: &mut UnixStream,
    open: &OpenGet,
    offset: u64,
    len: u64,
) -> anyhow::Result<anyhow::Result<()>> {
    if open.via_fd {
        api::write_json(stream, &Response::Ready { offset, len }).await?;
        return Ok(Ok(()));
    }
    const PIECE: u64 = 1 << 20;
    let mut at = offset;
    while at < offset + len {
        let want = PIECE.min(offset + len - at) as usize;
        let s = store.clone();
        let oid = open.fetch.oid;
        let data = match tokio::task::spawn_blocking(move || s.read_at(oid, at, want)).await? {
            Ok(data) if data.is_empty() => return Ok(Err(anyhow!("{oid} ended early at {at}"))),
            Ok(data) => data,
            Err(e) => return Ok(Err(e.into())),
        };
        let len = data.len() as u64;
        api::write_json(stream, &Response::Ready { offset: at, len }).await?;
        api::write_data(stream, &data).await?;
        at += len;
    }
    Ok(Ok(()))
}

/// `read`: asks for the chunks covering the range (ahead of anything
/// queued later), waits until they may be read, then answers.
pub(super) async fn read_range(
    agent: &Agent,
    conn: &mut Conn,
    offset: u64,
    len: u64,
) -> anyhow::Result<()> {
    let Some(open) = &mut conn.get else {
        api::write_json(&mut conn.stream, &error("read without a get")).await?;
        return Ok(());
    };
    if len > MAX_READ {
        let resp = error(format!("read of {len} bytes (at most {MAX_READ})"));
        api::write_json(&mut conn.stream, &resp).await?;
        return Ok(());
    }
    let range = open.fetch.chunks_of(offset, len);
    if range.is_empty() {
        api::write_json(&mut conn.stream, &Response::Ready { offset, len: 0 }).await?;
        return Ok(());
    }
    if !open.fetch.want(range.clone().collect()) {
        // The fetch went idle: start another for the rest.
        match agent.fetches.start(&open.target, false).await {
            Ok(f) => {
                f.want(range.clone().collect());
                open.fetch = f;
            }
            Err(e) => {
                api::write_json(&mut conn.stream, &error(format!("{e:#}"))).await?;
                return Ok(());
            }
        }
    }
    for i in range {
        if let Err(e) = open
            .fetch
            .wait_readable(&agent.store, i, open.trusted)
            .await
        {
            api::write_json(&mut conn.stream, &error_of(&e)).await?;
            return Ok(());
        }
    }
    let end = offset.saturating_add(len).min(open.fetch.size);
    let open = conn.get.as_ref().context("the get went away")?;
    if let Err(e) = send_range(&agent.store, &mut conn.stream, open, offset, end - offset).await? {
        api::write_json(&mut conn.stream, &error_of(&e)).await?;
    }
    Ok(())
}
