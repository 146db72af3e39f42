//! Agent configuration: an optional TOML file ([`RawConfig`]), the
//! `gtc agent` flags laid over it ([`Flags`]), validated into [`Config`]
//! by [`Config::from_flags`].
//!
//! Every key, the flag that overrides it, and its default when neither
//! gives it (applied in one place, [`RawConfig::validate`]):
//!
//! | key | flag | default |
//! | --- | --- | --- |
//! | `data-dir` | `--data-dir` | root: `/var/lib/dot`; others: `$XDG_DATA_HOME/dot`, else `~/.local/share/dot` (neither set: an error) |
//! | `socket` | `--socket` | root: `/run/dot/gtc.sock`; others: `$XDG_RUNTIME_DIR/dot/gtc.sock`, else `/tmp/dot-$UID/gtc.sock` (a folder someone else owns is refused) |
//! | `socket-group` | | none: only the agent's user and root use the socket |
//! | `listen` | `--listen` | `0.0.0.0:7420` |
//! | `advertise` | `--advertise` | none: hints name `listen` once bound |
//! | `chunker` | | `cdc:16384:65536:262144` |
//! | `cache-bytes` | | a quarter of the store's filesystem |
//! | `min-free-bytes` | | 5% of the store's filesystem, at most 1 GiB |
//! | `durable` | | on |
//! | `mount` | `--mount`, `--no-mount` | root: `/mnt/dot`; others: no mount |
//! | `read-timeout-secs` | `--read-timeout` | 60 (at least 1) |
//! | `passthrough` | | on |
//! | `put-limit` | | 16 GiB of drafts under the mount's `put/` per user (the agent's user and root: no limit) |
//! | `bind` | | none: the system picks the address |
//! | `devices` | | on |
//! | `device-folders` | | none |
//! | `device-mount` | | none |
//! | `outbox` | | off |
//! | `peers` | `--peer` | none (each `host:port`, or `KEY@host:port` to speak TLS to a peer that must prove the peer key `KEY`, as `gtc status` shows it) |
//! | `open-to` | `--open-to` | none |
//! | `max-peers` | | 1024 peer connections at once |
//! | `max-peers-per-address` | | 64 peer connections at once from one address |
//! | `peer-idle-secs` | | 300: a peer connection with nothing asked is closed after this |
//! | `peer-write-timeout-secs` | | 30: a peer that takes no bytes for this long is dropped |
//! | `plain-peers` | | off: peers speak TLS only, and tickets name this agent's peer key |
//! | `metrics` | | none: no metrics endpoint (give `host:port`, e.g. `127.0.0.1:9420`, for Prometheus text at `/metrics`) |
//!
//! A flag given replaces its key; a list flag (`--advertise`, `--peer`,
//! `--open-to`) given at least once replaces the whole list.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use dot_store::ChunkerSpec;
use serde::Deserialize;

/// Default peer port.
pub const DEFAULT_PORT: u16 = 7420;
/// Most free bytes the store keeps by default (5% of its filesystem up
/// to this).
pub const DEFAULT_MIN_FREE_CAP: u64 = 1 << 30;

/// Size in bytes of the filesystem holding `dir` (or, before it is made,
/// its nearest existing parent).
fn fs_size(dir: &Path) -> Option<u64> {
    let on = dir.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(on).ok()?;
    Some(st.f_blocks.saturating_mul(st.f_frsize))
}

/// Default bytes of drafts one user may hold under the mount's `put/`.
pub const DEFAULT_PUT_LIMIT: u64 = 16 << 30;

