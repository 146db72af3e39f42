//! The gateway's DOT side, through the client library only: connections
//! to the local agent kept for reuse, a message (or its body) put as an
//! object and held until its ticket was answered, a ticket fetched with a
//! bound on its size and a deadline, the split of a message into its header
//! block and body, and the count of failed ticket sends per object.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use dot_store::{Hint, Ticket};

use crate::api::GetMode;
use crate::client::{AsyncClient, ClientError};

/// Idle agent connections kept for the next message.
const IDLE_CLIENTS: usize = 8;
/// Objects whose failed sends are remembered (then forgotten wholesale).
const MAX_REMEMBERED: usize = 4096;

/// The local agent, as the gateway uses it.
pub struct LocalAgent {
    socket: Option<PathBuf>,
    idle: Mutex<Vec<AsyncClient>>,
    /// The chunker for mail objects.
    chunker: String,
}

/// An object this gateway put, held by the agent (so it is not evicted)
/// until [`LocalAgent::release`].
pub struct Held {
    client: AsyncClient,
    /// Its OID.
    pub oid: String,
    /// Its ticket.
    pub ticket: String,
}

/// Why a fetch failed: every cause is transient for the sender (it may
/// try again, and at last send the message by `DATA`).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The local agent is not there, or failed.
    #[error("local DOT agent: {0}")]
    Agent(#[from] ClientError),
    /// The object is larger than the gateway takes.
    #[error("the message is {size} bytes, over the limit of {limit}")]
    TooBig {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The fetch took too long.
    #[error("no message within {0:?}")]
    Timeout(Duration),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalAgent {
    /// The agent at `socket` (else the default), putting mail with `chunker`.
    pub fn new(socket: Option<PathBuf>, chunker: String) -> LocalAgent {
        LocalAgent {
            socket,
            idle: Mutex::new(Vec::new()),
            chunker,
        }
    }

    async fn client(&self) -> Result<AsyncClient, ClientError> {
        let idle = lock(&self.idle).pop();
        match idle {
            Some(c) => Ok(c),
            None => AsyncClient::connect(self.socket.as_deref()).await,
        }
    }

    fn give_back(&self, client: AsyncClient) {
        let mut idle = lock(&self.idle);
        if idle.len() < IDLE_CLIENTS {
            idle.push(client);
        }
    }

    /// Puts `bytes` as an object, held until [`LocalAgent::release`].
    ///
    /// # Errors
    /// The agent's or the socket's.
    pub async fn put(&self, bytes: &[u8]) -> Result<Held, ClientError> {
        let mut client = self.client().await?;
        let mut put = client.put_with(Some(&self.chunker)).await?;
        put.write(bytes).await?;
        let out = put.commit().await?;
        Ok(Held {
            client,
            oid: out.oid,
            ticket: out.ticket,
        })
    }

    /// Lets the agent evict `held` again, and keeps its connection.
    pub async fn release(&self, mut held: Held) {
        if held.client.done(&held.oid).await.is_ok() {
            self.give_back(held.client);
        }
    }

    /// Fetches the object of `ticket` whole, from `hints` (the ticket's own
    /// when empty), if it is at most `limit` bytes, within `deadline`.
    ///
    /// # Errors
    /// [`FetchError`].
    pub async fn fetch(
        &self,
        ticket: &str,
        hints: &[String],
        limit: u64,
        deadline: Duration,
    ) -> Result<Vec<u8>, FetchError> {
        let mut client = self.client().await?;
        let fetched = tokio::time::timeout(deadline, async {
            let mut get = client.get(ticket, hints, GetMode::Sequential).await?;
            let size = get.size();
            if size > limit {
                return Err(FetchError::TooBig { size, limit });
            }
            // The size was checked against the limit, which fits in memory.
            let mut bytes = Vec::with_capacity(size as usize);
            while let Some((_, piece)) = get.next_piece().await? {
                bytes.extend_from_slice(&piece);
            }
            Ok(bytes)
        })
        .await;
        match fetched {
            Ok(Ok(bytes)) => {
                let oid = ticket.parse::<Ticket>().map(|t| t.oid().to_string());
                if let Ok(oid) = oid
                    && client.done(&oid).await.is_ok()
                {
                    self.give_back(client);
                }
                Ok(bytes)
            }
            // The connection is mid-get: dropped with the error.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FetchError::Timeout(deadline)),
        }
    }
}

/// The hints of `ticket` that name `client` (by address, or by a name that
/// resolves to it): the only sources an inbound gateway fetches from, so a
/// stranger's ticket cannot make it connect anywhere else. `None` if the
/// ticket does not parse.
pub async fn hints_at(ticket: &str, client: IpAddr) -> Option<Vec<String>> {
    let t: Ticket = ticket.parse().ok()?;
    let mut kept = Vec::new();
    for hint in t.hints() {
        if names(hint, client).await {
            kept.push(hint.uri().to_owned());
        }
    }
    Some(kept)
}

/// Whether `hint` is a gtc address at `ip`.
async fn names(hint: &Hint, ip: IpAddr) -> bool {
    let Some(authority) = hint.gtc_authority() else {
        return false;
    };
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(addr) = host.parse::<IpAddr>() {
        return same_ip(addr, ip);
    }
    let Ok(port) = port.parse::<u16>() else {
        return false;
    };
    let lookup = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host.to_owned(), port)),
    )
    .await;
    match lookup {
        Ok(Ok(mut addrs)) => addrs.any(|a| same_ip(a.ip(), ip)),
        _ => false,
    }
}

