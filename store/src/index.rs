//! Every SQL statement of the store, as functions over a connection.
//!
//! The schema is `schema.sql`; the connection is owned by the index thread
//! (`db.rs`), which runs these inside its transactions. Nothing else in the
//! crate writes SQL.

use rusqlite::{Connection, OptionalExtension, params};

use crate::descriptor::{Descriptor, MAX_CHUNK_LEN};
use crate::error::Result;
use crate::oid::{ChunkHash, Oid};
use crate::store::FileStamp;

/// Unix seconds now, for `last_use`.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The current generation, as SQL (see [`begin_generation`]).
macro_rules! current_generation {
    () => {
        "(SELECT generation FROM generations WHERE id = 1)"
    };
}

/// What opening the index found and started: sessions are numbered
/// generations, and `clean` is the last one whose writes are known to be on
/// disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generations {
    /// The generation this open started.
    pub current: i64,
    /// The last generation whose writes are known to be on disk.
    pub clean: i64,
}

impl Generations {
    /// The previous session ended without its writes being known to be on
    /// disk (no clean close, not durable).
    pub(crate) fn unclean(self) -> bool {
        self.clean < self.current - 1
    }
}

/// Starts a new generation: one more than the last one opened. Committed
/// before the store does anything else.
pub(crate) fn begin_generation(c: &mut Connection) -> Result<Generations> {
    // Immediate: a read turned write could not wait for another
    // connection still closing (a store just dropped).
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (last, clean): (i64, i64) = tx.query_row(
        "SELECT generation, clean FROM generations WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let current = last + 1;
    tx.execute(
        "UPDATE generations SET generation = ?1 WHERE id = 1",
        [current],
    )?;
    tx.commit()?;
    Ok(Generations { current, clean })
}

/// Records that every write of generations up to `generation` is on disk.
pub(crate) fn set_clean(c: &Connection, generation: i64) -> Result<()> {
    c.prepare_cached("UPDATE generations SET clean = max(clean, ?1) WHERE id = 1")?
        .execute([generation])?;
    Ok(())
}

/// Owned objects written in a generation after `generation`.
pub(crate) fn owned_written_after(c: &Connection, generation: i64) -> Result<Vec<Oid>> {
    let mut st = c.prepare("SELECT oid FROM objects WHERE backing IS NULL AND written > ?1")?;
    let rows = st.query_map([generation], |r| oid_col(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Reads an OID column.
pub(crate) fn oid_col(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Oid> {
    let v: Vec<u8> = row.get(i)?;
    let bytes: [u8; 32] = v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            "OID is not 32 bytes".into(),
        )
    })?;
    Ok(Oid(bytes))
}

/// One object's row and its chunk rows, as an open object needs them.
pub(crate) struct ObjectRow {
    pub size: u64,
    pub complete: bool,
    /// The referenced file and its stamp; `None` for the store's own file.
    pub referenced: Option<(String, FileStamp)>,
    /// Every chunk in order, with its present flag.
    pub chunks: Vec<(Descriptor, bool)>,
}

/// What the store knows of one object, as listed.
pub(crate) struct InfoRow {
    pub oid: Oid,
    pub size: u64,
    pub chunks: u32,
    pub complete: bool,
    pub referenced: Option<String>,
    pub last_use: i64,
    pub present: u32,
}

pub(crate) fn load_object(c: &Connection, oid: &Oid) -> Result<Option<ObjectRow>> {
    let obj = c
        .query_row(
            "SELECT size, complete, backing, b_dev, b_ino, b_size, b_mtime_ns FROM objects WHERE oid = ?1",
            [oid.as_bytes()],
            |r| {
                let backing: Option<String> = r.get(2)?;
                let referenced = match backing {
                    Some(path) => Some((
                        path,
                        FileStamp {
                            dev: r.get::<_, i64>(3)? as u64,
                            ino: r.get::<_, i64>(4)? as u64,
                            size: r.get::<_, i64>(5)? as u64,
                            mtime_ns: r.get(6)?,
                        },
                    )),
                    None => None,
                };
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, bool>(1)?, referenced))
            },
        )
        .optional()?;
    let Some((size, complete, referenced)) = obj else {
        return Ok(None);
    };
    let mut st = c.prepare_cached(
        "SELECT hash, offset, len, present FROM chunks WHERE oid = ?1 ORDER BY idx",
    )?;
    let chunks = st
        .query_map([oid.as_bytes()], |r| {
            let hash: Vec<u8> = r.get(0)?;
            let hash: [u8; 32] = hash.try_into().map_err(|_| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Blob,
                    "chunk hash is not 32 bytes".into(),
                )
            })?;
            Ok((
                Descriptor {
                    hash: ChunkHash(hash),
                    offset: r.get::<_, i64>(1)? as u64,
                    len: r.get::<_, i64>(2)? as u32,
                },
                r.get::<_, bool>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(ObjectRow {
        size,
        complete,
        referenced,
        chunks,
    }))
}

/// One object with its present-chunk count, looked up by its key (never
/// `?1 IS NULL OR oid = ?1`, which SQLite answers by scanning every
/// object: each lookup grew with the store).
const INFO_ONE: &str = "SELECT o.oid, o.size, o.chunk_count, o.complete, o.backing, o.last_use,
        (SELECT count(*) FROM chunks c WHERE c.oid = o.oid AND c.present = 1)
    FROM objects o WHERE o.oid = ?1";
/// Every object, by last use.
const INFO_ALL: &str = "SELECT o.oid, o.size, o.chunk_count, o.complete, o.backing, o.last_use,
        (SELECT count(*) FROM chunks c WHERE c.oid = o.oid AND c.present = 1)
    FROM objects o ORDER BY o.last_use, o.oid";

/// Objects with their present-chunk counts; one object, or all by last use.
pub(crate) fn infos(c: &Connection, oid: Option<Oid>) -> Result<Vec<InfoRow>> {
    let row = |r: &rusqlite::Row<'_>| {
        Ok(InfoRow {
            oid: oid_col(r, 0)?,
            size: r.get::<_, i64>(1)? as u64,
            chunks: r.get::<_, i64>(2)? as u32,
            complete: r.get(3)?,
            referenced: r.get(4)?,
            last_use: r.get(5)?,
            present: r.get::<_, i64>(6)? as u32,
        })
    };
    let rows = match oid {
        Some(oid) => c
            .prepare_cached(INFO_ONE)?
            .query_map([oid.0.to_vec()], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => c
            .prepare_cached(INFO_ALL)?
            .query_map([], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(rows)
}

pub(crate) fn is_complete(c: &Connection, oid: &Oid) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT complete FROM objects WHERE oid = ?1")?
            .query_row([oid.as_bytes()], |r| r.get::<_, bool>(0))
            .optional()?
            .unwrap_or(false),
    )
}

/// Objects whose bytes the store owns, with their size and complete flag.
pub(crate) fn owned_objects(c: &Connection) -> Result<Vec<(Oid, u64, bool)>> {
    let mut st = c.prepare("SELECT oid, size, complete FROM objects WHERE backing IS NULL")?;
    let rows = st.query_map([], |r| {
        Ok((
            oid_col(r, 0)?,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, bool>(2)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Owned objects and their sizes, least recently used first.
pub(crate) fn owned_by_last_use(c: &Connection) -> Result<Vec<(Oid, u64)>> {
    let mut st =
        c.prepare("SELECT oid, size FROM objects WHERE backing IS NULL ORDER BY last_use, oid")?;
    let rows = st.query_map([], |r| Ok((oid_col(r, 0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Bytes of the objects the store owns.
pub(crate) fn owned_bytes(c: &Connection) -> Result<u64> {
    // Complete objects whole; partial (sparse) ones by the chunks they hold.
    Ok(c.prepare_cached(
        "SELECT (SELECT coalesce(sum(size), 0) FROM objects
                  WHERE backing IS NULL AND complete = 1)
              + (SELECT coalesce(sum(c.len), 0) FROM chunks c JOIN objects o ON o.oid = c.oid
                  WHERE o.backing IS NULL AND o.complete = 0 AND c.present = 1)",
    )?
    .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

/// Records a complete object (replacing any row of that OID).
pub(crate) fn insert_complete(
    c: &Connection,
    oid: &Oid,
    size: u64,
    descs: &[Descriptor],
    referenced: Option<(&str, FileStamp)>,
) -> Result<()> {
    delete_object(c, oid)?;
    let stamp = referenced.map(|(_, s)| s);
    c.prepare_cached(concat!(
            "INSERT INTO objects (oid, size, chunk_count, complete, backing, b_dev, b_ino, b_size, b_mtime_ns, last_use, written)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ",
            current_generation!(),
            ")"
        ))?.execute(params![
            oid.as_bytes(),
            size as i64,
            descs.len() as i64,
            referenced.map(|(p, _)| p),
            stamp.map(|s| s.dev as i64),
            stamp.map(|s| s.ino as i64),
            stamp.map(|s| s.size as i64),
            stamp.map(|s| s.mtime_ns),
            now_secs()
        ],
    )?;
    insert_chunks(c, oid, descs, true)?;
    if let Some(s) = stamp {
        upsert_file(c, s, oid)?;
    }
    Ok(())
}

/// Records an object to be filled chunk by chunk, every chunk absent.
pub(crate) fn insert_partial(
    c: &Connection,
    oid: &Oid,
    size: u64,
    descs: &[Descriptor],
) -> Result<()> {
    c.prepare_cached(concat!(
        "INSERT INTO objects (oid, size, chunk_count, complete, last_use, written)
             VALUES (?1, ?2, ?3, 0, ?4, ",
        current_generation!(),
        ")"
    ))?
    .execute(params![
        oid.as_bytes(),
        size as i64,
        descs.len() as i64,
        now_secs()
    ])?;
    insert_chunks(c, oid, descs, false)
}

fn insert_chunks(c: &Connection, oid: &Oid, descs: &[Descriptor], present: bool) -> Result<()> {
    let mut st = c.prepare_cached(
        "INSERT INTO chunks (oid, idx, hash, offset, len, present) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (i, d) in descs.iter().enumerate() {
        debug_assert!(d.len <= MAX_CHUNK_LEN);
        st.execute(params![
            oid.as_bytes(),
            i as i64,
            d.hash.as_bytes(),
            d.offset as i64,
            d.len,
            present
        ])?;
    }
    Ok(())
}

pub(crate) fn mark_present(c: &Connection, oid: &Oid, index: u32) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE chunks SET present = 1 WHERE oid = ?1 AND idx = ?2")?
        .execute(params![oid.as_bytes(), index])?;
    Ok(())
}

/// Records that `oid`'s bytes changed in the current generation.
pub(crate) fn mark_written(c: &Connection, oid: &Oid) -> rusqlite::Result<()> {
    c.prepare_cached(concat!(
        "UPDATE objects SET written = ",
        current_generation!(),
        " WHERE oid = ?1"
    ))?
    .execute([oid.as_bytes()])?;
    Ok(())
}

/// Marks chunks missing again and the object incomplete.
pub(crate) fn mark_damaged(c: &Connection, oid: &Oid, damaged: &[u32]) -> Result<()> {
    let mut st = c.prepare_cached("UPDATE chunks SET present = 0 WHERE oid = ?1 AND idx = ?2")?;
    for i in damaged {
        st.execute(params![oid.as_bytes(), i])?;
    }
    c.prepare_cached("UPDATE objects SET complete = 0 WHERE oid = ?1")?
        .execute([oid.as_bytes()])?;
    mark_written(c, oid)?;
    Ok(())
}

pub(crate) fn mark_complete(c: &Connection, oid: &Oid) -> Result<()> {
    c.prepare_cached(concat!(
        "UPDATE objects SET complete = 1, last_use = ?2, written = ",
        current_generation!(),
        " WHERE oid = ?1"
    ))?
    .execute(params![oid.as_bytes(), now_secs()])?;
    Ok(())
}

pub(crate) fn touch(c: &Connection, oid: &Oid) -> Result<()> {
    c.prepare_cached("UPDATE objects SET last_use = ?2 WHERE oid = ?1")?
        .execute(params![oid.as_bytes(), now_secs()])?;
    Ok(())
}

/// Where a present chunk with each of `hashes` is held, if anywhere.
pub(crate) fn find_present(
    c: &Connection,
    hashes: &[(u32, ChunkHash)],
) -> Result<Vec<(u32, Oid, u32)>> {
    let mut st =
        c.prepare_cached("SELECT oid, idx FROM chunks WHERE hash = ?1 AND present = 1 LIMIT 1")?;
    let mut out = Vec::new();
    for (index, hash) in hashes {
        if let Some((src, src_idx)) = st
            .query_row([hash.as_bytes()], |r| {
                Ok((oid_col(r, 0)?, r.get::<_, u32>(1)?))
            })
            .optional()?
        {
            out.push((*index, src, src_idx));
        }
    }
    Ok(out)
}

/// The complete object a file with this stamp holds, if it was put before:
/// its OID, size and chunk count.
pub(crate) fn cached_file(c: &Connection, stamp: FileStamp) -> Result<Option<(Oid, u64, u32)>> {
    Ok(c.prepare_cached(
        "SELECT f.oid, o.size, o.chunk_count FROM files f JOIN objects o ON o.oid = f.oid
         WHERE f.dev = ?1 AND f.ino = ?2 AND f.size = ?3 AND f.mtime_ns = ?4 AND o.complete = 1",
    )?
    .query_row(
        params![
            stamp.dev as i64,
            stamp.ino as i64,
            stamp.size as i64,
            stamp.mtime_ns
        ],
        |r| {
            Ok((
                oid_col(r, 0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u32,
            ))
        },
    )
    .optional()?)
}

/// Records that `oid`'s referenced file, still at `path`, now has `stamp`
/// (its bytes were re-checked), and remembers the stamp in the OID cache.
pub(crate) fn restamp_file(c: &Connection, oid: &Oid, path: &str, stamp: FileStamp) -> Result<()> {
    let changed = c
        .prepare_cached(
            "UPDATE objects SET b_dev = ?2, b_ino = ?3, b_size = ?4, b_mtime_ns = ?5
         WHERE oid = ?1 AND backing = ?6",
        )?
        .execute(params![
            oid.as_bytes(),
            stamp.dev as i64,
            stamp.ino as i64,
            stamp.size as i64,
            stamp.mtime_ns,
            path
        ])?;
    if changed == 1 {
        upsert_file(c, stamp, oid)?;
    }
    Ok(())
}

/// Records `stamp` as a file holding `oid` (the OID cache).
pub(crate) fn upsert_file(c: &Connection, stamp: FileStamp, oid: &Oid) -> Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO files (dev, ino, size, mtime_ns, oid) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        stamp.dev as i64,
        stamp.ino as i64,
        stamp.size as i64,
        stamp.mtime_ns,
        oid.as_bytes()
    ])?;
    Ok(())
}

/// Clears access tokens an older version stored (tokens are derived now).
pub(crate) fn forget_stored_tokens(c: &Connection) -> Result<()> {
    c.prepare_cached("UPDATE objects SET token = NULL WHERE token IS NOT NULL")?
        .execute([])?;
    Ok(())
}

/// Removes the object's rows, if any.
pub(crate) fn delete_object(c: &Connection, oid: &Oid) -> Result<()> {
    let exists = c
        .query_row(
            "SELECT 1 FROM objects WHERE oid = ?1",
            [oid.as_bytes()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Ok(());
    }
    c.prepare_cached("DELETE FROM chunks WHERE oid = ?1")?
        .execute([oid.as_bytes()])?;
    c.prepare_cached("DELETE FROM files WHERE oid = ?1")?
        .execute([oid.as_bytes()])?;
    c.prepare_cached("DELETE FROM objects WHERE oid = ?1")?
        .execute([oid.as_bytes()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;
    use crate::oid::ChunkHash;

    #[test]
    fn one_objects_info_is_found_by_its_key_not_by_a_scan() {
        let mut c = Connection::open_in_memory().expect("sqlite");
        crate::db::migrate(&mut c).expect("schema");
        let oids: Vec<Oid> = (0..200u32).map(|i| Oid::of(&i.to_be_bytes())).collect();
        for oid in &oids {
            let d = Descriptor {
                hash: ChunkHash::of(oid.as_bytes()),
                offset: 0,
                len: 10,
            };
            insert_partial(&c, oid, 10, &[d]).expect("insert");
        }
        let found = infos(&c, Some(oids[150])).expect("info");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].oid, oids[150]);
        let st = c.prepare_cached(INFO_ONE).expect("cached");
        assert_eq!(st.get_status(StatementStatus::FullscanStep), 0, "a scan");
        assert_eq!(infos(&c, None).expect("all").len(), 200);
    }
}
