//! Verify: re-reading what the store holds and checking it against its
//! hashes. Each present chunk is read once, checking its chunk hash and,
//! for complete objects, the whole hash in the same pass. Damaged chunks
//! (wrong bytes, past the end of a file cut short, or unreadable) are
//! marked missing (so they are fetched again); objects whose whole hash is
//! wrong, and referenced files that changed, are removed.

use std::path::PathBuf;

use sha2::Digest;

use super::handle::Handle;
use super::{ObjectInfo, Store};
use crate::error::{Error, Result};
use crate::index;
use crate::oid::{ChunkHash, Oid};

/// What [`Store::verify`] found.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    /// Objects examined.
    pub objects: u64,
    /// Present chunks re-hashed.
    pub chunks: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Chunks whose bytes no longer match (now marked missing).
    pub damaged_chunks: Vec<(Oid, u32)>,
    /// Objects whose chunks all matched but whose whole hash did not (removed).
    pub bad_objects: Vec<Oid>,
    /// Objects whose referenced file changed or vanished (removed).
    pub changed_files: Vec<(Oid, PathBuf)>,
}

impl VerifyReport {
    /// True when nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.damaged_chunks.is_empty()
            && self.bad_objects.is_empty()
            && self.changed_files.is_empty()
    }
}

/// What re-reading one object found.
enum Found {
    Clean,
    Damaged(Vec<u32>),
    WrongWhole,
    Changed(PathBuf),
}

impl Store {
    /// Re-hashes every present chunk and every complete object. Damaged
    /// chunks are marked missing (so they are fetched again), objects whose
    /// whole hash is wrong and referenced files that changed are removed.
    ///
    /// # Errors
    /// Index errors; I/O errors other than on the damaged data itself.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_where(|_| true)
    }

    /// [`Store::verify`] for the objects `pick` selects (`gtc verify`
    /// leaves out the objects being fetched).
    ///
    /// # Errors
    /// As [`Store::verify`].
    pub fn verify_some(&self, pick: impl Fn(&ObjectInfo) -> bool) -> Result<VerifyReport> {
        self.verify_where(pick)
    }

    /// [`Store::verify`] for the objects `pick` selects.
    pub(super) fn verify_where(&self, pick: impl Fn(&ObjectInfo) -> bool) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for info in self.list()?.into_iter().filter(|i| pick(i)) {
            report.objects += 1;
            let h = match self.handle(info.oid) {
                Ok(h) => h,
                Err(Error::FileChanged { oid, path, .. }) => {
                    report.changed_files.push((oid, path));
                    continue;
                }
                Err(Error::UnknownObject(_)) => continue,
                Err(e) => return Err(e),
            };
            // Chunks its opening found past the end of a short file.
            let lost = std::mem::take(&mut *super::lock(&h.lost_at_open));
            if !lost.is_empty() {
                report
                    .damaged_chunks
                    .extend(lost.iter().map(|&i| (info.oid, i)));
            }
            // As it is now: opening may have made it incomplete.
            let complete = h.lock().complete;
            match self.reread(&h, complete, &mut report)? {
                Found::Clean => {}
                Found::Changed(path) => {
                    report.changed_files.push((info.oid, path));
                    self.remove(info.oid)?;
                }
                Found::Damaged(damaged) => {
                    tracing::warn!(oid = %info.oid, chunks = damaged.len(), "damaged chunks marked missing");
                    self.mark_damaged(&h, &damaged)?;
                    report
                        .damaged_chunks
                        .extend(damaged.iter().map(|&i| (info.oid, i)));
                }
                Found::WrongWhole => {
                    tracing::warn!(oid = %info.oid, "object does not hash to its OID; removing it");
                    self.remove(info.oid)?;
                    report.bad_objects.push(info.oid);
                }
            }
        }
        Ok(report)
    }

    /// Reads every present chunk of `h` once, counting into `report`.
    fn reread(&self, h: &Handle, complete: bool, report: &mut VerifyReport) -> Result<Found> {
        let mut whole = sha2::Sha256::new();
        let mut damaged = Vec::new();
        for (i, d) in h.descs.iter().enumerate() {
            if !h.is_present(i as u32) {
                continue;
            }
            let data = match h.read_raw(d.offset, d.len as usize) {
                Ok(data) => data,
                Err(Error::FileChanged { path, .. }) => return Ok(Found::Changed(path)),
                // The store's own file cut short, or unreadable there: the
                // chunk is not held.
                Err(e) if h.is_owned() => {
                    tracing::warn!(oid = %h.oid, index = i, error = %e, "cannot read a chunk back");
                    damaged.push(i as u32);
                    continue;
                }
                Err(e) => return Err(e),
            };
            report.chunks += 1;
            report.bytes += data.len() as u64;
            if ChunkHash::of(&data) != d.hash {
                damaged.push(i as u32);
            }
            whole.update(&data);
        }
        Ok(if !damaged.is_empty() {
            if h.is_owned() {
                Found::Damaged(damaged)
            } else {
                Found::Changed(h.path().to_owned())
            }
        } else if complete && Oid(whole.finalize().into()) != h.oid {
            Found::WrongWhole
        } else {
            Found::Clean
        })
    }

    /// Marks chunks missing and the object incomplete; the next use reopens
    /// it for writing, so the chunks can be fetched again. On disk before
    /// it returns, as reopening may grow a short file with zeros.
    fn mark_damaged(&self, h: &Handle, damaged: &[u32]) -> Result<()> {
        let oid = h.oid;
        let damaged = damaged.to_vec();
        self.inner
            .db
            .call(move |c| index::mark_damaged(c, &oid, &damaged))?;
        self.inner.db.sync()?;
        self.forget_handle(oid);
        Ok(())
    }
}
