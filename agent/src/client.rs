//! The client library (the paper's stub library): talk to the local agent
//! over its Unix socket.
//!
//! Blocking: [`Client`] puts through [`Put`] (`std::io::Write`) or by file
//! descriptor, and gets through [`Get`] (`std::io::Read`, in order),
//! [`Pieces`] (an iterator of `(offset, bytes)` in arrival order) or
//! [`RandomGet`] (reads at an offset). Async: [`AsyncClient`], on tokio.
//!
//! A put, then a get of the ticket (here from the same agent):
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use dot_agent::client::Client;
//!
//! # fn main() -> Result<(), dot_agent::client::ClientError> {
//! let mut client = Client::connect(None)?; // $GTC_SOCKET or the default
//! let mut put = client.put()?;
//! put.write_all(b"hello, world")?;
//! let ticket = put.commit()?.ticket;
//!
//! let mut bytes = Vec::new();
//! client.get(&ticket, &[])?.read_to_end(&mut bytes)?;
//! assert_eq!(bytes, b"hello, world");
//! # Ok(()) }
//! ```
//!
//! The same with the async client:
//!
//! ```no_run
//! use dot_agent::client::AsyncClient;
//!
//! # async fn demo() -> Result<(), dot_agent::client::ClientError> {
//! let mut client = AsyncClient::connect(None).await?;
//! let mut put = client.put().await?;
//! put.write(b"hello, world").await?;
//! let ticket = put.commit().await?.ticket;
//!
//! let mut get = client.get(&ticket, &[], Default::default()).await?;
//! while let Some((offset, bytes)) = get.next_piece().await? {
//!     println!("{} bytes at {offset}", bytes.len());
//! }
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::api::{
    self, ApiError, GetMode, MAX_MESSAGE, MAX_READ, Message, PutResult, Request, Response, Status,
};
use crate::config;
use crate::fdpass;

