//! Frames of the gtc peer protocol: encoding and decoding, no I/O.
//!
//! Every frame is `len: u32 BE` followed by `len` bytes of body; the body is
//! a type byte and the type's payload. Decoding is two steps (check that a
//! whole frame is buffered, then parse it): a short buffer is "incomplete",
//! not an error. Every length is checked against a named limit before
//! anything is allocated for it. A chunk's bytes are a slice of the frame
//! they arrived in (no copy).
//!
//! ```text
//! 0x01 Hello     magic "DOT1" | version u16
//! 0x02 DescReq   req u32 | oid [32] | token [16] | first u32
//! 0x03 Desc      req u32 | size u64 | total u32 | first u32 | offset u64 | count u32
//!                | count x (len u32 | chunk hash [32])
//! 0x04 ChunkReq  req u32 | oid [32] | index u32
//! 0x05 Chunk     req u32 | index u32 | data (the rest of the frame)
//! 0x06 Cancel    req u32
//! 0x07 Error     req u32 | code u16 | message UTF-8 (the rest, <= 1024 bytes)
//! 0x08 DescReq   req u32 | oid [32] | via [32] | token [16] | first u32
//!      (a file of the tree `via`, the token being the tree's)
//! ```

use dot_store::descriptor::MAX_OBJECT_SIZE;
use dot_store::{Bytes, ChunkHash, Descriptor, MAX_CHUNK_LEN, Oid, Token};

/// Protocol magic sent in `Hello`.
pub const MAGIC: [u8; 4] = *b"DOT1";
/// Protocol version this build speaks.
pub const VERSION: u16 = 2;
/// Largest frame body: one maximal chunk plus its header.
pub const MAX_FRAME_LEN: usize = MAX_CHUNK_LEN as usize + 64;
/// Most descriptors in one `Desc` page.
pub const MAX_DESC_PAGE: u32 = 8192;
/// Longest error message.
pub const MAX_ERROR_MSG: usize = 1024;

const T_HELLO: u8 = 0x01;
const T_DESC_REQ: u8 = 0x02;
const T_DESC: u8 = 0x03;
const T_CHUNK_REQ: u8 = 0x04;
const T_CHUNK: u8 = 0x05;
const T_CANCEL: u8 = 0x06;
const T_ERROR: u8 = 0x07;
const T_DESC_VIA_REQ: u8 = 0x08;

/// Size of one descriptor on the wire.
const DESC_WIRE_LEN: usize = 4 + 32;

/// Why a request failed, as sent in an `Error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Wrong or missing token, or a chunk of an object not authorised on
    /// this connection.
    Unauthorized,
    /// The peer does not have the object.
    NotFound,
    /// The peer knows the object but cannot send that chunk now.
    Unavailable,
    /// The request made no sense (index out of range, ...).
    BadRequest,
    /// The peer failed internally.
    Internal,
    /// A code this build does not know.
    Other(u16),
}

impl ErrorCode {
    fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 1,
            ErrorCode::NotFound => 2,
            ErrorCode::Unavailable => 3,
            ErrorCode::BadRequest => 4,
            ErrorCode::Internal => 5,
            ErrorCode::Other(c) => c,
        }
    }

    fn from_u16(c: u16) -> ErrorCode {
        match c {
            1 => ErrorCode::Unauthorized,
            2 => ErrorCode::NotFound,
            3 => ErrorCode::Unavailable,
            4 => ErrorCode::BadRequest,
            5 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

/// One page of an object's descriptor list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescPage {
    /// Request this answers.
    pub req: u32,
    /// The object's size in bytes.
    pub size: u64,
    /// Chunks in the whole object.
    pub total: u32,
    /// Index of the first descriptor in this page.
    pub first: u32,
    /// The descriptors, in order.
    pub descs: Vec<Descriptor>,
}

/// A frame of the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame in each direction.
    Hello {
        /// Protocol version of the sender.
        version: u16,
    },
    /// Ask for a page of descriptors, proving the right to the object.
    DescReq {
        /// Request id, echoed in the answer.
        req: u32,
        /// The object.
        oid: Oid,
        /// Its access token, or the tree's for a file of the tree `via`.
        token: Token,
        /// First descriptor index wanted.
        first: u32,
        /// The tree whose token this is, when the object is one of its
        /// files (sent as frame type 0x08).
        via: Option<Oid>,
    },
    /// A page of descriptors.
    Desc(DescPage),
    /// Ask for one chunk of an authorised object.
    ChunkReq {
        /// Request id, echoed in the answer.
        req: u32,
        /// The object.
        oid: Oid,
        /// Chunk index.
        index: u32,
    },
    /// A chunk's bytes (to be verified by the receiver).
    Chunk {
        /// Request this answers.
        req: u32,
        /// Chunk index.
        index: u32,
        /// The bytes.
        data: Bytes,
    },
    /// Withdraw a request not yet answered.
    Cancel {
        /// Request to withdraw.
        req: u32,
    },
    /// A request failed.
    Error {
        /// Request that failed (0: the connection as a whole).
        req: u32,
        /// Why.
        code: ErrorCode,
        /// For logs.
        message: String,
    },
}