/// Equal, seeing IPv4-mapped IPv6 addresses as IPv4.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// A message split into its header block (through the empty line that
/// ends it) and its body; `None` when there is no body to split off.
pub fn split(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = message.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let (headers, body) = message.split_at(at);
    (!body.is_empty()).then_some((headers, body))
}

/// Failed ticket sends per object, so a message whose ticket keeps
/// failing goes by `DATA` at last.
#[derive(Default)]
pub struct Attempts {
    failed: Mutex<HashMap<String, u32>>,
}

impl Attempts {
    /// How many sends of `oid`'s ticket failed so far.
    pub fn failed(&self, oid: &str) -> u32 {
        lock(&self.failed).get(oid).copied().unwrap_or(0)
    }

    /// One more failed send of `oid`'s ticket.
    pub fn fail(&self, oid: &str) {
        let mut failed = lock(&self.failed);
        if failed.len() >= MAX_REMEMBERED && !failed.contains_key(oid) {
            failed.clear();
        }
        *failed.entry(oid.to_owned()).or_default() += 1;
    }

    /// `oid` went through: forget it.
    pub fn forget(&self, oid: &str) {
        lock(&self.failed).remove(oid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_splits_after_its_empty_line() {
        let m = b"Subject: x\r\nFrom: a\r\n\r\nbody\r\n\r\nmore\r\n";
        let (h, b) = split(m).expect("a body");
        assert_eq!(h, b"Subject: x\r\nFrom: a\r\n\r\n");
        assert_eq!(b, b"body\r\n\r\nmore\r\n");
        assert_eq!(split(b"Subject: x\r\n\r\n"), None);
        assert_eq!(split(b"Subject: x\r\n"), None);
    }

    #[test]
    fn attempts_are_counted_and_bounded() {
        let a = Attempts::default();
        a.fail("x");
        a.fail("x");
        assert_eq!(a.failed("x"), 2);
        a.forget("x");
        assert_eq!(a.failed("x"), 0);
        for i in 0..MAX_REMEMBERED + 10 {
            a.fail(&i.to_string());
        }
        assert!(lock(&a.failed).len() <= MAX_REMEMBERED);
    }

    #[tokio::test]
    async fn only_hints_at_the_client_are_kept() {
        let oid = dot_store::Oid::of(b"x");
        let t = Ticket::new(
            oid,
            None,
            None,
            vec![
                Hint::gtc("127.0.0.1:7420".parse().expect("addr")),
                Hint::gtc("10.9.9.9:7420".parse().expect("addr")),
                Hint::gtc("[::ffff:127.0.0.1]:7421".parse().expect("addr")),
            ],
        );
        let kept = hints_at(&t.to_string(), IpAddr::from([127, 0, 0, 1])).await;
        assert_eq!(
            kept,
            Some(vec![
                "gtc://127.0.0.1:7420".to_owned(),
                "gtc://[::ffff:127.0.0.1]:7421".to_owned()
            ])
        );
        assert_eq!(
            hints_at("dot1.nonsense", IpAddr::from([127, 0, 0, 1])).await,
            None
        );
    }
}
