//! A get's bookkeeping, without I/O, shared by the blocking and the async
//! client: the ranges the agent announced and not yet handed out (with
//! their bytes when no descriptor was passed), what each message of the
//! get means ([`GetState::on_message`], the one place a get's answers are
//! read), the next piece of a streamed get, the end of a get read whole,
//! and the steps of a read at an offset. The clients only move messages
//! between their socket and this state.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::api::{MAX_MESSAGE, MAX_READ, Message, Request, Response};

use super::answers::{Announced, parse_response, unexpected};
use super::{ClientError, GetStats, PIECE, Result};

/// What a message of a get meant, once it is whole (a `Ready` and, in data
/// mode, all its bytes).
pub(super) enum Event {
    /// A range was announced and can be handed out.
    Ready,
    /// The streamed get ended, with where the bytes came from.
    End(GetStats),
}

/// What a reader of a get does next.
pub(super) enum Step<T> {
    /// The answer.
    Done(T),
    /// An event is needed first: receive one, then ask again.
    Recv,
}

/// A piece of the object: its offset and bytes.
pub(super) type Piece = (u64, Vec<u8>);

/// A range announced in data mode whose bytes are still arriving.
struct Pending {
    offset: u64,
    len: u64,
    bytes: Vec<u8>,
}

/// A read at an offset in flight (random mode).
pub(super) struct ReadAt {
    offset: u64,
    /// Bytes the read can return: what was asked, cut at the object's end.
    want: u64,
    /// Bytes received so far.
    got: u64,
}

/// The state of one get: its object, and the ranges announced and not
/// yet handed out.
pub(super) struct GetState {
    oid: String,
    size: u64,
    /// The agent's file, when it passed one.
    file: Option<File>,
    /// (offset, len) announced by the agent, oldest first.
    queue: VecDeque<(u64, u64)>,
    /// Inline bytes of the front range (data mode), consumed from `at`.
    inline: Vec<u8>,
    at: usize,
    /// The range whose data messages are being received (data mode).
    pending: Option<Pending>,
    /// Bytes handed out from announced ranges.
    taken: u64,
    /// Where the bytes came from, once the streamed get ended.
    stats: Option<GetStats>,
}

impl GetState {
    /// The state of a get whose object the agent announced; `file` is the
    /// descriptor it passed, if it did.
    pub(super) fn new(object: Announced, file: Option<File>) -> GetState {
        GetState {
            oid: object.oid,
            size: object.size,
            file,
            queue: VecDeque::new(),
            inline: Vec::new(),
            at: 0,
            pending: None,
            taken: 0,
            stats: None,
        }
    }

    /// The object's OID.
    pub(super) fn oid(&self) -> &str {
        &self.oid
    }

    /// The object's size.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// The agent's file, when it passed one.
    pub(super) fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Where the bytes came from, once the get ended.
    pub(super) fn stats(&self) -> Option<GetStats> {
        self.stats
    }

    /// Bytes handed out so far.
    pub(super) fn taken(&self) -> u64 {
        self.taken
    }

    /// Takes the next message of the get; returns the event once the
    /// message completes one, `None` when more messages (a `Ready`'s
    /// bytes) must follow.
    ///
    /// # Errors
    /// The agent's error; an answer a get does not expect; a range beyond
    /// the object; more bytes than announced.
    pub(super) fn on_message(&mut self, msg: Option<Message>) -> Result<Option<Event>> {
        if let Some(mut pending) = self.pending.take() {
            let data = match msg {
                Some(Message::Data(d)) => d,
                other => return Err(unexpected(&parse_response(other)?)),
            };
            if pending.bytes.len() as u64 + data.len() as u64 > pending.len {
                return Err(ClientError::Protocol("more data than announced".into()));
            }
            pending.bytes.extend_from_slice(&data);
            return Ok(self.fill(pending));
        }
        match parse_response(msg)? {
            Response::Ready { offset, len } => {
                self.check_ready(offset, len)?;
                if self.file.is_some() {
                    self.queue.push_back((offset, len));
                    return Ok(Some(Event::Ready));
                }
                Ok(self.fill(Pending {
                    offset,
                    len,
                    bytes: Vec::with_capacity(len.min(MAX_MESSAGE as u64) as usize),
                }))
            }
            Response::End {
                from_peers,
                local,
                from_devices,
            } => Ok(Some(Event::End(GetStats {
                from_peers,
                local,
                from_devices,
            }))),
            other => Err(unexpected(&other)),
        }
    }

    /// Queues a data-mode range once all its bytes are in.
    fn fill(&mut self, pending: Pending) -> Option<Event> {
        if (pending.bytes.len() as u64) < pending.len {
            self.pending = Some(pending);
            return None;
        }
        // Data mode sends one range at a time: only the front range may
        // carry inline bytes.
        self.inline = pending.bytes;
        self.at = 0;
        self.queue.push_back((pending.offset, pending.len));
        Some(Event::Ready)
    }