/// A frame that cannot be decoded. The connection is closed with this as
/// the logged reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The length prefix exceeds [`MAX_FRAME_LEN`] or is zero.
    #[error("frame length {0} out of range")]
    FrameLength(usize),
    /// Unknown frame type.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The payload does not match its type's layout.
    #[error("malformed {frame} frame: {reason}")]
    Malformed {
        /// Frame type name.
        frame: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// `Hello` with the wrong magic.
    #[error("not a DOT peer (bad magic)")]
    BadMagic,
}

fn malformed(frame: &'static str, reason: &'static str) -> ProtoError {
    ProtoError::Malformed { frame, reason }
}

/// Reads fixed-size fields off a payload.
struct Reader<'a> {
    buf: &'a [u8],
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(malformed(self.frame, "too short"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    fn end(&self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(self.frame, "trailing bytes"))
        }
    }
}

/// Step one of decoding: the length of the whole frame at the front of
/// `buf` (prefix included), or `None` if it is not all buffered yet.
///
/// # Errors
/// [`ProtoError::FrameLength`] for a length prefix out of range.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ProtoError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(ProtoError::FrameLength(len));
    }
    Ok((buf.len() >= 4 + len).then_some(4 + len))
}

/// Step two: parses one whole frame (prefix included), as [`frame_len`]
/// measured it. A chunk's bytes stay a slice of `frame`.
///
/// # Errors
/// [`ProtoError`] for a frame that can never be valid.
pub fn parse_frame(frame: Bytes) -> Result<Frame, ProtoError> {
    match frame_len(&frame)? {
        Some(n) if n == frame.len() => parse(frame.slice(4..)),
        _ => Err(ProtoError::FrameLength(frame.len())),
    }
}

/// Decodes one frame from the front of `buf` (copying a chunk's bytes out
/// of it). Returns the frame and the bytes it used, or `None` if `buf` does
/// not yet hold a whole frame. Drivers use [`frame_len`] and
/// [`parse_frame`] on their read buffer instead.
///
/// # Errors
/// [`ProtoError`] for a frame that can never be valid.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtoError> {
    let Some(n) = frame_len(buf)? else {
        return Ok(None);
    };
    Ok(Some((parse_frame(Bytes::copy_from_slice(&buf[..n]))?, n)))
}

