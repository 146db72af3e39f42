//! Peer doubles: the plugin's misbehaving peer (`dot_plugins::gtc::double`:
//! corrupt one chunk, or send each chunk slowly) on its own runtime thread
//! and its own store.

use std::net::SocketAddr;
use std::sync::Arc;

pub use dot_plugins::gtc::double::Behaviour;
use dot_plugins::gtc::double::{self, Sent};
use dot_store::{Oid, Store, StoreOptions};

/// A gtc peer double serving the objects it was given. Stops on drop.
pub struct PeerDouble {
    /// Its address.
    pub addr: SocketAddr,
    /// What it sent.
    pub counters: Arc<Sent>,
    /// The OIDs of the objects it holds, in the order given.
    pub oids: Vec<Oid>,
    /// The digests of their descriptor lists (what a ticket carries).
    pub list_digests: Vec<[u8; 32]>,
    /// The peer key it proves over TLS (it serves plain TCP too).
    pub key: dot_store::PeerKey,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl PeerDouble {
    /// Puts `objects` into a fresh store (the agent's default chunker, so
    /// descriptors match an agent's) and serves them with `behaviour`.
    /// Any token is accepted.
    pub fn start(objects: &[&[u8]], behaviour: Behaviour) -> PeerDouble {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            StoreOptions {
                durable: false,
                ..StoreOptions::default()
            },
        )
        .expect("double's store");
        let oids: Vec<Oid> = objects
            .iter()
            .map(|o| store.put_reader(&mut &o[..]).expect("put").oid)
            .collect();
        let list_digests = oids
            .iter()
            .map(|&oid| {
                dot_store::descriptor::list_digest(&store.descriptors(oid).expect("descriptors"))
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let counters = Arc::new(Sent::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let identity = dot_plugins::gtc::tls::Identity::load_or_create(
            &dir.path().join(dot_plugins::gtc::tls::KEY_FILE),
        )
        .expect("double's key");
        rt.spawn(double::serve(
            listener,
            store,
            behaviour,
            counters.clone(),
            Some(identity.server_config()),
        ));
        PeerDouble {
            addr,
            counters,
            oids,
            list_digests,
            key: identity.key(),
            rt: Some(rt),
            _dir: dir,
        }
    }

    /// Its hint, `gtc://KEY@ADDR`: reached over TLS, proving its own key.
    pub fn hint(&self) -> String {
        format!("gtc://{}@{}", self.key, self.addr)
    }

    /// Its hint without a key, `gtc://ADDR`: reached over plain TCP.
    pub fn plain_hint(&self) -> String {
        format!("gtc://{}", self.addr)
    }
}

impl Drop for PeerDouble {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
