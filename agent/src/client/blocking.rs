//! The blocking client: [`Client`] on a `std` Unix socket, its stream put
//! [`Put`] (`std::io::Write`), and its gets: [`Get`] (`std::io::Read` in
//! order, or written into a file at offsets), [`Pieces`] (arrival order)
//! and [`RandomGet`] (reads at an offset). The rules of a get are in
//! `get_state`; here only the loops that feed it messages.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::api::{self, GetMode, Message, PutResult, Request, Response, Status};
use crate::config;
use crate::fdpass;

use super::answers::{self, parse_response, unexpected};
use super::get_state::{Event, GetState, Step};
use super::{ClientError, GetStats, PUT_MESSAGE, Result};

/// A connection to the local agent. Objects put or got on it are held by
/// the agent until [`Client::done`] or until the connection closes.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects to the agent at `socket`, else `$GTC_SOCKET`, else the
    /// default path.
    ///
    /// # Errors
    /// [`ClientError::NoAgent`].
    pub fn connect(socket: Option<&Path>) -> Result<Client> {
        let path = config::client_socket(socket);
        let stream = UnixStream::connect(&path).map_err(|e| answers::no_agent(&path, e))?;
        answers::check_agent(&path, std::os::fd::AsRawFd::as_raw_fd(&stream))?;
        Ok(Client { stream })
    }

    fn send(&mut self, req: &Request) -> Result<()> {
        self.stream.write_all(&api::encode_json(req)?)?;
        Ok(())
    }

    fn read_message(&mut self) -> Result<Option<Message>> {
        Ok(api::read_message_blocking(&mut self.stream)?)
    }

    fn recv(&mut self) -> Result<Response> {
        parse_response(self.read_message()?)
    }

    /// Reads messages of a get until they make an event.
    fn next_event(&mut self, get: &mut GetState) -> Result<Event> {
        loop {
            if let Some(event) = get.on_message(self.read_message()?)? {
                return Ok(event);
            }
        }
    }

    /// The agent's state.
    ///
    /// # Errors
    /// Socket errors; the agent's error.
    pub fn status(&mut self) -> Result<Status> {
        self.send(&Request::Status)?;
        answers::status(self.recv()?)
    }

    /// Every object the store holds, in OID order.
    ///
    /// # Errors
    /// Socket errors; the agent's error.
    pub fn list(&mut self) -> Result<Vec<crate::api::Listed>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            self.send(&Request::List { after })?;
            let (page, next) = answers::list(self.recv()?)?;
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// Re-reads `oids` (all objects when empty) and checks them (see
    /// [`Request::Verify`]).
    ///
    /// # Errors
    /// Socket errors; the agent's error.
    pub fn verify(&mut self, oids: &[String]) -> Result<crate::api::Verified> {
        self.send(&Request::Verify {
            oids: oids.to_vec(),
        })?;
        answers::verified(self.recv()?)
    }

    /// Drops `oid` from the store (see [`Request::Remove`]).
    ///
    /// # Errors
    /// Socket errors; the agent's error (held by a client, being fetched,
    /// not held at all).
    pub fn remove(&mut self, oid: &str) -> Result<()> {
        self.send(&Request::Remove {
            oid: oid.to_owned(),
        })?;
        answers::ok(self.recv()?)
    }

    /// Puts `file` (opened from `path`) by reference: the agent receives
    /// the open descriptor and does not copy the bytes.
    ///
    /// # Errors
    /// Socket errors; the agent's error.
    pub fn put_file(&mut self, file: &File, path: &Path) -> Result<PutResult> {
        let path = std::fs::canonicalize(path)?;
        self.send(&Request::PutFile {
            path: path.to_string_lossy().into_owned(),
        })?;
        fdpass::send_fd(self.stream.as_raw_fd(), file.as_raw_fd())?;
        answers::put(self.recv()?)
    }

    /// Starts a stream put: write the bytes, then [`Put::commit`].
    ///
    /// # Errors
    /// Socket errors.
    pub fn put(&mut self) -> Result<Put<'_>> {
        self.start_put(None, false, false)
    }

    /// A stream put cut into chunks as `chunker` says
    /// (`dot_store::ChunkerSpec`), not as the agent's config does.
    ///
    /// # Errors
    /// Socket errors.
    pub fn put_chunked(&mut self, chunker: &str) -> Result<Put<'_>> {
        self.start_put(Some(chunker.to_owned()), false, false)
    }

    /// A stream put of segments (a tree's pack: its files), each cut into
    /// chunks by `chunker` as if alone; [`Put::end_segments`] says where
    /// they end, before their bytes are written.
    ///
    /// # Errors
    /// Socket errors.
    pub fn put_segments(&mut self, chunker: &str) -> Result<Put<'_>> {
        self.start_put(Some(chunker.to_owned()), false, true)
    }

    /// Puts a tree's manifest (see `dot_store::tree`), whose files this
    /// agent holds already; the answer carries the tree's ticket.
    ///
    /// # Errors
    /// Socket errors; the agent's error (a bad manifest, a file it lists
    /// that the agent does not hold).
    pub fn put_tree(&mut self, manifest: &[u8]) -> Result<PutResult> {
        let chunker = dot_store::tree::MANIFEST_CHUNKER.to_owned();
        let mut put = self.start_put(Some(chunker), true, false)?;
        put.write_all(manifest)?;
        put.commit()
    }

    fn start_put(
        &mut self,
        chunker: Option<String>,
        tree: bool,
        segments: bool,
    ) -> Result<Put<'_>> {
        self.send(&Request::PutInit {
            chunker,
            tree,
            segments,
        })?;
        Ok(Put {
            client: self,
            buf: Vec::with_capacity(PUT_MESSAGE),
        })
    }

    fn start_get(&mut self, ticket: &str, hints: &[String], mode: GetMode) -> Result<GetState> {
        self.send(&answers::get_request(ticket, hints, mode))?;
        let object = answers::object(self.recv()?)?;
        let file = if object.via_fd {
            Some(File::from(fdpass::recv_fd(self.stream.as_raw_fd())?))
        } else {
            None
        };
        Ok(GetState::new(object, file))
    }

    /// Gets an object by ticket (or OID), read in order as it arrives.
    /// `hints`, if not empty, replace the ticket's.
    ///
    /// # Errors
    /// Socket errors; the agent's error (e.g. no source has the object).
    pub fn get(&mut self, ticket: &str, hints: &[String]) -> Result<Get<'_>> {
        let state = self.start_get(ticket, hints, GetMode::Sequential)?;
        Ok(Get {
            client: self,
            state,
            ordered: true,
        })
    }

    /// Gets an object for [`Get::copy_to_file`], which writes each range at
    /// its offset as soon as it is verified, in arrival order. (Its `Read`
    /// is an error: use [`Client::get`] to read in order.)
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn get_unordered(&mut self, ticket: &str, hints: &[String]) -> Result<Get<'_>> {
        let state = self.start_get(ticket, hints, GetMode::OutOfOrder)?;
        Ok(Get {
            client: self,
            state,
            ordered: false,
        })
    }

    /// Gets an object as pieces in the order they arrive.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn get_out_of_order(&mut self, ticket: &str, hints: &[String]) -> Result<Pieces<'_>> {
        let state = self.start_get(ticket, hints, GetMode::OutOfOrder)?;
        Ok(Pieces {
            client: self,
            state,
        })
    }

    /// Gets an object for reads at any offset ([`RandomGet::read_at`]).
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn get_random(&mut self, ticket: &str, hints: &[String]) -> Result<RandomGet<'_>> {
        let state = self.start_get(ticket, hints, GetMode::Random)?;
        Ok(RandomGet {
            client: self,
            state,
        })
    }

    /// Tells the agent this client is done with `oid`.
    ///
    /// # Errors
    /// Socket errors; the agent's error (the connection did not hold it).
    pub fn done(&mut self, oid: &str) -> Result<()> {
        self.send(&Request::Done {
            oid: oid.to_owned(),
        })?;
        answers::ok(self.recv()?)
    }

    /// Has the agent copy the object `ticket` names (a ticket or an OID;
    /// fetched first if it is not there) to the DOT store of the device
    /// mounted at `path`; `progress` is told bytes done and total as it
    /// goes.
    ///
    /// # Errors
    /// Socket errors; the agent's error (unknown object, device full or
    /// read-only).
    pub fn export(
        &mut self,
        ticket: &str,
        path: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<()> {
        self.send(&Request::Export {
            ticket: ticket.to_owned(),
            path: path.to_string_lossy().into_owned(),
        })?;
        loop {
            match self.recv()? {
                Response::Progress { done, total } => progress(done, total),
                Response::Ok => return Ok(()),
                other => return Err(unexpected(&other)),
            }
        }
    }
}