fn parse(body: Bytes) -> Result<Frame, ProtoError> {
    let (ty, payload) = (body[0], &body[1..]);
    let name = match ty {
        T_HELLO => "Hello",
        T_DESC_REQ | T_DESC_VIA_REQ => "DescReq",
        T_DESC => "Desc",
        T_CHUNK_REQ => "ChunkReq",
        T_CHUNK => "Chunk",
        T_CANCEL => "Cancel",
        T_ERROR => "Error",
        other => return Err(ProtoError::UnknownType(other)),
    };
    let mut r = Reader {
        buf: payload,
        frame: name,
    };
    let frame = match ty {
        T_HELLO => {
            if r.array::<4>()? != MAGIC {
                return Err(ProtoError::BadMagic);
            }
            Frame::Hello { version: r.u16()? }
        }
        T_DESC_REQ => Frame::DescReq {
            req: r.u32()?,
            oid: Oid(r.array()?),
            token: Token(r.array()?),
            first: r.u32()?,
            via: None,
        },
        T_DESC_VIA_REQ => {
            let (req, oid, via) = (r.u32()?, Oid(r.array()?), Oid(r.array()?));
            Frame::DescReq {
                req,
                oid,
                token: Token(r.array()?),
                first: r.u32()?,
                via: Some(via),
            }
        }
        T_DESC => {
            let req = r.u32()?;
            let size = r.u64()?;
            let total = r.u32()?;
            let first = r.u32()?;
            let mut offset = r.u64()?;
            let count = r.u32()?;
            if size > MAX_OBJECT_SIZE {
                return Err(malformed(name, "object larger than the protocol allows"));
            }
            if count > MAX_DESC_PAGE || u64::from(first) + u64::from(count) > u64::from(total) {
                return Err(malformed(name, "descriptor count out of range"));
            }
            // Bounded by the frame length before anything is allocated.
            if r.buf.len() != count as usize * DESC_WIRE_LEN {
                return Err(malformed(name, "count does not match the payload"));
            }
            let mut descs = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let len = r.u32()?;
                if len == 0 || len > MAX_CHUNK_LEN {
                    return Err(malformed(name, "chunk length out of range"));
                }
                let hash = ChunkHash(r.array()?);
                let end = offset.checked_add(u64::from(len)).filter(|e| *e <= size);
                let Some(end) = end else {
                    return Err(malformed(name, "chunk past the object's end"));
                };
                descs.push(Descriptor { hash, offset, len });
                offset = end;
            }
            Frame::Desc(DescPage {
                req,
                size,
                total,
                first,
                descs,
            })
        }
        T_CHUNK_REQ => Frame::ChunkReq {
            req: r.u32()?,
            oid: Oid(r.array()?),
            index: r.u32()?,
        },
        T_CHUNK => {
            let req = r.u32()?;
            let index = r.u32()?;
            let data = r.rest();
            if data.is_empty() || data.len() > MAX_CHUNK_LEN as usize {
                return Err(malformed(name, "chunk length out of range"));
            }
            // The type byte, req and index come first.
            Frame::Chunk {
                req,
                index,
                data: body.slice(9..),
            }
        }
        T_CANCEL => Frame::Cancel { req: r.u32()? },
        _ => {
            let req = r.u32()?;
            let code = ErrorCode::from_u16(r.u16()?);
            let msg = r.rest();
            if msg.len() > MAX_ERROR_MSG {
                return Err(malformed(name, "message too long"));
            }
            let message = String::from_utf8_lossy(msg).into_owned();
            Frame::Error { req, code, message }
        }
    };
    r.end()?;
    Ok(frame)
}

/// Writes the header of a `Chunk` frame carrying `data_len` bytes; the
/// caller sends the bytes right after it (so a driver can write them from
/// where they lie, without copying them into the frame).
pub fn encode_chunk_header(req: u32, index: u32, data_len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&((1 + 8 + data_len) as u32).to_be_bytes());
    out.push(T_CHUNK);
    out.extend_from_slice(&req.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
}

