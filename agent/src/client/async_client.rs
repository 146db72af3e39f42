//! The async client: [`AsyncClient`] on a tokio Unix socket, its stream
//! put [`AsyncPut`] and its get [`AsyncGet`] (pieces, or reads at an
//! offset). The rules of a get are in `get_state`, shared with the
//! blocking client; here only the loops that feed it messages.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::api::{self, GetMode, Message, PutResult, Request, Response, Status};
use crate::config;
use crate::fdpass;

use super::answers::{self, parse_response};
use super::get_state::{Event, GetState, Step};
use super::{GetStats, PUT_MESSAGE, Result};

/// The async client: the same requests as [`Client`](super::Client), on tokio.
pub struct AsyncClient {
    stream: tokio::net::UnixStream,
}

impl AsyncClient {
    /// Connects as [`Client::connect`](super::Client::connect) does.
    ///
    /// # Errors
    /// [`ClientError::NoAgent`](super::ClientError::NoAgent).
    pub async fn connect(socket: Option<&Path>) -> Result<AsyncClient> {
        let path = config::client_socket(socket);
        let stream = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|e| answers::no_agent(&path, e))?;
        answers::check_agent(&path, std::os::fd::AsRawFd::as_raw_fd(&stream))?;
        Ok(AsyncClient { stream })
    }

    async fn send(&mut self, req: &Request) -> Result<()> {
        api::write_json(&mut self.stream, req).await?;
        Ok(())
    }

    async fn read_message(&mut self) -> Result<Option<Message>> {
        Ok(api::read_message(&mut self.stream).await?)
    }

    async fn recv(&mut self) -> Result<Response> {
        parse_response(self.read_message().await?)
    }

    /// Reads messages of a get until they make an event.
    async fn next_event(&mut self, get: &mut GetState) -> Result<Event> {
        loop {
            if let Some(event) = get.on_message(self.read_message().await?)? {
                return Ok(event);
            }
        }
    }

    /// Receives the descriptor the agent passes after announcing a get.
    async fn recv_fd(&mut self) -> Result<File> {
        loop {
            self.stream.readable().await?;
            let raw = self.stream.as_raw_fd();
            match self
                .stream
                .try_io(tokio::io::Interest::READABLE, || fdpass::recv_fd(raw))
            {
                Ok(fd) => return Ok(File::from(fd)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The agent's state.
    ///
    /// # Errors
    /// As [`Client::status`](super::Client::status).
    pub async fn status(&mut self) -> Result<Status> {
        self.send(&Request::Status).await?;
        answers::status(self.recv().await?)
    }

    /// Starts a stream put.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn put(&mut self) -> Result<AsyncPut<'_>> {
        self.put_with(None).await
    }

    /// Starts a stream put cut into chunks as `chunker` says
    /// (`cdc:MIN:AVG:MAX` or `fixed:SIZE`; the agent's setting for `None`).
    /// A bad spec fails the commit.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn put_with(&mut self, chunker: Option<&str>) -> Result<AsyncPut<'_>> {
        self.send(&Request::PutInit {
            segments: false,
            chunker: chunker.map(str::to_owned),
            tree: false,
        })
        .await?;
        Ok(AsyncPut { client: self })
    }

    /// Gets an object; read it with [`AsyncGet::next_piece`] (in order for
    /// [`GetMode::Sequential`], in arrival order for
    /// [`GetMode::OutOfOrder`]) or [`AsyncGet::read_at`] (for
    /// [`GetMode::Random`]).
    ///
    /// # Errors
    /// As [`Client::get`](super::Client::get).
    pub async fn get(
        &mut self,
        ticket: &str,
        hints: &[String],
        mode: GetMode,
    ) -> Result<AsyncGet<'_>> {
        self.send(&answers::get_request(ticket, hints, mode))
            .await?;
        let object = answers::object(self.recv().await?)?;
        let file = if object.via_fd {
            Some(self.recv_fd().await?)
        } else {
            None
        };
        Ok(AsyncGet {
            client: self,
            state: GetState::new(object, file),
        })
    }

    /// Tells the agent this client is done with `oid`.
    ///
    /// # Errors
    /// As [`Client::done`](super::Client::done).
    pub async fn done(&mut self, oid: &str) -> Result<()> {
        self.send(&Request::Done {
            oid: oid.to_owned(),
        })
        .await?;
        answers::ok(self.recv().await?)
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
    /// As [`Put::commit`](super::Put::commit).
    pub async fn commit(self) -> Result<PutResult> {
        self.client.send(&Request::PutCommit).await?;
        answers::put(self.client.recv().await?)
    }
}

/// An async get.
pub struct AsyncGet<'a> {
    client: &'a mut AsyncClient,
    state: GetState,
}

impl AsyncGet<'_> {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.state.size()
    }

    /// Where the bytes came from, once read to the end.
    pub fn stats(&self) -> Option<GetStats> {
        self.state.stats()
    }

    /// The next verified piece `(offset, bytes)`, at most
    /// [`PIECE`](super::PIECE) bytes; `None` at the end.
    ///
    /// # Errors
    /// Socket errors; the agent's error.
    pub async fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        loop {
            match self.state.next_piece()? {
                Step::Done(piece) => return Ok(piece),
                Step::Recv => {
                    let event = self.client.next_event(&mut self.state).await?;
                    self.state.piece_event(event);
                }
            }
        }
    }

    /// Reads up to `buf.len()` bytes at `offset` (random mode).
    ///
    /// # Errors
    /// As [`RandomGet::read_at`](super::RandomGet::read_at).
    pub async fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let (request, mut read) = self.state.start_read(offset, buf.len());
        self.client.send(&request).await?;
        loop {
            let event = self.client.next_event(&mut self.state).await?;
            if let Some(n) = self.state.read_event(&mut read, event, buf)? {
                return Ok(n);
            }
        }
    }
}
