//! A two-path network test bed: a sender and a receiver network namespace
//! joined by two rate-limited veth links, with one real agent in each.
//!
//! ```text
//!   sender namespace                         receiver namespace
//!   agent, peers on 0.0.0.0:7420             agent, peers on 0.0.0.0:7420
//!   s1 10.N.1.1/24 ==== link 1 (tbf) ====    r1 10.N.1.2/24
//!   s2 10.N.2.1/24 ==== link 2 (tbf) ====    r2 10.N.2.2/24
//! ```
//!
//! Links are numbered 1 and 2 (link L is subnet `10.N.L.0/24`). Each
//! direction of each link is shaped by a token bucket (`tc qdisc replace dev
//! X root tbf rate R burst B limit Q`) on the egress of both ends: data
//! flows sender to receiver, chunk requests and ACKs the other way, and both
//! see a link of the same rate. See [`shaping`] for B and Q, and
//! `docs/testbed.md`.
//!
//! The agents run under `nsenter --net=/run/netns/NAME`, which switches only
//! the network namespace: their folders and local API sockets are ordinary
//! paths, so `gtc put/get/status` of the test process reach them as for any
//! [`Agent`]. The sender advertises `10.N.1.1:7420` and `10.N.2.1:7420` (or
//! only the links asked for), so its tickets carry one hint per path.
//!
//! Names: namespaces `dotbed-PID-K-s` / `dotbed-PID-K-r` (test process id,
//! per-process counter K), so parallel tests and test binaries never
//! collide. The veths are created directly inside the namespaces (`ip link
//! add name s1 netns S type veth peer name r1 netns R`), so no name ever
//! exists in the root namespace. N is derived from the PID and K, so beds of
//! one process never share a subnet (the namespaces isolate them anyway).
//!
//! Cleanup: dropping the bed (also on a panic) kills both agents and deletes
//! both namespaces, which destroys the veths and their qdiscs. A new bed
//! first removes beds left by test processes that no longer exist (killed
//! by SIGKILL, so no Drop ran), with the agents still running inside them.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Agent;

/// The peer port of both agents (every bed has its own namespaces, so all
/// use the same one).
pub const PORT: u16 = 7420;

/// The two links, by number.
pub const LINKS: [usize; 2] = [1, 2];

/// Prefix of every namespace a bed creates.
const PREFIX: &str = "dotbed-";

/// How long one `ip`/`tc` command may take.
const TOOL_LIMIT: Duration = Duration::from_secs(30);

/// A link rate, in kbit/s (1000 bit/s, as `tc` counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    kbit: u64,
}

impl Rate {
    /// `k` kbit/s (at least 1).
    pub const fn kbit(k: u64) -> Rate {
        assert!(k > 0, "a rate of 0");
        Rate { kbit: k }
    }

    /// `m` Mbit/s.
    pub const fn mbit(m: u64) -> Rate {
        Rate::kbit(m * 1000)
    }

    /// The rate in kbit/s.
    pub const fn kbit_per_s(self) -> u64 {
        self.kbit
    }

    /// The rate in bytes per second.
    pub const fn bytes_per_s(self) -> u64 {
        self.kbit * 1000 / 8
    }

    /// Seconds `bytes` take at this rate (payload only, no headers).
    pub fn seconds_for(self, bytes: u64) -> f64 {
        bytes as f64 / self.bytes_per_s() as f64
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}kbit", self.kbit)
    }
}

/// Token-bucket parameters for one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaping {
    /// Bucket size in bytes (`burst`).
    pub burst: u64,
    /// Bytes that may wait in the queue, bucket included (`limit`).
    pub limit: u64,
}

/// A full Ethernet frame (1500 bytes of IP plus the 14-byte header) as tbf
/// counts it.
const FRAME: u64 = 1514;

/// The shaping of a link of `rate`, chosen to hold for 100 kbit/s to
/// 100 Mbit/s:
///
/// - `burst` = 4 ms of the rate, at least two full frames. A bucket must hold
///   at least one frame or nothing passes; with only a frame or two at high
///   rates the qdisc's timer would have to fire every 120 µs (100 Mbit/s) and
///   its slack would cost throughput. 4 ms (50 KB at 100 Mbit/s) is
///   timer-proof, and the extra burst it allows once is 4 ms of transfer.
///   Below 6 Mbit/s the two-frame floor rules.
/// - `limit` = `burst` + 100 ms of the rate, at least four full frames. A
///   queue of 100 ms keeps TCP at line rate (one bandwidth-delay product at
///   the bed's sub-millisecond base RTT is far less) and is a realistic
///   router buffer; the floor of four frames keeps the slowest links (100
///   kbit/s: 100 ms is 1250 bytes, less than one frame) from dropping every
///   burst of two packets.
pub fn shaping(rate: Rate) -> Shaping {
    let bps = rate.bytes_per_s();
    let burst = (bps / 250).max(2 * FRAME);
    let limit = burst + (bps / 10).max(4 * FRAME);
    Shaping { burst, limit }
}