/// A stream put in progress. Dropping it without [`Put::commit`] leaves
/// the connection unusable; the agent abandons the put when it closes.
pub struct Put<'a> {
    client: &'a mut Client,
    buf: Vec<u8>,
}

impl Put<'_> {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let head = api::data_head(self.buf.len()).map_err(io::Error::other)?;
        self.client.stream.write_all(&head)?;
        self.client.stream.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// In a put of segments ([`Client::put_segments`]): the next segments
    /// end at these offsets of the object (ascending), sent before the
    /// bytes they fall in.
    ///
    /// # Errors
    /// Socket errors.
    pub fn end_segments(&mut self, ends: &[u64]) -> Result<()> {
        for ends in ends.chunks(api::MAX_CUTS) {
            self.client.send(&Request::PutCuts {
                ends: ends.to_vec(),
            })?;
        }
        Ok(())
    }

    /// Ends the put; returns the ticket and the rest.
    ///
    /// # Errors
    /// Socket errors; the agent's error (e.g. a full disk).
    pub fn commit(mut self) -> Result<PutResult> {
        self.send_buf()?;
        self.client.send(&Request::PutCommit)?;
        answers::put(self.client.recv()?)
    }
}

impl Write for Put<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = PUT_MESSAGE - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PUT_MESSAGE {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// A get read in order (`std::io::Read`). Reading to the end also checks
/// that the agent finished the get; [`Get::stats`] then says where the
/// bytes came from.
pub struct Get<'a> {
    client: &'a mut Client,
    state: GetState,
    ordered: bool,
}