/// The configuration file as written. Unknown keys are an error, so typos
/// do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// Store folder.
    pub data_dir: Option<PathBuf>,
    /// Local API socket.
    pub socket: Option<PathBuf>,
    /// A group (name or number) whose members may use the local API too.
    pub socket_group: Option<String>,
    /// Peer listen address.
    pub listen: Option<String>,
    /// Addresses put into hints.
    pub advertise: Option<Vec<String>>,
    /// Chunker, `cdc:MIN:AVG:MAX` or `fixed:SIZE`.
    pub chunker: Option<String>,
    /// Store budget in bytes.
    pub cache_bytes: Option<u64>,
    /// Free bytes the store's filesystem keeps.
    pub min_free_bytes: Option<u64>,
    /// Flush received chunks to disk before recording them (default: on;
    /// off, a machine crash is caught at the next start instead, by
    /// re-verifying the objects written since the last clean stop).
    pub durable: Option<bool>,
    /// Where to mount the FUSE namespace; `""` for no mount. Default:
    /// `/mnt/dot` for root, none for other users.
    pub mount: Option<PathBuf>,
    /// Seconds a read through the mount may wait for its bytes before EIO.
    pub read_timeout_secs: Option<u64>,
    /// Open complete objects with FUSE passthrough when the kernel can.
    pub passthrough: Option<bool>,
    /// Bytes of drafts one user may hold under the mount's `put/`.
    pub put_limit: Option<u64>,
    /// Local addresses to fetch from, one path per address and source
    /// (several interfaces of a multi-homed host). Default: none, the
    /// system picks the address; each hinted address is then a path.
    pub bind: Option<Vec<String>>,
    /// Watch for portable devices holding a DOT store (default: on).
    pub devices: Option<bool>,
    /// Folders whose sub-folders are watched for keys (an automounter's
    /// `/media/USER`); keys mounted anywhere are seen in the mount table.
    pub device_folders: Option<Vec<PathBuf>>,
    /// Mount inserted block devices nobody mounts read-only under this
    /// folder (default: none, leave mounting to the system).
    pub device_mount: Option<PathBuf>,
    /// Copy every new put to attached keys whose `.dot/outbox` file marks
    /// them as outboxes (default: off).
    pub outbox: Option<bool>,
    /// Peers (`host:port`) asked for an object known only by its OID (a
    /// bare OID under the mount, `gtc get OID`); they must be open to this
    /// host (their `open-to`).
    pub peers: Option<Vec<String>>,
    /// Addresses or prefixes (`10.0.0.0/8`) that may fetch objects of this
    /// agent by OID alone, without the ticket's token (default: none).
    pub open_to: Option<Vec<String>>,
    /// Peer connections at once, in all (past it the longest-idle one is
    /// shed, or the new one refused).
    pub max_peers: Option<usize>,
    /// Peer connections at once from one address.
    pub max_peers_per_address: Option<usize>,
    /// Seconds a peer connection with nothing asked may stay silent.
    pub peer_idle_secs: Option<u64>,
    /// Seconds one write to a peer may take.
    pub peer_write_timeout_secs: Option<u64>,
    /// Serve peers over plain TCP too, and hand out tickets without the
    /// peer key (receivers then speak plain TCP): for a trusted network
    /// where TLS's CPU is not worth it.
    pub plain_peers: Option<bool>,
    /// Where to serve metrics (Prometheus text at `/metrics`).
    pub metrics: Option<String>,
}

/// The flags of `gtc agent`: the configuration file, and keys that
/// override the file's (see [`RawConfig::with_flags`]). Their doc
/// comments are the command's help.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Flags {
    /// TOML configuration file; flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Store folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Local API socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Address:port to serve peers on (default 0.0.0.0:7420).
    #[arg(long)]
    pub listen: Option<String>,
    /// host:port to put into hints; repeat for several.
    #[arg(long)]
    pub advertise: Vec<String>,
    /// Mount the content-addressed namespace here (default for root:
    /// /mnt/dot).
    #[arg(long, conflicts_with = "no_mount")]
    pub mount: Option<PathBuf>,
    /// Do not mount the namespace.
    #[arg(long)]
    pub no_mount: bool,
    /// Seconds a read through the mount may wait before EIO.
    #[arg(long)]
    pub read_timeout: Option<u64>,
    /// host:port of a peer to ask for objects known by OID alone;
    /// repeat for several (config key `peers`).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Address or prefix (10.0.0.0/8) that may fetch by OID alone,
    /// without a ticket's token; repeat for several (config `open-to`).
    #[arg(long)]
    pub open_to: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Store folder.
    pub data_dir: PathBuf,
    /// Local API socket.
    pub socket: PathBuf,
    /// The group whose members may use the local API besides the agent's
    /// user and root.
    pub socket_group: Option<u32>,
    /// Peer listen address.
    pub listen: SocketAddr,
    /// `host:port` of each hint this agent puts in tickets; empty: derived
    /// from `listen` once bound.
    pub advertise: Vec<String>,
    /// How new objects are chunked.
    pub chunker: ChunkerSpec,
    /// Store budget in bytes (none given: see [`Config::store_limits`]).
    pub cache_bytes: Option<u64>,
    /// Free bytes the store's filesystem keeps (none given: see
    /// [`Config::store_limits`]).
    pub min_free_bytes: Option<u64>,
    /// Flush received chunks before recording them.
    pub durable: bool,
    /// Where to mount the FUSE namespace.
    pub mount: Option<PathBuf>,
    /// How long a read through the mount may wait.
    pub read_timeout: std::time::Duration,
    /// Local addresses to fetch from (each with each source is a path).
    pub bind: Vec<std::net::IpAddr>,
    /// Watch for portable devices.
    pub devices: bool,
    /// Folders watched for keys.
    pub device_folders: Vec<PathBuf>,
    /// Where to mount unclaimed block devices, if anywhere.
    pub device_mount: Option<PathBuf>,
    /// Copy new puts to outbox keys.
    pub outbox: bool,
    /// FUSE passthrough for complete objects.
    pub passthrough: bool,
    /// Bytes of drafts one user may hold under `put/`.
    pub put_limit: u64,
    /// Hints asked for objects known only by OID.
    pub peers: Vec<dot_store::Hint>,
    /// Who may fetch by OID alone.
    pub open_to: Vec<dot_plugins::gtc::access::IpPrefix>,
    /// What peers are allowed: connection caps and deadlines (its
    /// `policy` is `open_to`; the agent adds its TLS identity).
    pub serve: dot_plugins::gtc::server::ServeOptions,
    /// Serve plain TCP too; tickets without the peer key.
    pub plain_peers: bool,
    /// The metrics endpoint's address, if any.
    pub metrics: Option<SocketAddr>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The default data folder for this user.
