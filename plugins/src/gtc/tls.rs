//! The encrypted peer link: TLS 1.3 (rustls, with ring's primitives) over
//! the peer's TCP connection, authenticated by raw public keys (RFC 7250)
//! and no certificate authority.
//!
//! Each agent has a long-term Ed25519 key pair, made at its first start
//! and kept (PKCS#8, mode 0600) beside its store ([`Identity`]). Its
//! tickets name the public key ([`PeerKey`]: 16 bytes of BLAKE3 over the
//! key's SubjectPublicKeyInfo), and a receiver speaks TLS to the ticket's
//! hints and refuses any server that cannot prove that key
//! ([`client_config`]). The token and the chunks then travel only inside
//! the encrypted link. Servers do not authenticate clients: the token in
//! a `DescReq` does that, as before.
//!
//! A connection opens with a TLS ClientHello (a handshake record, first
//! byte 0x16) or, where both ends agreed on plain TCP (the sender's
//! `plain-peers`, a ticket without a key), with the plain `Hello` frame
//! (first byte 0x00: a length prefix): the server tells the two apart by
//! the first byte ([`is_tls`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use dot_store::PeerKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme,
};

/// The key file's name in the agent's data folder.
pub const KEY_FILE: &str = "peer.key";
/// The largest key file read (an Ed25519 PKCS#8 document is 83 bytes).
const MAX_KEY_FILE: u64 = 4096;
/// The server name sent in the ClientHello: unused (the key is pinned),
/// but TLS wants one.
const SERVER_NAME: &str = "dot-peer";

/// Whether a connection's first byte opens a TLS handshake.
pub fn is_tls(first: u8) -> bool {
    first == 0x16
}

/// This agent's long-term peer key.
pub struct Identity {
    certified: Arc<CertifiedKey>,
    key: PeerKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.key)
    }
}

impl Identity {
    /// The key pair in `path`, made there (mode 0600) if missing.
    ///
    /// # Errors
    /// A key file that cannot be read, written, or parsed, or that other
    /// users may read.
    pub fn load_or_create(path: &Path) -> io::Result<Identity> {
        let pkcs8 = match read_key_file(path) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::NotFound => make_key_file(path)?,
            Err(e) => return Err(e),
        };
        Identity::from_pkcs8(pkcs8).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()),
            )
        })
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Identity, rustls::Error> {
        let signing = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8))?;
        let spki = signing
            .public_key()
            .ok_or_else(|| rustls::Error::General("the key has no public half".into()))?;
        let key = PeerKey::of_spki(spki.as_ref());
        let certified = Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(spki.as_ref().to_vec())],
            signing,
        ));
        Ok(Identity { certified, key })
    }

    /// The name of this agent's public key (what its tickets carry).
    pub fn key(&self) -> PeerKey {
        self.key
    }

    /// The TLS server configuration proving this key.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map(|b| {
                b.with_no_client_auth().with_cert_resolver(Arc::new(
                    AlwaysResolvesServerRawPublicKeys::new(self.certified.clone()),
                ))
            });
        // TLS 1.3 is in every build of rustls with ring: the builder
        // cannot refuse it.
        let mut config = config.unwrap_or_else(|_| unreachable_tls13());
        config.max_early_data_size = 0;
        config.send_tls13_tickets = 0;
        Arc::new(config)
    }
}

fn unreachable_tls13<T>() -> T {
    panic!("rustls with ring supports TLS 1.3")
}

/// ring's TLS 1.3 suites, AES-128-GCM first: both ends are agents, so
/// this is what they agree on. It is the cheapest of the three on CPUs
/// with AES instructions (a quarter fewer AES rounds than AES-256) and
/// leaves no key-size margin that matters for a link's lifetime.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

/// The TLS client configuration that accepts only a server proving the
/// key `expected`.
pub fn client_config(expected: PeerKey) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(Pinned {
        expected,
        algorithms: provider.signature_verification_algorithms,
    });
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    let mut config = config.unwrap_or_else(|_| unreachable_tls13());
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_early_data = false;
    Arc::new(config)
}

/// The server name every TLS connection to a peer uses.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).unwrap_or_else(|_| unreachable_tls13())
}

/// Accepts exactly one raw public key: the one a ticket names.
#[derive(Debug)]
struct Pinned {
    expected: PeerKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() || PeerKey::of_spki(end_entity.as_ref()) != self.expected {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let spki = SubjectPublicKeyInfoDer::from(cert.as_ref());
        verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Reads the key file: a regular file (no link followed) no one else may
/// read, of a sane size.
fn read_key_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a key file", path.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} may be read by other users (mode {:o}): make it 0600",
                path.display(),
                meta.mode() & 0o777
            ),
        ));
    }
    let mut pkcs8 = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut pkcs8)?;
    Ok(pkcs8)
}

/// Makes a new Ed25519 key pair in `path` (mode 0600, never over an
/// existing file).
fn make_key_file(path: &Path) -> io::Result<Vec<u8>> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| io::Error::other("no random bytes for a key"))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(pkcs8.as_ref())?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    tracing::info!(path = %path.display(), "made this agent's peer key");
    Ok(pkcs8.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        let a = Identity::load_or_create(&path).expect("made");
        let b = Identity::load_or_create(&path).expect("read");
        assert_eq!(a.key(), b.key());
        let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        assert!(
            Identity::load_or_create(&path).is_err(),
            "a readable key was used"
        );
    }

    #[test]
    fn a_linked_or_garbage_key_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        let path = dir.path().join(KEY_FILE);
        // A link, to nothing and then to a private file: never followed,
        // nothing made through it.
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        assert!(Identity::load_or_create(&path).is_err(), "a dangling link");
        assert!(!target.exists(), "a key was written through the link");
        std::fs::write(&target, b"not a key").expect("write");
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        assert!(Identity::load_or_create(&path).is_err(), "a linked file");
        // Garbage in a private file: a clear error, the file kept.
        std::fs::remove_file(&path).expect("unlink");
        std::fs::rename(&target, &path).expect("rename");
        let err = Identity::load_or_create(&path).expect_err("garbage");
        assert!(err.to_string().contains("not an Ed25519"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"not a key");
    }
}
