//! SMTP on the wire: lines read with a bound on their length, a server's
//! (multi-line) replies, and a message's data, dot-stuffed and ended by a
//! lone dot, read with a bound on its size and written back out. Every
//! read here has its deadline set by the caller.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Longest command line taken (RFC 5321 allows 512; a ticket is at most
/// 255 and parameters add a little).
pub const MAX_COMMAND_LINE: usize = 1024;
/// Longest reply line taken from a server.
pub const MAX_REPLY_LINE: usize = 1024;
/// Most lines of one reply (an EHLO lists a few dozen at most).
pub const MAX_REPLY_LINES: usize = 64;

/// One line read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line without its ending (CRLF or a bare LF).
    Text(Vec<u8>),
    /// Longer than the bound: its bytes up to the ending were read and
    /// dropped.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

/// Reads a line of at most `max` bytes (ending excluded).
///
/// # Errors
/// Socket errors.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            // A last line without its ending is as good as none.
            return Ok(Line::Eof);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if line.len() + take > max + 2 {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&buf[..take]);
            }
        }
        r.consume(take);
        if done {
            if too_long {
                return Ok(Line::TooLong);
            }
            line.pop(); // the LF
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > max {
                return Ok(Line::TooLong);
            }
            return Ok(Line::Text(line));
        }
    }
}

/// A message's data as read after `DATA` (or `X-DOT-DATA ... HEADERS`).
#[derive(Debug, PartialEq, Eq)]
pub enum Data {
    /// The message, dots unstuffed, every line ended by CRLF.
    Message(Vec<u8>),
    /// More than the limit: read to the end and dropped.
    TooBig,
}

/// Reads data lines up to the lone dot, unstuffing leading dots and
/// ending every line with CRLF (a bare LF is taken as a line end). At most
/// `limit` bytes are kept; past that the rest is read and dropped.
///
/// # Errors
/// Socket errors; `UnexpectedEof` if the peer closes before the dot.
pub async fn read_data<R: AsyncBufRead + Unpin>(r: &mut R, limit: usize) -> io::Result<Data> {
    let mut msg = Vec::new();
    let mut too_big = false;
    // The current line (without its LF), unless it outgrew the limit.
    let mut line = Vec::new();
    let mut line_too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed inside a message's data",
            ));
        }
        let (take, ended) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        let bytes = &buf[..take - usize::from(ended)];
        if line.len() + bytes.len() > limit.saturating_add(3) {
            line_too_long = true;
            line.clear();
        } else if !line_too_long {
            line.extend_from_slice(bytes);
        }
        r.consume(take);
        if !ended {
            continue;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !line_too_long && line == b"." {
            return Ok(if too_big {
                Data::TooBig
            } else {
                Data::Message(msg)
            });
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        if line_too_long || msg.len() + content.len() + 2 > limit {
            too_big = true;
            msg = Vec::new();
        }
        if !too_big {
            msg.extend_from_slice(content);
            msg.extend_from_slice(b"\r\n");
        }
        line.clear();
        line_too_long = false;
    }
}

/// Writes `msg` (lines ended by CRLF) as SMTP data: leading dots doubled,
/// a CRLF added if the last line has none, then the lone dot.
///
/// # Errors
/// Socket errors.
pub async fn write_data<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 64 + 8);
    stuff(msg, &mut out);
    out.extend_from_slice(b".\r\n");
    w.write_all(&out).await?;
    w.flush().await
}

/// `msg` dot-stuffed into `out`, ending with CRLF.
fn stuff(msg: &[u8], out: &mut Vec<u8>) {
    let mut start = true;
    for &b in msg {
        if start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        start = b == b'\n';
    }
    if !msg.is_empty() && !msg.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
}

