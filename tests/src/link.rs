//! A blocking TLS link to an agent's peer port, as a hostile peer opens
//! one: the agent's own client settings (TLS 1.3, its key pinned), then
//! raw frames.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use dot_store::PeerKey;

/// A TLS link over a blocking socket.
pub type Link = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `addr`, finishes a TLS handshake proving `key` within 10 s,
/// and sets `write_timeout` on the socket.
///
/// # Errors
/// Connecting or the handshake failed.
pub fn connect(
    addr: SocketAddr,
    key: PeerKey,
    write_timeout: Option<Duration>,
) -> std::io::Result<Link> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(
        dot_plugins::gtc::tls::client_config(key),
        dot_plugins::gtc::tls::server_name(),
    )
    .map_err(std::io::Error::other)?;
    let mut link = rustls::StreamOwned::new(conn, sock);
    while link.conn.is_handshaking() {
        link.conn.complete_io(&mut link.sock)?;
    }
    link.sock.set_read_timeout(None)?;
    link.sock.set_write_timeout(write_timeout)?;
    Ok(link)
}

/// Connects as [`connect`], reading the key from `hint` (`gtc://KEY@ADDR`).
///
/// # Errors
/// A hint without a key, or as [`connect`].
pub fn connect_hint(hint: &str, write_timeout: Option<Duration>) -> std::io::Result<Link> {
    let bad = || std::io::Error::other(format!("not gtc://KEY@ADDR: {hint}"));
    let (key, addr) = hint
        .strip_prefix("gtc://")
        .and_then(|h| h.split_once('@'))
        .ok_or_else(bad)?;
    let key: PeerKey = key.parse().map_err(|_| bad())?;
    let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
    connect(addr, key, write_timeout)
}