impl Get<'_> {
    /// The object's OID.
    pub fn oid(&self) -> &str {
        self.state.oid()
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.state.size()
    }

    /// Where the bytes came from, once read to the end.
    pub fn stats(&self) -> Option<GetStats> {
        self.state.stats()
    }

    /// Writes the whole object into `out` at its offsets, with the
    /// kernel's copy (`copy_file_range`) when the agent passed its file;
    /// calls `progress` with the bytes done so far.
    ///
    /// # Errors
    /// Socket and file errors; the agent's error.
    pub fn copy_to_file(&mut self, out: &File, mut progress: impl FnMut(u64)) -> Result<GetStats> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            while let Some((offset, len)) = self.state.front() {
                match self.state.file() {
                    Some(f) => {
                        copy_range(f, out, offset, len)?;
                        self.state.skip_front();
                    }
                    None => {
                        let (at, n) = self.state.take_front(&mut buf)?;
                        out.write_all_at(&buf[..n], at)?;
                    }
                }
                progress(self.state.taken());
            }
            if let Event::End(stats) = self.client.next_event(&mut self.state)? {
                self.state.end_whole(stats).map_err(ClientError::Protocol)?;
                return Ok(stats);
            }
        }
    }
}

/// Copies `len` bytes at `offset` from `from` to the same offset of `to`,
/// in the kernel where it can.
fn copy_range(from: &File, to: &File, offset: u64, len: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = (offset + done) as libc::loff_t;
        let mut off_out = off_in;
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the call; the offsets are
        // valid pointers to locals.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n > 0 {
            done += n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the agent's file ended early",
            ));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF) => {
                let mut buf = vec![0u8; (len - done).min(1 << 20) as usize];
                while done < len {
                    let n = (len - done).min(buf.len() as u64) as usize;
                    from.read_exact_at(&mut buf[..n], offset + done)?;
                    to.write_all_at(&buf[..n], offset + done)?;
                    done += n as u64;
                }
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

impl io::Read for Get<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.ordered {
            return Err(io::Error::other(
                "an unordered get is read with copy_to_file",
            ));
        }
        loop {
            match self.state.read_in_order(buf)? {
                Step::Done(n) => return Ok(n),
                Step::Recv => {
                    if let Event::End(stats) = self.client.next_event(&mut self.state)? {
                        self.state.end_whole(stats).map_err(io::Error::other)?;
                    }
                }
            }
        }
    }
}

/// A get as an iterator of `(offset, bytes)` pieces in arrival order, each
/// at most [`PIECE`](super::PIECE) bytes, every one verified.
pub struct Pieces<'a> {
    client: &'a mut Client,
    state: GetState,
}

impl Pieces<'_> {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.state.size()
    }

    /// Where the bytes came from, once iterated to the end.
    pub fn stats(&self) -> Option<GetStats> {
        self.state.stats()
    }

    /// The next verified piece; `None` at the end.
    fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        loop {
            match self.state.next_piece()? {
                Step::Done(piece) => return Ok(piece),
                Step::Recv => {
                    let event = self.client.next_event(&mut self.state)?;
                    self.state.piece_event(event);
                }
            }
        }
    }
}

impl Iterator for Pieces<'_> {
    type Item = Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_piece().transpose()
    }
}

/// A get read by offset: each read waits only for the chunks it covers.
pub struct RandomGet<'a> {
    client: &'a mut Client,
    state: GetState,
}

impl RandomGet<'_> {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.state.size()
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end.
    ///
    /// # Errors
    /// Socket errors; the agent's error (the object cannot be fetched).
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let (request, mut read) = self.state.start_read(offset, buf.len());
        self.client.send(&request)?;
        loop {
            let event = self.client.next_event(&mut self.state)?;
            if let Some(n) = self.state.read_event(&mut read, event, buf)? {
                return Ok(n);
            }
        }
    }
}
