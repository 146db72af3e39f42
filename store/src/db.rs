//! The SQLite index and the one thread that owns its connection.
//!
//! Callers hold a cloneable [`Db`] and send it closures; the thread runs
//! whatever has queued up in one transaction (each closure under its own
//! savepoint, so one failure does not undo the others) and replies to each.
//! Chunk-presence marks are the hot write: they collect in a shared list
//! and reach this thread through the flusher (`flusher.rs`), which first
//! flushes the files they name when the store is durable. Opening starts a
//! new generation of the store (`index::begin_generation`), committed
//! durably whatever the mode. The SQL itself is in `index.rs`.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::flusher::{self, Mark, Marks, Pending};
use crate::index::{self, Generations};
use crate::oid::Oid;

const SCHEMA: &str = include_str!("schema.sql");
/// Most messages run in one transaction.
const MAX_BATCH: usize = 8192;

type Job = Box<dyn FnOnce(&Connection) -> bool + Send>;

enum Msg {
    Run(Job),
    /// Marks whose bytes the flusher saw to disk.
    Marks(Vec<Mark>),
}

/// Handle to the index thread.
#[derive(Clone)]
pub(crate) struct Db {
    tx: mpsc::Sender<Msg>,
    /// To the flusher, for marks and what must follow them.
    flush_tx: mpsc::Sender<flusher::Msg<Job>>,
    marks: Marks,
    /// Bytes of the marks not yet recorded.
    pending: Pending,
    /// The index's write-ahead log, flushed by [`Db::sync`].
    wal: Arc<PathBuf>,
    durable: bool,
}

impl Db {
    /// Opens (creating if needed) the index at `path`, starts a new
    /// generation (committed durably) and starts the index thread.
    pub(crate) fn open(path: &Path, durable: bool) -> Result<(Db, Generations)> {
        let mut conn = Connection::open(path)?;
        // The write-ahead log and shared-memory files take the database
        // file's mode: all private.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io("chmod", path, e))?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Every statement of index.rs stays prepared.
        conn.set_prepared_statement_cache_capacity(128);
        migrate(&mut conn)?;
        let gens = index::begin_generation(&mut conn)?;
        if !durable {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("dot-store-index".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| Error::io("start index thread for", path, e))?;
        let (flush_tx, flush_rx) = mpsc::channel();
        let marks = Marks::default();
        let (m, to_index) = (marks.clone(), tx.clone());
        std::thread::Builder::new()
            .name("dot-store-flush".into())
            .spawn(move || {
                flusher::run(flush_rx, m, durable, |out| {
                    let msg = match out {
                        flusher::Out::Flushed(marks) => Msg::Marks(marks),
                        flusher::Out::Then(job) => Msg::Run(job),
                    };
                    to_index.send(msg).is_ok()
                })
            })
            .map_err(|e| Error::io("start flush thread for", path, e))?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let db = Db {
            tx,
            flush_tx,
            marks,
            pending: Pending::default(),
            wal: Arc::new(PathBuf::from(wal)),
            durable,
        };
        Ok((db, gens))
    }

    /// Runs `f` on the index thread inside a transaction; its writes are
    /// undone if it returns an error.
    pub(crate) fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (job, reply) = replying(f);
        self.tx.send(Msg::Run(job)).map_err(|_| Error::Closed)?;
        reply.recv().map_err(|_| Error::Closed)?
    }