///
/// # Errors
/// When neither `$XDG_DATA_HOME` nor `$HOME` is set (a shared folder such
/// as `/tmp` is no place for a store: give `--data-dir`).
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if is_root() {
        return Ok(PathBuf::from("/var/lib/dot"));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("dot"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/dot")),
        None => bail!("no store folder: neither XDG_DATA_HOME nor HOME is set; give --data-dir"),
    }
}

/// Where the namespace is mounted without configuration: `/mnt/dot` for
/// root; none for other users (an unprivileged mount needs fusermount3,
/// which the agent does not use).
pub fn default_mount() -> Option<PathBuf> {
    is_root().then(|| PathBuf::from("/mnt/dot"))
}

/// The socket a client uses: `explicit`, else `$GTC_SOCKET`, else the default.
pub fn client_socket(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("GTC_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    default_socket()
}

/// The default local API socket for this user.
pub fn default_socket() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/dot/gtc.sock");
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("dot/gtc.sock");
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("dot-{uid}/gtc.sock"))
}

/// The gtc hint of `host:port` (a port other than 0), or an error naming
/// the config `key`.
/// An agent's address as `key` gives it, in any of the forms
/// [`dot_store::Hint::from_address`] takes.
fn gtc_hint(key: &str, addr: &str) -> anyhow::Result<dot_store::Hint> {
    dot_store::Hint::from_address(addr).with_context(|| format!("{key}: {addr:?}"))
}

/// `listen`: `host:port`, the host an IP address or a name resolved now.
fn listen_address(key: &str, l: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = l.parse() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    l.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("{key}: {l:?} is not host:port (a local address or name)"))
}

impl RawConfig {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// If it cannot be read or parsed (the message names the file and key).
    pub fn load(path: &Path) -> anyhow::Result<RawConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Lays `flags` over the file's keys: a flag given replaces its key,
    /// a list flag given at least once replaces the whole list, and
    /// `--no-mount` is `mount = ""`. (`flags.config`, the file itself, is
    /// read by [`Config::from_flags`].)
    pub fn with_flags(mut self, flags: Flags) -> RawConfig {
        let Flags {
            config: _,
            data_dir,
            socket,
            listen,
            advertise,
            mount,
            no_mount,
            read_timeout,
            peers,
            open_to,
        } = flags;
        self.data_dir = data_dir.or(self.data_dir);
        self.socket = socket.or(self.socket);
        self.listen = listen.or(self.listen);
        if !advertise.is_empty() {
            self.advertise = Some(advertise);
        }
        self.mount = if no_mount {
            Some(PathBuf::new())
        } else {
            mount.or(self.mount)
        };
        self.read_timeout_secs = read_timeout.or(self.read_timeout_secs);
        if !peers.is_empty() {
            self.peers = Some(peers);
        }
        if !open_to.is_empty() {
            self.open_to = Some(open_to);
        }
        self
    }