impl Frame {
    /// Appends the encoded frame to `out`.
    ///
    /// Panics in debug builds if the frame breaks a limit; callers build
    /// frames within the limits (descriptor pages of at most
    /// [`MAX_DESC_PAGE`], chunks of at most `MAX_CHUNK_LEN`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Frame::Chunk { req, index, data } = self {
            encode_chunk_header(*req, *index, data.len(), out);
            out.extend_from_slice(data);
            return;
        }
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Hello { version } => {
                out.push(T_HELLO);
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&version.to_be_bytes());
            }
            Frame::DescReq {
                req,
                oid,
                token,
                first,
                via,
            } => {
                out.push(if via.is_some() {
                    T_DESC_VIA_REQ
                } else {
                    T_DESC_REQ
                });
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(oid.as_bytes());
                if let Some(v) = via {
                    out.extend_from_slice(v.as_bytes());
                }
                out.extend_from_slice(&token.0);
                out.extend_from_slice(&first.to_be_bytes());
            }
            Frame::Desc(p) => {
                debug_assert!(p.descs.len() <= MAX_DESC_PAGE as usize);
                out.push(T_DESC);
                out.extend_from_slice(&p.req.to_be_bytes());
                out.extend_from_slice(&p.size.to_be_bytes());
                out.extend_from_slice(&p.total.to_be_bytes());
                out.extend_from_slice(&p.first.to_be_bytes());
                out.extend_from_slice(&p.descs.first().map_or(0, |d| d.offset).to_be_bytes());
                out.extend_from_slice(&(p.descs.len() as u32).to_be_bytes());
                for d in &p.descs {
                    out.extend_from_slice(&d.len.to_be_bytes());
                    out.extend_from_slice(d.hash.as_bytes());
                }
            }
            Frame::ChunkReq { req, oid, index } => {
                out.push(T_CHUNK_REQ);
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(oid.as_bytes());
                out.extend_from_slice(&index.to_be_bytes());
            }
            Frame::Cancel { req } => {
                out.push(T_CANCEL);
                out.extend_from_slice(&req.to_be_bytes());
            }
            Frame::Error { req, code, message } => {
                out.push(T_ERROR);
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                let mut end = message.len().min(MAX_ERROR_MSG);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend_from_slice(&message.as_bytes()[..end]);
            }
            Frame::Chunk { .. } => {}
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(f: &Frame) -> Vec<u8> {
        let mut v = Vec::new();
        f.encode(&mut v);
        v
    }

    fn page(n: u32) -> DescPage {
        let descs = (0..n)
            .map(|i| Descriptor {
                hash: ChunkHash::of(&i.to_be_bytes()),
                offset: 100 + u64::from(i) * 10,
                len: 10,
            })
            .collect();
        DescPage {
            req: 7,
            size: 100 + u64::from(n) * 10 + 5,
            total: n + 3,
            first: 3,
            descs,
        }
    }

    #[test]
    fn incomplete_input_is_not_an_error() {
        let bytes = encoded(&Frame::Desc(page(5)));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let (f, used) = decode(&bytes).expect("decode").expect("whole");
        assert_eq!((f, used), (Frame::Desc(page(5)), bytes.len()));
    }

    #[test]
    fn lengths_are_bounded_before_allocation() {
        let mut huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        huge.push(T_CHUNK);
        assert_eq!(
            decode(&huge),
            Err(ProtoError::FrameLength(MAX_FRAME_LEN + 1))
        );
        assert_eq!(decode(&[0, 0, 0, 0]), Err(ProtoError::FrameLength(0)));
        // A Desc claiming more descriptors than it carries.
        let mut b = encoded(&Frame::Desc(page(2)));
        let count_at = 4 + 1 + 4 + 8 + 4 + 4 + 8;
        b[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&b), Err(ProtoError::Malformed { .. })));
    }

    #[test]
    fn hostile_frames_are_rejected() {
        let mut bad_magic = encoded(&Frame::Hello { version: 1 });
        bad_magic[5] = b'X';
        assert_eq!(decode(&bad_magic), Err(ProtoError::BadMagic));
        assert_eq!(
            decode(&[0, 0, 0, 1, 0x99]),
            Err(ProtoError::UnknownType(0x99))
        );
        // Trailing garbage after a fixed-size payload.
        let mut b = encoded(&Frame::Cancel { req: 1 });
        b.push(0);
        b[3] += 1;
        assert!(matches!(decode(&b), Err(ProtoError::Malformed { .. })));
        // A descriptor running past the object.
        let mut p = page(2);
        p.size = 105;
        assert!(matches!(
            decode(&encoded(&Frame::Desc(p))),
            Err(ProtoError::Malformed { .. })
        ));
        // An empty chunk.
        assert!(matches!(
            decode(&[0, 0, 0, 9, T_CHUNK, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(ProtoError::Malformed { .. })
        ));
    }

    fn frames() -> impl Strategy<Value = Frame> {
        prop_oneof![
            any::<u16>().prop_map(|version| Frame::Hello { version }),
            (
                any::<u32>(),
                any::<[u8; 32]>(),
                any::<[u8; 16]>(),
                any::<u32>(),
                proptest::option::of(any::<[u8; 32]>())
            )
                .prop_map(|(req, o, t, first, via)| Frame::DescReq {
                    req,
                    oid: Oid(o),
                    token: Token(t),
                    first,
                    via: via.map(Oid),
                }),
            (0u32..50).prop_map(|n| Frame::Desc(page(n))),
            (any::<u32>(), any::<[u8; 32]>(), any::<u32>()).prop_map(|(req, o, index)| {
                Frame::ChunkReq {
                    req,
                    oid: Oid(o),
                    index,
                }
            }),
            (
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 1..3000)
            )
                .prop_map(|(req, index, data)| Frame::Chunk {
                    req,
                    index,
                    data: data.into()
                }),
            any::<u32>().prop_map(|req| Frame::Cancel { req }),
            (any::<u32>(), 1u16..9, "\\PC{0,40}").prop_map(|(req, c, message)| Frame::Error {
                req,
                code: ErrorCode::from_u16(c),
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_back_to_back(fs in proptest::collection::vec(frames(), 1..6)) {
            let mut buf = Vec::new();
            for f in &fs {
                f.encode(&mut buf);
            }
            let mut at = 0;
            for f in &fs {
                let (got, used) = decode(&buf[at..]).expect("decode").expect("whole frame");
                prop_assert_eq!(&got, f);
                at += used;
            }
            prop_assert_eq!(at, buf.len());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn corrupted_frames_never_panic(f in frames(), at in any::<proptest::sample::Index>(), b in any::<u8>()) {
            let mut buf = encoded(&f);
            let i = at.index(buf.len());
            buf[i] = b;
            let _ = decode(&buf);
        }
    }
}