    /// Runs `f` as [`Db::call`] does, but only after every presence mark
    /// made before has been recorded (its bytes flushed first, when
    /// durable); returns at once. A failure is logged as `what`.
    pub(crate) fn after_marks<F>(&self, what: &'static str, f: F) -> Result<()>
    where
        F: FnOnce(&Connection) -> Result<()> + Send + 'static,
    {
        let job: Job = Box::new(move |conn| match f(conn) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "{what} failed");
                false
            }
        });
        self.flush_tx
            .send(flusher::Msg::Then(job))
            .map_err(|_| Error::Closed)
    }

    /// Records that chunk `index` of `oid`, `len` bytes, was written (to
    /// `file`) and verified. Takes effect with the next batch; returns at
    /// once.
    pub(crate) fn mark_present(
        &self,
        oid: Oid,
        index: u32,
        len: u32,
        file: Arc<File>,
    ) -> Result<()> {
        let held = self.pending.hold(u64::from(len));
        let first = {
            let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            marks.push(Mark {
                oid,
                index,
                file,
                _held: held,
            });
            marks.len() == 1
        };
        // Only the mark that found the list empty wakes the thread: a
        // `Marks` message is queued from then until the list is taken.
        if first {
            self.flush_tx
                .send(flusher::Msg::Marks)
                .map_err(|_| Error::Closed)?;
        }
        Ok(())
    }

    /// Bytes of object data the store owns: the index's count (see
    /// [`index::owned_bytes`]) and the chunks whose marks it has yet to
    /// record, read together on the index thread so no chunk is missed.
    pub(crate) fn owned_bytes(&self) -> Result<u64> {
        let pending = self.pending.clone();
        self.call(move |c| Ok(index::owned_bytes(c)?.saturating_add(pending.bytes())))
    }

    /// Waits until every message sent and every mark made before has
    /// been committed.
    pub(crate) fn flush(&self) -> Result<()> {
        let (job, reply) = replying(|_| Ok(()));
        self.flush_tx
            .send(flusher::Msg::Then(job))
            .map_err(|_| Error::Closed)?;
        reply.recv().map_err(|_| Error::Closed)?
    }

    /// Waits until every message sent before has been committed and is on
    /// disk: a durable index commits with `synchronous=FULL`; otherwise
    /// its write-ahead log is flushed here.
    pub(crate) fn sync(&self) -> Result<()> {
        self.flush()?;
        if self.durable {
            return Ok(());
        }
        match File::open(&*self.wal).and_then(|f| f.sync_data()) {
            Ok(()) => Ok(()),
            // No log: everything is in the database file, which SQLite
            // flushed when it moved the log there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("sync", &*self.wal, e)),
        }
    }
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    // Each step starts with its number on the marker line; run what follows.
    let steps: Vec<&str> = SCHEMA
        .split("-- step ")
        .skip(1)
        .map(|s| s.split_once('\n').map_or("", |(_, body)| body))
        .collect();
    let supported = steps.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    for (i, step) in steps.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// A job that runs `f` and sends its result to the returned receiver.
fn replying<T, F>(f: F) -> (Job, mpsc::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move |conn| {
        let result = f(conn);
        let ok = result.is_ok();
        let _ = reply_tx.send(result);
        ok
    });
    (job, reply_rx)
}

fn run(conn: Connection, rx: mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if let Err(e) = run_batch(&conn, batch) {
            tracing::error!(error = %e, "index batch failed");
        }
    }
}

/// One transaction: the jobs and the marks, in order.
fn run_batch(conn: &Connection, batch: Vec<Msg>) -> rusqlite::Result<()> {
    // Statements prepared once: a batch of small jobs is mostly these.
    let run = |sql: &str| conn.prepare_cached(sql)?.execute([]).map(drop);
    run("BEGIN IMMEDIATE")?;
    for m in batch {
        match m {
            Msg::Run(job) => {
                run("SAVEPOINT job")?;
                if job(conn) {
                    run("RELEASE job")?;
                } else {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
                }
            }
            Msg::Marks(marks) => {
                let mut written = HashSet::new();
                // Each mark stops counting as pending once its row says
                // so: whatever runs after it, on this thread, reads the
                // row (in this transaction or a later one).
                for mark in marks {
                    index::mark_present(conn, &mark.oid, mark.index)?;
                    written.insert(mark.oid);
                }
                for oid in written {
                    index::mark_written(conn, &oid)?;
                }
            }
        }
    }
    run("COMMIT")
}
