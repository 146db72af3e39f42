//! Opening a peer link over a connected TCP stream: TLS when a key is
//! named or the first byte is a TLS handshake, else plain TCP where both
//! ends allow it. Each end gets the link as a reading and a writing half
//! ([`Reader`], [`Writer`]) whatever it runs over.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use dot_store::PeerKey;
use tokio::net::TcpStream;

use super::proto::{ErrorCode, Frame};
use super::tls;

/// Bytes read off the socket at once under TLS. rustls reads a record at
/// a time, in steps of 4 KiB from an empty buffer: several system calls a
/// 16 KiB record. Under a buffer of this size they are copies instead, and
/// the socket is read as a plain link reads it.
const TLS_READ_AHEAD: usize = 256 << 10;

/// The reading half of a link, plain or TLS.
pub type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
/// The writing half of a link, plain or TLS.
pub type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// A link a client opened.
pub struct Opened {
    /// Its reading half.
    pub rd: Reader,
    /// Its writing half.
    pub wr: Writer,
    /// The TCP socket, where its receive low-water mark may be set (plain
    /// TCP only: under TLS the ciphertext still to come can be less than
    /// the plaintext a frame misses, part of a record sitting in the TLS
    /// buffer, and a mark above it would never be reached).
    pub low_water_fd: Option<RawFd>,
}

/// Opens the client's end of a link: TLS to a server that must prove
/// `key`, or plain TCP for `None`. The handshake must end within
/// `deadline`.
///
/// # Errors
/// A message for the user: the key not proved, no TLS spoken, no
/// handshake in time.
pub async fn connect(
    stream: TcpStream,
    key: Option<PeerKey>,
    deadline: Duration,
) -> Result<Opened, String> {
    let _ = stream.set_nodelay(true);
    let Some(key) = key else {
        let fd = stream.as_raw_fd();
        let (rd, wr) = stream.into_split();
        return Ok(Opened {
            rd: Box::new(rd),
            wr: Box::new(wr),
            low_water_fd: Some(fd),
        });
    };
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(key));
    let stream = tokio::io::BufReader::with_capacity(TLS_READ_AHEAD, stream);
    let link =
        match tokio::time::timeout(deadline, connector.connect(tls::server_name(), stream)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(tls_failure(key, &e)),
            Err(_) => {
                return Err(format!(
                    "no answer: no TLS handshake within {} s (not a gtc peer?)",
                    deadline.as_secs()
                ));
            }
        };
    if let Some(suite) = link.get_ref().1.negotiated_cipher_suite() {
        tracing::debug!(%key, cipher = ?suite.suite(), "TLS link open");
    }
    let (rd, wr) = tokio::io::split(link);
    Ok(Opened {
        rd: Box::new(rd),
        wr: Box::new(wr),
        low_water_fd: None,
    })
}

/// What a failed TLS handshake means to a user.
fn tls_failure(key: PeerKey, e: &std::io::Error) -> String {
    let wrong_key = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    if wrong_key {
        format!("the peer does not prove the key {key} its hint names: not the agent meant")
    } else {
        format!("not a gtc peer: the TLS handshake failed: {e}")
    }
}

/// Opens the server's end of a link: tells TLS from plain TCP by the
/// first byte, within `deadline` (as the handshake too), and opens it as
/// allowed: TLS with `tls` (none: refused), plain TCP if `plain`.
///
/// # Errors
/// Why the connection is closed (for the log).
pub async fn accept(
    stream: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    plain: bool,
    deadline: Duration,
) -> Result<(Reader, Writer), String> {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(Ok(_)) => return Err("closed before a word".into()),
        Ok(Err(e)) => return Err(format!("read: {e}")),
        Err(_) => return Err("no Hello in time".into()),
    }
    if tls::is_tls(first[0]) {
        let Some(config) = tls else {
            return Err("TLS asked of a server that speaks plain TCP only".into());
        };
        let stream = tokio::io::BufReader::with_capacity(TLS_READ_AHEAD, stream);
        let accept = tokio_rustls::TlsAcceptor::from(config.clone()).accept(stream);
        let link = match tokio::time::timeout(deadline, accept).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(format!("TLS handshake: {e}")),
            Err(_) => return Err("no TLS handshake in time".into()),
        };
        let (rd, wr) = tokio::io::split(link);
        return Ok((Box::new(rd), Box::new(wr)));
    }
    if !plain {
        refuse_plain(&stream);
        return Err("plain TCP refused: this agent speaks TLS only".into());
    }
    let (rd, wr) = stream.into_split();
    Ok((Box::new(rd), Box::new(wr)))
}

/// Tells a plain-TCP client, in its own protocol, why it is turned away:
/// reads what it sent (its `Hello`, so closing does not reset the
/// connection before the answer is read), then one `Error` frame, without
/// waiting on either.
fn refuse_plain(stream: &TcpStream) {
    let mut sent = [0u8; 512];
    let _ = stream.try_read(&mut sent);
    let mut frame = Vec::new();
    Frame::Error {
        req: 0,
        code: ErrorCode::Unauthorized,
        message: PLAIN_REFUSED.into(),
    }
    .encode(&mut frame);
    let _ = stream.try_write(&frame);
}

/// What a plain-TCP client of a TLS-only agent is told.
pub const PLAIN_REFUSED: &str =
    "this agent speaks TLS only: fetch with a ticket it issued (the ticket names its key)";