static BEDS: AtomicU64 = AtomicU64::new(0);

/// The two namespaces of a bed; deleting them removes everything made in
/// them. Dropped after the agents (see the field order of [`NetBed`]).
struct Namespaces {
    sender: String,
    receiver: String,
    /// The ones created so far (a half-built bed removes what it made).
    made: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.made.drain(..).rev() {
            if let Err(e) = try_tool(&["ip", "netns", "del", &ns]) {
                eprintln!("netbed: could not delete namespace {ns}: {e}");
            }
        }
    }
}

/// Two namespaces, two shaped links, an agent in each namespace. See the
/// module documentation.
pub struct NetBed {
    // Field order is drop order: the agents die before their namespaces go.
    /// The agent in the sender namespace (it puts; its tickets carry one
    /// hint per advertised link).
    pub sender: Agent,
    /// The agent in the receiver namespace (it gets).
    pub receiver: Agent,
    rates: [Rate; 2],
    n: u8,
    ns: Namespaces,
}

impl NetBed {
    /// A bed whose links have `rates` (link 1, link 2); the sender
    /// advertises both links.
    pub fn new(rates: [Rate; 2]) -> NetBed {
        NetBed::with_advertised(rates, &LINKS)
    }

    /// A bed whose sender advertises only `links` (e.g. `&[1]` for a
    /// single-path baseline: its tickets then carry only link 1's address).
    pub fn with_advertised(rates: [Rate; 2], links: &[usize]) -> NetBed {
        remove_stale_beds();
        let pid = std::process::id();
        let k = BEDS.fetch_add(1, Ordering::Relaxed);
        // Distinct for up to 250 beds of one process.
        let n = 1 + ((u64::from(pid) * 64 + k) % 250) as u8;
        let mut ns = Namespaces {
            sender: format!("{PREFIX}{pid}-{k}-s"),
            receiver: format!("{PREFIX}{pid}-{k}-r"),
            made: Vec::new(),
        };
        for name in [ns.sender.clone(), ns.receiver.clone()] {
            tool(&["ip", "netns", "add", &name]);
            ns.made.push(name.clone());
            tool(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        }
        let (s, r) = (ns.sender.clone(), ns.receiver.clone());
        for link in LINKS {
            let (si, ri) = (sender_if(link), receiver_if(link));
            tool(&[
                "ip", "link", "add", "name", &si, "netns", &s, "type", "veth", "peer", "name", &ri,
                "netns", &r,
            ]);
            for (name, ifname, host) in [(&s, &si, 1), (&r, &ri, 2)] {
                let addr = format!("10.{n}.{link}.{host}/24");
                tool(&["ip", "-n", name, "addr", "add", &addr, "dev", ifname]);
                shape(name, ifname, rates[link - 1]);
                tool(&["ip", "-n", name, "link", "set", ifname, "up"]);
            }
        }
        let listen = format!("0.0.0.0:{PORT}");
        let sender = Agent::start_in_netns(&s, &listen, &str_refs(&advertise_args(n, links)));
        let receiver = Agent::start_in_netns(&r, &listen, &[]);
        NetBed {
            sender,
            receiver,
            rates,
            n,
            ns,
        }
    }

    /// The sender namespace's name (for `ip -n`).
    pub fn sender_ns(&self) -> &str {
        &self.ns.sender
    }

    /// The receiver namespace's name.
    pub fn receiver_ns(&self) -> &str {
        &self.ns.receiver
    }

    /// The sender's address on `link`, `10.N.LINK.1`.
    pub fn sender_addr(&self, link: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n, check_link(link) as u8, 1)
    }

