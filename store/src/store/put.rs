//! Puts: new objects from a stream (copied into the store) or from a file
//! (hashed, not copied: the store keeps a reference to it).
//!
//! A stream put runs the one-pass pipeline (`ingest.rs`) into a temporary
//! file, then renames it into place and only then records it. A file put
//! remembers the file's stamp (device, inode, size, mtime), which is also
//! the OID cache: the same unchanged file is never hashed twice.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::handle::FileStamp;
use super::{PutOutcome, Store, fsync_dir};
use crate::chunker::{ChunkerSpec, Cuts};
use crate::descriptor::Descriptor;
use crate::error::{Error, Result};
use crate::index;
use crate::ingest::{IngestError, Ingested, ingest};
use crate::oid::Oid;

impl Store {
    /// Puts the bytes of `input`, copying them into the store.
    ///
    /// # Errors
    /// [`Error::Input`] if reading fails; I/O and index errors of the store.
    pub fn put_reader(&self, input: &mut (dyn Read + Send)) -> Result<PutOutcome> {
        self.put_reader_with(input, None)
    }

    /// [`Store::put_reader`], cutting chunks as `chunker` says instead of
    /// as the store's options do.
    ///
    /// # Errors
    /// As [`Store::put_reader`]; [`Error::Input`] for a bad chunker.
    pub fn put_reader_with(
        &self,
        input: &mut (dyn Read + Send),
        chunker: Option<ChunkerSpec>,
    ) -> Result<PutOutcome> {
        self.put_reader_cut(input, chunker, None)
    }

    /// [`Store::put_reader_with`], also cutting chunks at every end
    /// `cuts` gives (see [`crate::chunker::segmented`]).
    fn put_reader_cut(
        &self,
        input: &mut (dyn Read + Send),
        chunker: Option<ChunkerSpec>,
        cuts: Option<Cuts>,
    ) -> Result<PutOutcome> {
        let chunker = match chunker {
            Some(spec) => spec
                .build()
                .map_err(|e| Error::Input(io::Error::other(e)))?,
            None => self.chunker()?,
        };
        let chunker = match cuts {
            Some(cuts) => crate::chunker::segmented(chunker, cuts),
            None => chunker,
        };
        let tmp_path = self.inner.tmp_dir.join(format!(
            "put-{}",
            crate::ticket::Token::random().map_err(Error::Input)?
        ));
        let mut tmp = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| Error::io("create", &tmp_path, e))?;
        let result = ingest(chunker.as_ref(), &mut |buf| input.read(buf), Some(&mut tmp));
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(match e {
                    IngestError::Input(e) => Error::Input(e),
                    IngestError::Sink(e) => Error::io("write", &tmp_path, e),
                });
            }
        };
        let outcome = hashed_outcome(&out);
        if self.is_complete(out.oid)? {
            let _ = fs::remove_file(&tmp_path);
            self.touch(out.oid)?;
            return Ok(outcome);
        }
        if self.inner.opts.durable {
            tmp.sync_all()
                .map_err(|e| Error::io("sync", &tmp_path, e))?;
        }
        drop(tmp);
        self.forget_handle(out.oid);
        let path = self.object_path(&out.oid);
        let fan = path.parent().unwrap_or(&self.inner.objects_dir).to_owned();
        fs::create_dir_all(&fan).map_err(|e| Error::io("create", &fan, e))?;
        fs::rename(&tmp_path, &path).map_err(|e| Error::io("rename into", &path, e))?;
        if self.inner.opts.durable {
            fsync_dir(&fan)?;
        }
        self.insert_complete(out.oid, out.size, out.descriptors, None)?;
        self.evict()?;
        Ok(outcome)
    }

    /// A writer whose bytes become an object when [`PutWriter::finish`] is
    /// called; hashing runs on other threads while the caller writes.
    pub fn put_writer(&self) -> PutWriter {
        self.put_writer_with(None)
    }

    /// [`Store::put_writer`] with a chunker of its own
    /// ([`Store::put_reader_with`]).
    pub fn put_writer_with(&self, chunker: Option<ChunkerSpec>) -> PutWriter {
        self.put_writer_cut(chunker, None)
    }

    /// [`Store::put_writer_with`], also cutting chunks at every end pushed
    /// to `cuts` (each pushed before the bytes it falls in): a stream of
    /// segments, each chunked as if alone (a tree's pack).
    pub fn put_writer_cut(&self, chunker: Option<ChunkerSpec>, cuts: Option<Cuts>) -> PutWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Option<Vec<u8>>>(8);
        let store = self.clone();
        let worker = std::thread::spawn(move || {
            let mut reader = ChannelReader {
                rx,
                cur: Vec::new(),
                at: 0,
                ended: false,
            };
            store.put_reader_cut(&mut reader, chunker, cuts)
        });
        PutWriter {
            tx: Some(tx),
            pending: Vec::with_capacity(WRITER_BATCH),
            worker: Some(worker),
        }
    }

    /// Puts the open file `file`, found at `path`, by reference: its bytes
    /// are hashed but not copied. If the same file (device, inode, size,
    /// mtime) was put before, its OID comes from the cache and nothing is
    /// hashed.
    ///
    /// # Errors
    /// [`Error::ChangedDuringPut`] if the file changes while it is hashed;
    /// read errors as [`Error::Input`]; store I/O and index errors.
    pub fn put_file(&self, file: &File, path: &Path) -> Result<PutOutcome> {
        let path = if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir().map_err(Error::Input)?.join(path)
        };
        let before = FileStamp::of(&file.metadata().map_err(|e| Error::io("stat", &path, e))?);
        let cached = self.inner.db.call(move |c| index::cached_file(c, before))?;
        if let Some((oid, size, chunks)) = cached {
            self.touch(oid)?;
            return Ok(PutOutcome {
                oid,
                size,
                chunks,
                hashed: false,
            });
        }
        let chunker = self.chunker()?;
        advise_sequential(file);
        let mut offset = 0u64;
        let mut fill = |buf: &mut [u8]| {
            let n = file.read_at(buf, offset)?;
            offset += n as u64;
            Ok(n)
        };
        let out = ingest(chunker.as_ref(), &mut fill, None).map_err(|e| match e {
            IngestError::Input(e) | IngestError::Sink(e) => Error::Input(e),
        })?;
        let after = FileStamp::of(&file.metadata().map_err(|e| Error::io("stat", &path, e))?);
        if after != before || out.size != before.size {
            return Err(Error::ChangedDuringPut { path });
        }
        let outcome = hashed_outcome(&out);
        if self.exists_servable(out.oid, &path, before)? {
            let oid = out.oid;
            self.inner
                .db
                .call(move |c| index::upsert_file(c, before, &oid))?;
        } else {
            self.forget_handle(out.oid);
            self.insert_complete(out.oid, out.size, out.descriptors, Some((path, before)))?;
        }
        self.touch(out.oid)?;
        Ok(outcome)
    }

    /// Opens `path` and puts it by reference ([`Store::put_file`]).
    ///
    /// # Errors
    /// As [`Store::put_file`], plus failure to open the file.
    pub fn put_path(&self, path: &Path) -> Result<PutOutcome> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        self.put_file(&file, path)
    }

    /// A chunker as the options say.
    fn chunker(&self) -> Result<Box<dyn crate::chunker::Chunker>> {
        self.inner
            .opts
            .chunker
            .build()
            .map_err(|e| Error::Input(io::Error::other(e)))
    }

    /// Records a complete object (replacing any partial one of that OID).
    fn insert_complete(
        &self,
        oid: Oid,
        size: u64,
        descs: Vec<Descriptor>,
        referenced: Option<(PathBuf, FileStamp)>,
    ) -> Result<()> {
        self.known_again(oid);
        self.inner.db.call(move |c| {
            let referenced = referenced.as_ref().map(|(p, s)| (p.to_string_lossy(), *s));
            let referenced = referenced.as_ref().map(|(p, s)| (p.as_ref(), *s));
            index::insert_complete(c, &oid, size, &descs, referenced)
        })
    }
}

