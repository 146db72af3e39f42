//! Things in the middle of a peer link: a [`Relay`] that passes TCP bytes
//! both ways and records them (what anyone on the path sees), and a
//! [`Mitm`] that answers TLS with its own key and records whatever
//! plaintext a client then sends it (what a man in the middle learns).
//! Each runs on its own threads until dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use dot_plugins::gtc::tls::Identity;

/// How long a thread in the middle waits on a silent socket before it
/// gives up on the connection.
const SILENCE: Duration = Duration::from_secs(30);

/// Bytes recorded, shared with the threads that record them.
type Tape = Arc<Mutex<Vec<u8>>>;

/// A TCP relay to `target` that records every byte in either direction.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    tape: Tape,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying connections to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let tape: Tape = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (tape.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                pump(&client, &server, &t);
                pump(&server, &client, &t);
            }
        });
        Relay { addr, tape, stop }
    }

    /// Everything that crossed the relay so far, both directions.
    pub fn recorded(&self) -> Vec<u8> {
        self.tape.lock().expect("tape").clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// Copies `from` to `to` on a new thread, appending each read to `tape`.
fn pump(from: &TcpStream, to: &TcpStream, tape: &Tape) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let tape = tape.clone();
    thread::spawn(move || {
        let _ = from.set_read_timeout(Some(SILENCE));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            tape.lock().expect("tape").extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A TLS server with a key of its own, posing as an agent.
pub struct Mitm {
    /// Where clients connect.
    pub addr: SocketAddr,
    plaintext: Tape,
    handshakes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Mitm {
    /// Starts answering TLS with a new key.
    pub fn start() -> Mitm {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::load_or_create(&dir.path().join("peer.key")).expect("a key");
        let config = identity.server_config();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let plaintext: Tape = Arc::default();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, h, s) = (plaintext.clone(), handshakes.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(sock) = conn else { continue };
                let (config, p, h) = (config.clone(), p.clone(), h.clone());
                thread::spawn(move || {
                    let _ = sock.set_read_timeout(Some(SILENCE));
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    while tls.conn.is_handshaking() {
                        if tls.conn.complete_io(&mut tls.sock).is_err() {
                            return;
                        }
                    }
                    h.fetch_add(1, Ordering::Relaxed);
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = tls.read(&mut buf) {
                        p.lock().expect("tape").extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Mitm {
            addr,
            plaintext,
            handshakes,
            stop,
            _dir: dir,
        }
    }

    /// Handshakes a client finished with it.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// The plaintext clients sent it after a handshake.
    pub fn plaintext(&self) -> Vec<u8> {
        self.plaintext.lock().expect("tape").clone()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}