    /// Checks values and fills defaults.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn validate(self) -> anyhow::Result<Config> {
        let listen = match self.listen.as_deref() {
            None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            Some(l) => listen_address("listen", l)?,
        };
        let metrics = self
            .metrics
            .as_deref()
            .map(|m| listen_address("metrics", m))
            .transpose()?;
        // Kept as `host:port`: the agent's own key and hints are its own.
        let advertise = self
            .advertise
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let h = gtc_hint("advertise", a)?;
                if h.peer_key().is_some() || h.priority != dot_store::hint::DEFAULT_PRIORITY {
                    bail!("advertise: {a:?}: give host:port (the agent names its own key)");
                }
                h.gtc_authority()
                    .map(str::to_owned)
                    .with_context(|| format!("advertise: {a:?} is not a gtc address"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bind = self
            .bind
            .unwrap_or_default()
            .iter()
            .map(|b| {
                b.parse()
                    .with_context(|| format!("bind: {b:?} is not an IP address"))
            })
            .collect::<anyhow::Result<Vec<std::net::IpAddr>>>()?;
        let peers = self
            .peers
            .unwrap_or_default()
            .iter()
            .map(|p| gtc_hint("peers", p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let open_to = self
            .open_to
            .unwrap_or_default()
            .iter()
            .map(|p| p.parse().with_context(|| "open-to"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let serve = dot_plugins::gtc::server::ServeOptions::default();
        let chunker = match self.chunker.as_deref() {
            None => ChunkerSpec::default(),
            Some(c) => c.parse().with_context(|| "chunker")?,
        };
        let data_dir = match self.data_dir {
            Some(d) => d,
            None => default_data_dir()?,
        };
        let socket_group = self
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        Ok(Config {
            data_dir,
            socket: self.socket.unwrap_or_else(default_socket),
            socket_group,
            listen,
            advertise,
            bind,
            devices: self.devices.unwrap_or(true),
            device_folders: self.device_folders.unwrap_or_default(),
            device_mount: self.device_mount,
            outbox: self.outbox.unwrap_or(false),
            chunker,
            cache_bytes: self.cache_bytes,
            min_free_bytes: self.min_free_bytes,
            durable: self.durable.unwrap_or(true),
            mount: match self.mount {
                Some(m) if m.as_os_str().is_empty() => None,
                Some(m) => Some(m),
                None => default_mount(),
            },
            read_timeout: std::time::Duration::from_secs(
                self.read_timeout_secs.unwrap_or(60).max(1),
            ),
            passthrough: self.passthrough.unwrap_or(true),
            put_limit: self.put_limit.unwrap_or(DEFAULT_PUT_LIMIT),
            peers,
            serve: dot_plugins::gtc::server::ServeOptions {
                policy: dot_plugins::gtc::access::Policy {
                    open_to: open_to.clone(),
                },
                max_connections: self.max_peers.unwrap_or(serve.max_connections).max(1),
                max_per_address: self
                    .max_peers_per_address
                    .unwrap_or(serve.max_per_address)
                    .max(1),
                idle_timeout: self
                    .peer_idle_secs
                    .map_or(serve.idle_timeout, |s| Duration::from_secs(s.max(1))),
                write_timeout: self
                    .peer_write_timeout_secs
                    .map_or(serve.write_timeout, |s| Duration::from_secs(s.max(1))),
                ..serve
            },
            open_to,
            plain_peers: self.plain_peers.unwrap_or(false),
            metrics,
        })
    }
}

impl Config {
    /// The store's budget and the free bytes it keeps: as configured, else
    /// a quarter of the filesystem the store is on, and 5% of it (at most
    /// 1 GiB); no limit where the filesystem's size is unknown.
    pub fn store_limits(&self) -> (u64, u64) {
        let size = fs_size(&self.data_dir);
        let budget = self
            .cache_bytes
            .unwrap_or_else(|| size.map_or(u64::MAX, |s| s / 4));
        let floor = self
            .min_free_bytes
            .unwrap_or_else(|| size.map_or(0, |s| (s / 20).min(DEFAULT_MIN_FREE_CAP)));
        (budget, floor)
    }

    /// The configuration `gtc agent` runs with: the file `flags.config`
    /// names (none: no keys), the flags over it, validated.
    ///
    /// # Errors
    /// The file cannot be read or parsed; a bad value (the message names
    /// the key).
    pub fn from_flags(flags: Flags) -> anyhow::Result<Config> {
        let raw = match &flags.config {
            Some(path) => RawConfig::load(path)?,
            None => RawConfig::default(),
        };
        raw.with_flags(flags).validate()
    }
}

/// The group `name` (or a number) names.
///
/// # Errors
/// An unknown group.
fn resolve_group(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let cname = std::ffi::CString::new(name).context("socket-group: a NUL in the name")?;
    let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `out` is set to `grp`
    // (or null) by getgrnam_r, which writes strings into `buf` only.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            grp.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() {
        bail!("socket-group: no group named {name:?}");
    }
    // SAFETY: getgrnam_r succeeded and filled `grp`.
    Ok(unsafe { grp.assume_init() }.gr_gid)
}

#[cfg(test)]
mod tests;