/// A server's reply: its code and text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line (without code and separator).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// 2xx.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply as sent: `code-text` lines, `code text` last.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            // Text from a next hop is relayed; never let it end a line.
            let text: String = text.chars().filter(|c| !c.is_control()).collect();
            out.extend_from_slice(format!("{}{sep}{text}\r\n", self.code).as_bytes());
        }
        out
    }

    /// The first line's text, for logs.
    pub fn text(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or("")
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// Reads a server's reply (all its lines).
///
/// # Errors
/// Socket errors; `InvalidData` for what is no reply, or one of too many
/// or too long lines; `UnexpectedEof` when the server closed.
pub async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Reply> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let mut lines = Vec::new();
    loop {
        let line = match read_line(r, MAX_REPLY_LINE).await? {
            Line::Text(l) => l,
            Line::TooLong => return Err(bad("a reply line is too long")),
            Line::Eof => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        };
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(bad("not an SMTP reply"));
        }
        let code = u16::from(line[0] - b'0') * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        if !(200..600).contains(&code) {
            return Err(bad("a reply code out of range"));
        }
        let sep = line.get(3).copied();
        let text = String::from_utf8_lossy(line.get(4..).unwrap_or(&[])).into_owned();
        lines.push(text);
        if lines.len() > MAX_REPLY_LINES {
            return Err(bad("a reply of too many lines"));
        }
        match sep {
            Some(b'-') => continue,
            None | Some(b' ') => return Ok(Reply { code, lines }),
            Some(_) => return Err(bad("not an SMTP reply")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn data(input: &[u8], limit: usize) -> io::Result<Data> {
        let mut r = tokio::io::BufReader::with_capacity(7, input);
        read_data(&mut r, limit).await
    }

    #[tokio::test]
    async fn data_is_unstuffed_and_ends_at_the_lone_dot() {
        let got = data(b"a\r\n..b\r\n.\r\nNEXT", 100).await.ok();
        assert_eq!(got, Some(Data::Message(b"a\r\n.b\r\n".to_vec())));
        let got = data(b"bare\nlf\n.\n", 100).await.ok();
        assert_eq!(got, Some(Data::Message(b"bare\r\nlf\r\n".to_vec())));
        let got = data(b".\r\n", 100).await.ok();
        assert_eq!(got, Some(Data::Message(Vec::new())));
        let got = data(b"x\r\n.\rjunk\r\n.\r\n", 100).await.ok();
        assert_eq!(got, Some(Data::Message(b"x\r\n\rjunk\r\n".to_vec())));
        let got = data(b"x\r\n.\r\n", 2).await.ok();
        assert_eq!(got, Some(Data::TooBig));
        let got = data(b"\r\n\r\n.\r\n", 100).await.ok();
        assert_eq!(got, Some(Data::Message(b"\r\n\r\n".to_vec())));
    }

    #[tokio::test]
    async fn data_past_the_limit_is_read_to_the_end_and_dropped() {
        let mut input = b"0123456789\r\n".repeat(10);
        input.extend_from_slice(b".\r\nQUIT\r\n");
        let mut r = tokio::io::BufReader::new(&input[..]);
        assert_eq!(read_data(&mut r, 50).await.ok(), Some(Data::TooBig));
        assert_eq!(
            read_line(&mut r, 100).await.ok(),
            Some(Line::Text(b"QUIT".to_vec()))
        );
    }

    #[tokio::test]
    async fn data_cut_short_is_an_error() {
        assert!(data(b"a\r\nb", 100).await.is_err());
    }

    #[tokio::test]
    async fn stuffing_round_trips() {
        let msg = b".a\r\n..b\r\nc\r\n.\r\n".to_vec();
        let mut out = Vec::new();
        write_data(&mut out, &msg).await.ok();
        assert_eq!(out, b"..a\r\n...b\r\nc\r\n..\r\n.\r\n");
        let got = data(&out, 100).await.ok();
        assert_eq!(got, Some(Data::Message(msg)));
    }

    #[tokio::test]
    async fn long_lines_are_dropped_whole() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let mut r = tokio::io::BufReader::new(&input[..]);
        assert_eq!(read_line(&mut r, 100).await.ok(), Some(Line::TooLong));
        assert_eq!(
            read_line(&mut r, 100).await.ok(),
            Some(Line::Text(b"NOOP".to_vec()))
        );
    }

    #[tokio::test]
    async fn replies_are_read_whole_and_bounded() {
        let mut r = &b"250-mx.test\r\n250-X-DOT-DATA\r\n250 8BITMIME\r\n"[..];
        let reply = read_reply(&mut r).await.ok();
        assert_eq!(reply.map(|r| (r.code, r.lines.len())), Some((250, 3)));
        let many = b"250-x\r\n".repeat(100);
        assert!(read_reply(&mut &many[..]).await.is_err());
        assert!(read_reply(&mut &b"HTTP/1.1 400\r\n"[..]).await.is_err());
        assert!(read_reply(&mut &b"999 no\r\n"[..]).await.is_err());
    }

    #[test]
    fn relayed_reply_text_cannot_inject_lines() {
        let r = Reply::new(451, "a\r\n250 b");
        assert_eq!(r.encode(), b"451 a250 b\r\n");
    }
}