    /// Checks that an announced range lies inside the object.
    fn check_ready(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(ClientError::Protocol(format!(
                "range {offset}+{len} beyond the object's {} bytes",
                self.size
            )));
        }
        Ok(())
    }

    /// The front range not yet handed out, `(offset, len)`.
    pub(super) fn front(&self) -> Option<(u64, u64)> {
        self.queue.front().copied()
    }

    /// Drops the front range, which the caller copied from [`Self::file`].
    pub(super) fn skip_front(&mut self) {
        if let Some((_, len)) = self.queue.pop_front() {
            self.taken += len;
        }
    }

    /// Copies up to `buf.len()` bytes of the front range into `buf`;
    /// returns (offset they belong at, count).
    ///
    /// # Errors
    /// Reading the agent's file.
    pub(super) fn take_front(&mut self, buf: &mut [u8]) -> io::Result<(u64, usize)> {
        let Some((offset, len)) = self.queue.front_mut() else {
            return Ok((0, 0));
        };
        let n = (*len).min(buf.len() as u64) as usize;
        let at = *offset;
        match &self.file {
            Some(f) => f.read_exact_at(&mut buf[..n], at)?,
            None => {
                buf[..n].copy_from_slice(&self.inline[self.at..self.at + n]);
                self.at += n;
            }
        }
        *offset += n as u64;
        *len -= n as u64;
        if *len == 0 {
            self.queue.pop_front();
        }
        self.taken += n as u64;
        Ok((at, n))
    }

    /// The next bytes in order into `buf`: their count, 0 at the end.
    ///
    /// # Errors
    /// Reading the agent's file.
    pub(super) fn read_in_order(&mut self, buf: &mut [u8]) -> io::Result<Step<usize>> {
        if !self.queue.is_empty() {
            let (_, n) = self.take_front(buf)?;
            return Ok(Step::Done(n));
        }
        if self.stats.is_some() {
            return Ok(Step::Done(0));
        }
        Ok(Step::Recv)
    }

    /// Records the end of a get read whole (in order, or into a file).
    ///
    /// # Errors
    /// What went wrong, if the agent ended it before every byte was
    /// handed out.
    pub(super) fn end_whole(&mut self, stats: GetStats) -> std::result::Result<(), String> {
        if self.taken != self.size {
            return Err(format!(
                "the agent ended the get after {} of {} bytes",
                self.taken, self.size
            ));
        }
        self.stats = Some(stats);
        Ok(())
    }

    /// The next piece of a get read piece by piece: `(offset, bytes)` of
    /// at most [`PIECE`] bytes, `None` at the end.
    ///
    /// # Errors
    /// Reading the agent's file.
    pub(super) fn next_piece(&mut self) -> io::Result<Step<Option<Piece>>> {
        if let Some((_, len)) = self.front() {
            let mut buf = vec![0u8; len.min(PIECE) as usize];
            let (at, n) = self.take_front(&mut buf)?;
            buf.truncate(n);
            return Ok(Step::Done(Some((at, buf))));
        }
        if self.stats.is_some() {
            return Ok(Step::Done(None));
        }
        Ok(Step::Recv)
    }

    /// Records an event of a get read piece by piece.
    pub(super) fn piece_event(&mut self, event: Event) {
        if let Event::End(stats) = event {
            self.stats = Some(stats);
        }
    }

    /// Starts a read of up to `buf_len` bytes at `offset`: the request to
    /// send, and the read to pass to [`Self::read_event`].
    pub(super) fn start_read(&mut self, offset: u64, buf_len: usize) -> (Request, ReadAt) {
        let len = (buf_len as u64).min(MAX_READ);
        let want = len.min(self.size.saturating_sub(offset));
        self.clear_ranges();
        (
            Request::Read { offset, len },
            ReadAt {
                offset,
                want,
                got: 0,
            },
        )
    }

    /// Takes an event of `read` into `buf`; returns the count read once
    /// the read is done (fewer than asked only at the object's end).
    ///
    /// # Errors
    /// The get's end, or a range that does not continue the read; reading
    /// the agent's file.
    pub(super) fn read_event(
        &mut self,
        read: &mut ReadAt,
        event: Event,
        buf: &mut [u8],
    ) -> Result<Option<usize>> {
        let done = self.read_piece(read, event, buf);
        // Each answer of a read stands alone.
        self.clear_ranges();
        done
    }

    fn read_piece(
        &mut self,
        read: &mut ReadAt,
        event: Event,
        buf: &mut [u8],
    ) -> Result<Option<usize>> {
        if let Event::End(_) = event {
            return Err(ClientError::Protocol("end during a read".into()));
        }
        let (at, len) = self.front().unwrap_or((read.offset + read.got, 0));
        if at != read.offset + read.got || read.got + len > read.want {
            return Err(ClientError::Protocol(format!(
                "asked {} bytes at {}, got {len} at {at}",
                read.want, read.offset
            )));
        }
        if len == 0 {
            return Ok(Some(read.got as usize));
        }
        let start = read.got as usize;
        self.take_front(&mut buf[start..start + len as usize])?;
        read.got += len;
        Ok((read.got == read.want).then_some(read.got as usize))
    }

    fn clear_ranges(&mut self) {
        self.queue.clear();
        self.inline = Vec::new();
        self.at = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(r: &Response) -> Option<Message> {
        Some(Message::Json(serde_json::to_vec(r).expect("encode")))
    }

    fn data(d: &[u8]) -> Option<Message> {
        Some(Message::Data(d.to_vec()))
    }

    fn ready(offset: u64, len: u64) -> Option<Message> {
        json(&Response::Ready { offset, len })
    }

    fn state(size: u64) -> GetState {
        GetState::new(
            Announced {
                oid: "oid".into(),
                size,
                via_fd: false,
            },
            None,
        )
    }

    fn is_ready(e: Option<Event>) -> bool {
        matches!(e, Some(Event::Ready))
    }

    #[test]
    fn a_range_is_ready_once_its_bytes_are_in() {
        let mut s = state(10);
        assert!(s.on_message(ready(0, 6)).expect("ready").is_none());
        assert!(s.on_message(data(b"abcd")).expect("data").is_none());
        assert!(is_ready(s.on_message(data(b"ef")).expect("data")));
        let mut buf = [0u8; 4];
        assert!(matches!(s.read_in_order(&mut buf), Ok(Step::Done(4))));
        assert_eq!(&buf, b"abcd");
        assert!(matches!(s.next_piece(), Ok(Step::Done(Some((4, ref b)))) if b == b"ef"));
        assert!(matches!(s.next_piece(), Ok(Step::Recv)));
        let end = Response::End {
            from_peers: 1,
            local: 2,
            from_devices: 3,
        };
        let Some(Event::End(stats)) = s.on_message(json(&end)).expect("end") else {
            panic!("not the end");
        };
        assert_eq!(
            s.end_whole(stats),
            Err("the agent ended the get after 6 of 10 bytes".into())
        );
        assert_eq!(s.stats(), None);
        s.piece_event(Event::End(stats));
        assert_eq!(s.stats().map(|s| s.from_devices), Some(3));
        assert!(matches!(s.next_piece(), Ok(Step::Done(None))));
    }

    #[test]
    fn bad_answers_are_errors() {
        let err = |s: &mut GetState, m| s.on_message(m).err().map(|e| e.to_string());
        let mut s = state(10);
        assert_eq!(
            err(&mut s, ready(8, 3)).as_deref(),
            Some("unexpected answer from the agent: range 8+3 beyond the object's 10 bytes")
        );
        s.on_message(ready(0, 2)).expect("ready");
        assert_eq!(
            err(&mut s, data(b"abc")).as_deref(),
            Some("unexpected answer from the agent: more data than announced")
        );
        s.on_message(ready(0, 2)).expect("ready");
        let no = Response::Error {
            message: "no".into(),
            kind: None,
        };
        assert_eq!(err(&mut s, json(&no)).as_deref(), Some("no"));
        assert_eq!(
            err(&mut s, None).as_deref(),
            Some("unexpected answer from the agent: the agent closed the connection")
        );
        assert_eq!(
            err(&mut s, json(&Response::Ok)).as_deref(),
            Some("unexpected answer from the agent: Ok")
        );
    }

    #[test]
    fn a_read_at_an_offset_stops_at_the_end() {
        let mut s = state(10);
        let (req, mut read) = s.start_read(4, 100);
        assert_eq!(
            req,
            Request::Read {
                offset: 4,
                len: 100
            }
        );
        let mut buf = [0u8; 100];
        s.on_message(ready(4, 2)).expect("ready");
        let e = s.on_message(data(b"ab")).expect("data").expect("event");
        assert_eq!(s.read_event(&mut read, e, &mut buf).expect("read"), None);
        s.on_message(ready(6, 4)).expect("ready");
        let e = s.on_message(data(b"cdef")).expect("data").expect("event");
        assert_eq!(s.read_event(&mut read, e, &mut buf).expect("read"), Some(6));
        assert_eq!(&buf[..6], b"abcdef");

        let (_, mut read) = s.start_read(2, 4);
        s.on_message(ready(3, 1)).expect("ready");
        let e = s.on_message(data(b"x")).expect("data").expect("event");
        let wrong = s
            .read_event(&mut read, e, &mut buf)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            wrong.as_deref(),
            Some("unexpected answer from the agent: asked 4 bytes at 2, got 1 at 3")
        );

        let (_, mut read) = s.start_read(10, 4);
        assert!(is_ready(s.on_message(ready(10, 0)).expect("ready")));
        assert_eq!(
            s.read_event(&mut read, Event::Ready, &mut buf)
                .expect("read"),
            Some(0)
        );
        let (_, mut read) = s.start_read(0, 4);
        let end = s.read_event(&mut read, Event::End(GetStats::default()), &mut buf);
        assert_eq!(
            end.err().map(|e| e.to_string()).as_deref(),
            Some("unexpected answer from the agent: end during a read")
        );
    }
}
