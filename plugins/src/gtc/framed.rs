//! Frames over a byte stream: the one read loop (and the one chunk-writing
//! path) the server, the client and the test doubles share.
//!
//! [`FrameReader`] reads into one growing buffer without zeroing it, takes
//! each whole frame off its front, and hands a chunk's bytes on as a slice
//! of that buffer: one copy, the kernel's, from the socket to the chunk.
//! [`FrameWriter`] gathers small frames and chunk bytes (which may be views
//! of a mapped file) and writes them with vectored writes, copying nothing
//! in user space.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::RawFd;

use bytes::{Buf, BytesMut};
use dot_store::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proto::{self, Frame, ProtoError};

/// Bytes asked of the socket per read, at least.
const READ_AHEAD: usize = 256 << 10;
/// Pending bytes past which a [`FrameWriter`] writes without being asked.
const WRITE_AHEAD: usize = 1 << 20;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// The highest receive low-water mark a reader sets (a little over an
/// average chunk frame).
pub const MAX_LOW_WATER: usize = 128 << 10;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed.
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a frame.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Reads frames off `R`.
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    /// The TCP socket under `rd` and the receive low-water mark set on it.
    low_water: Option<(RawFd, usize)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames from `rd`.
    pub fn new(rd: R) -> FrameReader<R> {
        FrameReader {
            rd,
            buf: BytesMut::with_capacity(READ_AHEAD),
            low_water: None,
        }
    }

    /// Frames from `rd`, the TCP socket `fd`: while a frame is partly
    /// here, the socket's receive low-water mark (`SO_RCVLOWAT`) is set to
    /// what is missing of it (at most [`MAX_LOW_WATER`]), so a chunk
    /// trickling in over a slow link wakes the reader once, not once per
    /// packet.
    pub fn with_low_water(rd: R, fd: RawFd) -> FrameReader<R> {
        FrameReader {
            low_water: Some((fd, 1)),
            ..FrameReader::new(rd)
        }
    }

    /// Sets the low-water mark to `want` bytes (1 when no frame is known).
    fn set_low_water(&mut self, want: usize) {
        let Some((fd, current)) = &mut self.low_water else {
            return;
        };
        let want = want.clamp(1, MAX_LOW_WATER);
        if want == *current {
            return;
        }
        let value = want as libc::c_int;
        // SAFETY: setsockopt reads one c_int from a valid pointer; a bad
        // descriptor only makes it fail, and a failure leaves the mark as
        // it was.
        let rc = unsafe {
            libc::setsockopt(
                *fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            *current = want;
        }
    }

    /// The next frame; `None` when the stream ends between frames.
    ///
    /// # Errors
    /// [`ReadError`]: I/O, a malformed frame, or an end inside a frame.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(n) = proto::frame_len(&self.buf)? {
                let frame = self.buf.split_to(n).freeze();
                return Ok(Some(proto::parse_frame(frame)?));
            }
            // Room for the rest of the frame at the front (its length is
            // checked), and more.
            let whole = match self.buf.get(..4) {
                Some(h) => 4 + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize,
                None => 0,
            };
            let missing = whole.saturating_sub(self.buf.len());
            self.buf.reserve(missing.max(READ_AHEAD));
            self.set_low_water(missing);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }
}

/// Writes frames to `W`, gathering them into vectored writes.
pub struct FrameWriter<W> {
    wr: W,
    /// Encoded small frames and chunk headers not yet in `parts`.
    head: Vec<u8>,
    /// What to write, in order.
    parts: VecDeque<Bytes>,
    pending: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Frames to `wr`.
    pub fn new(wr: W) -> FrameWriter<W> {
        FrameWriter {
            wr,
            head: Vec::with_capacity(4096),
            parts: VecDeque::new(),
            pending: 0,
        }
    }

    /// Queues `frame`; writes once enough is queued.
    ///
    /// # Errors
    /// The stream failed.
    pub async fn frame(&mut self, frame: &Frame) -> std::io::Result<()> {
        let before = self.head.len();
        frame.encode(&mut self.head);
        self.pending += self.head.len() - before;
        self.write_if_full().await
    }

    /// Queues a `Chunk` frame whose bytes go out from where they lie (a
    /// view of a mapped file: no copy); writes once enough is queued.
    ///
    /// # Errors
    /// The stream failed.
    pub async fn chunk(&mut self, req: u32, index: u32, data: Bytes) -> std::io::Result<()> {
        let before = self.head.len();
        proto::encode_chunk_header(req, index, data.len(), &mut self.head);
        self.pending += self.head.len() - before + data.len();
        self.seal_head();
        self.parts.push_back(data);
        self.write_if_full().await
    }

    fn seal_head(&mut self) {
        if !self.head.is_empty() {
            let head = std::mem::replace(&mut self.head, Vec::with_capacity(4096));
            self.parts.push_back(head.into());
        }
    }

    async fn write_if_full(&mut self) -> std::io::Result<()> {
        if self.pending >= WRITE_AHEAD || self.parts.len() >= MAX_IOVECS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// The stream failed.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.seal_head();
        while !self.parts.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .parts
                .iter()
                .take(MAX_IOVECS)
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = self.wr.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.pending = self.pending.saturating_sub(n);
            while n > 0 {
                let Some(front) = self.parts.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.parts.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        self.wr.flush().await
    }

    /// Writes everything queued and shuts the stream's write side.
    ///
    /// # Errors
    /// The stream failed.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.wr.shutdown().await
    }
}