    /// The receiver's address on `link`, `10.N.LINK.2`.
    pub fn receiver_addr(&self, link: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n, check_link(link) as u8, 2)
    }

    /// The sender agent's peer address on `link`.
    pub fn sender_peer(&self, link: usize) -> SocketAddr {
        SocketAddr::from((self.sender_addr(link), PORT))
    }

    /// The hint `gtc://ADDR` naming the sender on `link` (for `gtc get
    /// --hint`).
    pub fn sender_hint(&self, link: usize) -> String {
        format!("gtc://{}", self.sender_peer(link))
    }

    /// The current rate of `link`.
    pub fn rate(&self, link: usize) -> Rate {
        self.rates[check_link(link) - 1]
    }

    /// Reshapes both directions of `link` (takes effect at once, also
    /// during a transfer).
    pub fn set_rate(&mut self, link: usize, rate: Rate) {
        check_link(link);
        shape(&self.ns.sender, &sender_if(link), rate);
        shape(&self.ns.receiver, &receiver_if(link), rate);
        self.rates[link - 1] = rate;
    }

    /// Takes `link` down at both ends: its routes go, packets on it are
    /// dropped, connections over it stall (they are not reset).
    pub fn link_down(&self, link: usize) {
        self.set_link(link, "down");
    }

    /// Brings `link` back up (addresses, routes and shaping return).
    pub fn link_up(&self, link: usize) {
        self.set_link(link, "up");
    }

    fn set_link(&self, link: usize, state: &str) {
        check_link(link);
        tool(&[
            "ip",
            "-n",
            &self.ns.sender,
            "link",
            "set",
            &sender_if(link),
            state,
        ]);
        tool(&[
            "ip",
            "-n",
            &self.ns.receiver,
            "link",
            "set",
            &receiver_if(link),
            state,
        ]);
    }

    /// Bytes the sender's end of `link` has transmitted (interface counter:
    /// frames with their Ethernet, IP and TCP headers).
    pub fn tx_bytes(&self, link: usize) -> u64 {
        check_link(link);
        let out = tool(&[
            "ip",
            "-n",
            &self.ns.sender,
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &sender_if(link),
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j is JSON");
        v[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx bytes in {out}"))
    }

    /// Restarts the sender on the same store, now advertising only `links`
    /// (tickets of later puts carry those hints; a put of an unchanged file
    /// is answered from the store's file cache).
    pub fn restart_sender(&mut self, links: &[usize]) {
        self.sender.stop();
        let mut extra = advertise_args(self.n, links);
        extra.push("--no-mount".to_owned());
        self.sender.extra = extra;
        self.sender.restart();
    }

    /// Restarts the receiver on an empty store (a cold receiver).
    pub fn restart_receiver_cold(&mut self) {
        self.receiver.stop();
        let data = self.receiver.dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data).expect("remove the receiver's store");
        }
        self.receiver.restart();
    }
}

/// The sender's interface on `link`.
fn sender_if(link: usize) -> String {
    format!("s{link}")
}

/// The receiver's interface on `link`.
fn receiver_if(link: usize) -> String {
    format!("r{link}")
}

fn check_link(link: usize) -> usize {
    assert!(LINKS.contains(&link), "links are 1 and 2, not {link}");
    link
}

fn advertise_args(n: u8, links: &[usize]) -> Vec<String> {
    assert!(!links.is_empty(), "advertise at least one link");
    links
        .iter()
        .flat_map(|&l| {
            [
                "--advertise".to_owned(),
                format!("10.{n}.{}.1:{PORT}", check_link(l)),
            ]
        })
        .collect()
}

fn str_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `tc qdisc replace ... tbf` on `ifname`'s egress in namespace `ns`.
fn shape(ns: &str, ifname: &str, rate: Rate) {
    let Shaping { burst, limit } = shaping(rate);
    tool(&[
        "tc",
        "-n",
        ns,
        "qdisc",
        "replace",
        "dev",
        ifname,
        "root",
        "tbf",
        "rate",
        &rate.to_string(),
        "burst",
        &burst.to_string(),
        "limit",
        &limit.to_string(),
    ]);
}

/// [`crate::try_tool`] within this module's limit.
fn try_tool(args: &[&str]) -> Result<String, String> {
    crate::try_tool(args, TOOL_LIMIT)
}

/// [`try_tool`], panicking on failure.
fn tool(args: &[&str]) -> String {
    try_tool(args).unwrap_or_else(|e| panic!("netbed: {e}"))
}

/// Deletes the namespaces of beds whose test process is gone (it was
/// killed, so its Drop never ran), SIGKILLing what still runs in them
/// (agents that bed started).
fn remove_stale_beds() {
    let Ok(list) = try_tool(&["ip", "netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue; // its test process still runs (and cleans up itself)
        }
        if let Ok(pids) = try_tool(&["ip", "netns", "pids", name]) {
            for p in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on a process inside a dead test's bed.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        eprintln!("netbed: removing namespace {name} left by dead test process {pid}");
        let _ = try_tool(&["ip", "netns", "del", name]);
    }
}