fn advise_sequential(file: &File) {
    // SAFETY: posix_fadvise only advises the kernel about a valid descriptor.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// The outcome of a put that hashed its input.
fn hashed_outcome(out: &Ingested) -> PutOutcome {
    PutOutcome {
        oid: out.oid,
        size: out.size,
        chunks: out.descriptors.len() as u32,
        hashed: true,
    }
}

/// Bytes handed to a [`Store::put_writer`] worker; `None` ends the object.
/// A channel closed without `None` means the put was abandoned.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Option<Vec<u8>>>,
    cur: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Some(v)) => {
                    self.cur = v;
                    self.at = 0;
                }
                Ok(None) => self.ended = true,
                Err(_) => return Err(io::Error::other("put abandoned before it was finished")),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Bytes collected before they are handed to the hashing worker.
const WRITER_BATCH: usize = 1 << 20;

/// Writes an object into the store as a stream ([`Store::put_writer`]).
/// Dropping it without [`PutWriter::finish`] abandons the put: nothing is
/// stored.
pub struct PutWriter {
    tx: Option<std::sync::mpsc::SyncSender<Option<Vec<u8>>>>,
    pending: Vec<u8>,
    worker: Option<std::thread::JoinHandle<Result<PutOutcome>>>,
}

impl PutWriter {
    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("put already finished"))?;
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(WRITER_BATCH));
        tx.send(Some(batch))
            .map_err(|_| io::Error::other("the put failed; finish() returns its error"))
    }

    /// Ends the object and waits for it to be stored.
    ///
    /// # Errors
    /// Whatever the put failed with.
    pub fn finish(mut self) -> Result<PutOutcome> {
        let sent = self.send_pending();
        if let Some(tx) = self.tx.take() {
            if sent.is_ok() {
                let _ = tx.send(None);
            }
        }
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            _ => Err(Error::Closed),
        }
    }
}

impl Write for PutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.len() + buf.len() > WRITER_BATCH {
            self.send_pending()?;
        }
        if buf.len() >= WRITER_BATCH {
            let tx = self
                .tx
                .as_ref()
                .ok_or_else(|| io::Error::other("put already finished"))?;
            tx.send(Some(buf.to_vec()))
                .map_err(|_| io::Error::other("the put failed; finish() returns its error"))?;
        } else {
            self.pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PutWriter {
    fn drop(&mut self) {
        // Closing the channel without the end marker makes the worker fail
        // and discard its temporary file.
        drop(self.tx.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
