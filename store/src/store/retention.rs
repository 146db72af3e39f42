//! Retention: what stays in the store and what goes.
//!
//! Pins count holders in memory (a client session, a running fetch);
//! pinned objects and objects in use are never evicted. Past the budget,
//! or when the filesystem's free bytes fall below the floor, unpinned
//! owned objects go least recently used first. Referenced objects cost no
//! store space and are never evicted by size.

use std::fs;
use std::io;
use std::sync::atomic::Ordering;

use super::{Store, lock};
use crate::error::{Error, Result};
use crate::index;
use crate::oid::Oid;

impl Store {
    /// Holds `oid` in the store until a matching [`Store::unpin`].
    pub fn pin(&self, oid: Oid) {
        *lock(&self.inner.pins).entry(oid).or_insert(0) += 1;
        let _ = self.touch(oid);
    }

    /// Releases one pin of `oid`; the object becomes evictable cache when the
    /// last pin goes.
    pub fn unpin(&self, oid: Oid) {
        let mut pins = lock(&self.inner.pins);
        if let Some(n) = pins.get_mut(&oid) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&oid);
            }
        }
    }

    fn pins(&self, oid: Oid) -> u32 {
        lock(&self.inner.pins).get(&oid).copied().unwrap_or(0)
    }

    pub(super) fn touch(&self, oid: Oid) -> Result<()> {
        self.inner.db.call(move |c| index::touch(c, &oid))
    }

    /// Bytes of object data the store itself holds: complete objects whole,
    /// partial ones by the chunks the index records (a sparse file holds
    /// no more), including chunks written whose marks are still on their
    /// way to the index; referenced files do not count.
    ///
    /// # Errors
    /// Index errors.
    pub fn stored_bytes(&self) -> Result<u64> {
        self.inner.db.owned_bytes()
    }

    /// Evicts unpinned objects, least recently used first, until the owned
    /// bytes fit the budget and the filesystem keeps its free bytes.
    /// Returns the evicted OIDs.
    ///
    /// # Errors
    /// I/O and index errors.
    pub fn evict(&self) -> Result<Vec<Oid>> {
        self.evict_for(0, None)
    }

    /// [`Store::evict`], making room for `incoming` more bytes, never
    /// evicting `keep` (the object they are for).
    pub(super) fn evict_for(&self, incoming: u64, keep: Option<Oid>) -> Result<Vec<Oid>> {
        let (budget, floor) = (self.inner.opts.budget, self.inner.opts.min_free);
        if budget == u64::MAX && floor == 0 {
            return Ok(Vec::new());
        }
        let mut used = self.stored_bytes()?;
        let short = |used: u64| {
            used.saturating_add(incoming) > budget
                || (floor > 0
                    && self
                        .free_bytes()
                        .is_some_and(|free| free < floor.saturating_add(incoming)))
        };
        let mut evicted = Vec::new();
        if !short(used) {
            return Ok(evicted);
        }
        // The count above never misses a byte (it holds the chunks whose
        // marks are on their way) but may hold marks of objects about to
        // go: exact, with every mark recorded, before anything is evicted.
        self.inner.db.flush()?;
        used = self.stored_bytes()?;
        if !short(used) {
            return Ok(evicted);
        }
        let candidates = self.inner.db.call(index::owned_by_last_use)?;
        for (oid, size) in candidates {
            if !short(used) {
                break;
            }
            if Some(oid) == keep || self.pins(oid) > 0 || self.in_use(oid) {
                continue;
            }
            tracing::info!(oid = %oid, size, "evicting");
            self.remove(oid)?;
            used = used.saturating_sub(size);
            self.inner.evicted[0].fetch_add(1, Ordering::Relaxed);
            self.inner.evicted[1].fetch_add(size, Ordering::Relaxed);
            evicted.push(oid);
        }
        Ok(evicted)
    }

    /// Objects evicted since the store opened, and their bytes.
    pub fn evictions(&self) -> (u64, u64) {
        (
            self.inner.evicted[0].load(Ordering::Relaxed),
            self.inner.evicted[1].load(Ordering::Relaxed),
        )
    }

    /// The budget and the free bytes kept (see [`super::StoreOptions`]).
    pub fn limits(&self) -> (u64, u64) {
        (self.inner.opts.budget, self.inner.opts.min_free)
    }

    /// Free bytes on the store's filesystem (for an unprivileged user), if
    /// the system says.
    pub fn free_bytes(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.inner.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Removes `oid` as [`Store::remove`] does, unless it is pinned or
    /// open; whether it was removed. An object not held is an error.
    ///
    /// # Errors
    /// [`Error::UnknownObject`]; I/O and index errors.
    pub fn remove_unheld(&self, oid: Oid) -> Result<bool> {
        if self.info(oid)?.is_none() {
            return Err(Error::UnknownObject(oid));
        }
        if self.pins(oid) > 0 || self.in_use(oid) {
            return Ok(false);
        }
        self.remove(oid)?;
        Ok(true)
    }

    /// Removes `oid`: its index rows, and its file if the store owns it.
    /// The rows are gone on disk before the file goes, so a power cut can
    /// never bring back rows that describe a file made again since (a
    /// new, sparse file of the same object).
    ///
    /// # Errors
    /// I/O and index errors.
    pub fn remove(&self, oid: Oid) -> Result<()> {
        self.forget_handle(oid);
        self.inner.db.call(move |c| index::delete_object(c, &oid))?;
        self.inner.db.sync()?;
        let path = self.object_path(&oid);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }
}