/// Largest piece [`Pieces`] and [`AsyncGet::next_piece`] hand out.
pub const PIECE: u64 = 4 << 20;
/// Data message size for stream puts.
const PUT_MESSAGE: usize = 1 << 20;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answers on the socket.
    #[error("no agent at {path} (start one with `gtc agent`): {source}")]
    NoAgent {
        /// The socket tried.
        path: String,
        /// Why the connection failed.
        source: io::Error,
    },
    /// The agent refused or failed the request.
    #[error("agent: {0}")]
    Agent(String),
    /// The agent answered something this client does not expect.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
    /// Socket or file I/O.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Framing or JSON.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<ClientError> for io::Error {
    fn from(e: ClientError) -> io::Error {
        match e {
            ClientError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// What a finished get reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetStats {
    /// Chunk bytes fetched from peers.
    pub from_peers: u64,
    /// Bytes the agent already held.
    pub local: u64,
    /// Chunk bytes taken from portable devices.
    pub from_devices: u64,
}

fn unexpected(r: &Response) -> ClientError {
    match r {
        Response::Error { message } => ClientError::Agent(message.clone()),
        other => ClientError::Protocol(format!("{other:?}")),
    }
}

fn parse_response(msg: Option<Message>) -> Result<Response> {
    match msg {
        Some(Message::Json(body)) => Ok(serde_json::from_slice(&body).map_err(ApiError::from)?),
        Some(Message::Data(_)) => Err(ClientError::Protocol("data where an answer belongs".into())),
        None => Err(ClientError::Protocol(
            "the agent closed the connection".into(),
        )),
    }
}

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
        let stream = UnixStream::connect(&path).map_err(|source| ClientError::NoAgent {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Client { stream })
    }

    fn send(&mut self, req: &Request) -> Result<()> {
        self.stream.write_all(&api::encode_json(req)?)?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Response> {
        parse_response(api::read_message_blocking(&mut self.stream)?)
    }

    fn recv_data(&mut self) -> Result<Vec<u8>> {
        match api::read_message_blocking(&mut self.stream)? {
            Some(Message::Data(d)) => Ok(d),
            other => Err(unexpected(&parse_response(other)?)),
        }
    }

    /// The agent's state.
    ///
    /// # Errors
    /// Socket errors; the agent's error.
    pub fn status(&mut self) -> Result<Status> {
        self.send(&Request::Status)?;
        match self.recv()? {
            Response::Status(s) => Ok(*s),
            other => Err(unexpected(&other)),
        }
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
        match self.recv()? {
            Response::Put(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a stream put: write the bytes, then [`Put::commit`].
    ///
    /// # Errors
    /// Socket errors.
    pub fn put(&mut self) -> Result<Put<'_>> {
        self.send(&Request::PutInit)?;
        Ok(Put {
            client: self,
            buf: Vec::with_capacity(PUT_MESSAGE),
        })
    }

    fn start_get(&mut self, ticket: &str, hints: &[String], mode: GetMode) -> Result<Object> {
        self.send(&Request::Get {
            ticket: ticket.to_owned(),
            hints: hints.to_vec(),
            mode,
        })?;
        match self.recv()? {
            Response::Object { oid, size, via_fd } => {
                let file = if via_fd {
                    Some(File::from(fdpass::recv_fd(self.stream.as_raw_fd())?))
                } else {
                    None
                };
                Ok(Object { oid, size, file })
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Gets an object by ticket (or OID), read in order as it arrives.
    /// `hints`, if not empty, replace the ticket's.
    ///
    /// # Errors
    /// Socket errors; the agent's error (e.g. no source has the object).
    pub fn get(&mut self, ticket: &str, hints: &[String]) -> Result<Get<'_>> {
        let object = self.start_get(ticket, hints, GetMode::Sequential)?;
        Ok(Get {
            client: self,
            object,
            ranges: Ranges::default(),
            pos: 0,
            stats: None,
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
        let object = self.start_get(ticket, hints, GetMode::OutOfOrder)?;
        Ok(Get {
            client: self,
            object,
            ranges: Ranges::default(),
            pos: 0,
            stats: None,
            ordered: false,
        })
    }

    /// Gets an object as pieces in the order they arrive.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn get_out_of_order(&mut self, ticket: &str, hints: &[String]) -> Result<Pieces<'_>> {
        let object = self.start_get(ticket, hints, GetMode::OutOfOrder)?;
        Ok(Pieces {
            client: self,
            object,
            ranges: Ranges::default(),
            stats: None,
        })
    }

    /// Gets an object for reads at any offset ([`RandomGet::read_at`]).
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn get_random(&mut self, ticket: &str, hints: &[String]) -> Result<RandomGet<'_>> {
        let object = self.start_get(ticket, hints, GetMode::Random)?;
        Ok(RandomGet {
            client: self,
            object,
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
        match self.recv()? {
            Response::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
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

    /// Ends the put; returns the ticket and the rest.
    ///
    /// # Errors
    /// Socket errors; the agent's error (e.g. a full disk).
    pub fn commit(mut self) -> Result<PutResult> {
        self.send_buf()?;
        self.client.send(&Request::PutCommit)?;
        match self.client.recv()? {
            Response::Put(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
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

/// The object of a get.
struct Object {
    oid: String,
    size: u64,
    /// The agent's file, when it passed one.
    file: Option<File>,
}

/// Announced ranges not yet consumed, and the bytes that came with them
/// when no descriptor was passed.
#[derive(Default)]
struct Ranges {
    /// (offset, len) announced by the agent, oldest first.
    queue: std::collections::VecDeque<(u64, u64)>,
    /// Inline bytes of the front range (data mode), consumed from `at`.
    inline: Vec<u8>,
    at: usize,
}

/// What one message of a streamed get meant.
enum Event {
    Ready,
    End(GetStats),
}

/// Reads the next message of a streamed get into `ranges`.
fn next_event(client: &mut Client, object: &Object, ranges: &mut Ranges) -> Result<Event> {
    match client.recv()? {
        Response::Ready { offset, len } => {
            check_ready(object, offset, len)?;
            if object.file.is_none() {
                let mut bytes = Vec::with_capacity(len.min(MAX_MESSAGE as u64) as usize);
                while (bytes.len() as u64) < len {
                    let d = client.recv_data()?;
                    if bytes.len() as u64 + d.len() as u64 > len {
                        return Err(ClientError::Protocol("more data than announced".into()));
                    }
                    bytes.extend_from_slice(&d);
                }
                // Data mode sends one range at a time: only the front
                // range may carry inline bytes.
                ranges.inline = bytes;
                ranges.at = 0;
            }
            ranges.queue.push_back((offset, len));
            Ok(Event::Ready)
        }
        Response::End {
            from_peers,
            local,
            from_devices,
        } => Ok(Event::End(GetStats {
            from_peers,
            local,
            from_devices,
        })),
        other => Err(unexpected(&other)),
    }
}

/// Copies up to `buf.len()` bytes of the front range into `buf`; returns
/// (offset they belong at, count).
fn take_front(object: &Object, ranges: &mut Ranges, buf: &mut [u8]) -> io::Result<(u64, usize)> {
    let Some((offset, len)) = ranges.queue.front_mut() else {
        return Ok((0, 0));
    };
    let n = (*len).min(buf.len() as u64) as usize;
    let at = *offset;
    match &object.file {
        Some(f) => f.read_exact_at(&mut buf[..n], at)?,
        None => {
            buf[..n].copy_from_slice(&ranges.inline[ranges.at..ranges.at + n]);
            ranges.at += n;
        }
    }
    *offset += n as u64;
    *len -= n as u64;
    if *len == 0 {
        ranges.queue.pop_front();
    }
    Ok((at, n))
}

/// The front range's next piece, at most [`PIECE`] bytes.
fn front_piece(object: &Object, ranges: &mut Ranges) -> io::Result<Option<(u64, Vec<u8>)>> {
    let Some(&(_, len)) = ranges.queue.front() else {
        return Ok(None);
    };
    let mut buf = vec![0u8; len.min(PIECE) as usize];
    let (at, n) = take_front(object, ranges, &mut buf)?;
    buf.truncate(n);
    Ok(Some((at, buf)))
}

/// Checks that an announced range lies inside the object.
fn check_ready(object: &Object, offset: u64, len: u64) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > object.size) {
        return Err(ClientError::Protocol(format!(
            "range {offset}+{len} beyond the object's {} bytes",
            object.size
        )));
    }
    Ok(())
}

/// A get read in order (`std::io::Read`). Reading to the end also checks
/// that the agent finished the get; [`Get::stats`] then says where the
/// bytes came from.
pub struct Get<'a> {
    client: &'a mut Client,
    object: Object,
    ranges: Ranges,
    pos: u64,
    stats: Option<GetStats>,
    ordered: bool,
}

impl Get<'_> {
    /// The object's OID.
    pub fn oid(&self) -> &str {
        &self.object.oid
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.object.size
    }

    /// Where the bytes came from, once read to the end.
    pub fn stats(&self) -> Option<GetStats> {
        self.stats
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
            while let Some(&(offset, len)) = self.ranges.queue.front() {
                match &self.object.file {
                    Some(f) => {
                        copy_range(f, out, offset, len)?;
                        self.ranges.queue.pop_front();
                        self.pos += len;
                    }
                    None => {
                        let (at, n) = take_front(&self.object, &mut self.ranges, &mut buf)?;
                        out.write_all_at(&buf[..n], at)?;
                        self.pos += n as u64;
                    }
                }
                progress(self.pos);
            }
            match next_event(self.client, &self.object, &mut self.ranges)? {
                Event::Ready => {}
                Event::End(stats) => {
                    if self.pos != self.object.size {
                        return Err(ClientError::Protocol(format!(
                            "the agent ended the get after {} of {} bytes",
                            self.pos, self.object.size
                        )));
                    }
                    self.stats = Some(stats);
                    return Ok(stats);
                }
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

impl Read for Get<'_> {
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
            if !self.ranges.queue.is_empty() {
                let (_, n) = take_front(&self.object, &mut self.ranges, buf)?;
                self.pos += n as u64;
                return Ok(n);
            }
            if self.stats.is_some() {
                return Ok(0);
            }
            match next_event(self.client, &self.object, &mut self.ranges)? {
                Event::Ready => {}
                Event::End(stats) => {
                    if self.pos != self.object.size {
                        return Err(io::Error::other(format!(
                            "the agent ended the get after {} of {} bytes",
                            self.pos, self.object.size
                        )));
                    }
                    self.stats = Some(stats);
                }
            }
        }
    }
}

/// A get as an iterator of `(offset, bytes)` pieces in arrival order, each
/// at most [`PIECE`] bytes, every one verified.
pub struct Pieces<'a> {
    client: &'a mut Client,
    object: Object,
    ranges: Ranges,
    stats: Option<GetStats>,
}

impl Pieces<'_> {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.object.size
    }

    /// Where the bytes came from, once iterated to the end.
    pub fn stats(&self) -> Option<GetStats> {
        self.stats
    }

    fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        loop {
            if let Some(piece) = front_piece(&self.object, &mut self.ranges)? {
                return Ok(Some(piece));
            }
            if self.stats.is_some() {
                return Ok(None);
            }
            if let Event::End(stats) = next_event(self.client, &self.object, &mut self.ranges)? {
                self.stats = Some(stats);
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
    object: Object,
}

impl RandomGet<'_> {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.object.size
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end.
    ///
    /// # Errors
    /// Socket errors; the agent's error (the object cannot be fetched).
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let len = (buf.len() as u64).min(MAX_READ);
        let want = len.min(self.object.size.saturating_sub(offset));
        self.client.send(&Request::Read { offset, len })?;
        let mut got = 0u64;
        loop {
            let mut ranges = Ranges::default();
            if let Event::End(_) = next_event(self.client, &self.object, &mut ranges)? {
                return Err(ClientError::Protocol("end during a read".into()));
            }
            let piece = check_piece(&ranges, offset, got, want)?;
            if piece == 0 {
                return Ok(got as usize);
            }
            let at = got as usize;
            take_front(&self.object, &mut ranges, &mut buf[at..at + piece as usize])?;
            got += piece;
            if got == want {
                return Ok(got as usize);
            }
        }
    }
}

/// The length of the range that answers part of a read of `want` bytes at
/// `offset`, of which `got` came already; it must continue where they end.
fn check_piece(ranges: &Ranges, offset: u64, got: u64, want: u64) -> Result<u64> {
    let (at, len) = ranges.queue.front().copied().unwrap_or((offset + got, 0));
    if at != offset + got || got + len > want {
        return Err(ClientError::Protocol(format!(
            "asked {want} bytes at {offset}, got {len} at {at}"
        )));
    }
    Ok(len)
}

// ----- async -----

/// The async client: the same requests as [`Client`], on tokio.
pub struct AsyncClient {
    stream: tokio::net::UnixStream,
}

impl AsyncClient {
    /// Connects as [`Client::connect`] does.
    ///
    /// # Errors
    /// [`ClientError::NoAgent`].
    pub async fn connect(socket: Option<&Path>) -> Result<AsyncClient> {
        let path = config::client_socket(socket);
        let stream = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|source| ClientError::NoAgent {
                path: path.display().to_string(),
                source,
            })?;
        Ok(AsyncClient { stream })
    }

    async fn send(&mut self, req: &Request) -> Result<()> {
        api::write_json(&mut self.stream, req).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Response> {
        parse_response(api::read_message(&mut self.stream).await?)
    }

    /// The agent's state.
    ///
    /// # Errors
    /// As [`Client::status`].
    pub async fn status(&mut self) -> Result<Status> {
        self.send(&Request::Status).await?;
        match self.recv().await? {
            Response::Status(s) => Ok(*s),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a stream put.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn put(&mut self) -> Result<AsyncPut<'_>> {
        self.send(&Request::PutInit).await?;
        Ok(AsyncPut { client: self })
    }

    /// Gets an object; read it with [`AsyncGet::next_piece`] (in order for
    /// [`GetMode::Sequential`], in arrival order for
    /// [`GetMode::OutOfOrder`]) or [`AsyncGet::read_at`] (for
    /// [`GetMode::Random`]).
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn get(
        &mut self,
        ticket: &str,
        hints: &[String],
        mode: GetMode,
    ) -> Result<AsyncGet<'_>> {
        self.send(&Request::Get {
            ticket: ticket.to_owned(),
            hints: hints.to_vec(),
            mode,
        })
        .await?;
        let (oid, size, via_fd) = match self.recv().await? {
            Response::Object { oid, size, via_fd } => (oid, size, via_fd),
            other => return Err(unexpected(&other)),
        };
        let file = if via_fd {
            let fd = loop {
                self.stream.readable().await?;
                let raw = self.stream.as_raw_fd();
                match self
                    .stream
                    .try_io(tokio::io::Interest::READABLE, || fdpass::recv_fd(raw))
                {
                    Ok(fd) => break fd,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            Some(File::from(fd))
        } else {
            None
        };
        Ok(AsyncGet {
            client: self,
            object: Object { oid, size, file },
            ranges: Ranges::default(),
            stats: None,
        })
    }

    /// Tells the agent this client is done with `oid`.
    ///
    /// # Errors
    /// As [`Client::done`].
    pub async fn done(&mut self, oid: &str) -> Result<()> {
        self.send(&Request::Done {
            oid: oid.to_owned(),
        })
        .await?;
        match self.recv().await? {
            Response::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

/// An async stream put.
pub struct AsyncPut<'a> {
    client: &'a mut AsyncClient,
}

impl AsyncPut<'_> {
    /// Sends bytes of the object.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        for piece in data.chunks(PUT_MESSAGE) {
            api::write_data(&mut self.client.stream, piece).await?;
        }
        Ok(())
    }

    /// Ends the put.
    ///
    /// # Errors
    /// As [`Put::commit`].
    pub async fn commit(self) -> Result<PutResult> {
        self.client.send(&Request::PutCommit).await?;
        match self.client.recv().await? {
            Response::Put(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }
}

/// An async get.
pub struct AsyncGet<'a> {
    client: &'a mut AsyncClient,
    object: Object,
    ranges: Ranges,
    stats: Option<GetStats>,
}

impl AsyncGet<'_> {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.object.size
    }

    /// Where the bytes came from, once read to the end.
    pub fn stats(&self) -> Option<GetStats> {
        self.stats
    }

    async fn next_event(&mut self, ranges_only: bool) -> Result<Event> {
        let resp = self.client.recv().await?;
        if let Response::Ready { offset, len } = resp {
            check_ready(&self.object, offset, len)?;
            if self.object.file.is_none() {
                let mut bytes = Vec::new();
                while (bytes.len() as u64) < len {
                    match api::read_message(&mut self.client.stream).await? {
                        Some(Message::Data(d)) if bytes.len() as u64 + d.len() as u64 <= len => {
                            bytes.extend_from_slice(&d);
                        }
                        other => return Err(unexpected(&parse_response(other)?)),
                    }
                }
                self.ranges.inline = bytes;
                self.ranges.at = 0;
            }
            self.ranges.queue.push_back((offset, len));
            return Ok(Event::Ready);
        }
        match resp {
            Response::End {
                from_peers,
                local,
                from_devices,
            } if !ranges_only => Ok(Event::End(GetStats {
                from_peers,
                local,
                from_devices,
            })),
            other => Err(unexpected(&other)),
        }
    }

    /// The next verified piece `(offset, bytes)`, at most [`PIECE`] bytes;
    /// `None` at the end.
    ///
    /// # Errors
    /// Socket errors; the agent's error.
    pub async fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        loop {
            if let Some(piece) = front_piece(&self.object, &mut self.ranges)? {
                return Ok(Some(piece));
            }
            if self.stats.is_some() {
                return Ok(None);
            }
            if let Event::End(stats) = self.next_event(false).await? {
                self.stats = Some(stats);
            }
        }
    }

    /// Reads up to `buf.len()` bytes at `offset` (random mode).
    ///
    /// # Errors
    /// As [`RandomGet::read_at`].
    pub async fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let len = (buf.len() as u64).min(MAX_READ);
        let want = len.min(self.object.size.saturating_sub(offset));
        self.client.send(&Request::Read { offset, len }).await?;
        let mut got = 0u64;
        loop {
            self.ranges = Ranges::default();
            self.next_event(true).await?;
            let piece = check_piece(&self.ranges, offset, got, want)?;
            if piece == 0 {
                return Ok(got as usize);
            }
            let at = got as usize;
            take_front(
                &self.object,
                &mut self.ranges,
                &mut buf[at..at + piece as usize],
            )?;
            got += piece;
            if got == want {
                return Ok(got as usize);
            }
        }
    }
}
