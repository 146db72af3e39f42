//! The end-to-end test harness: real `gtc` agent processes on temporary
//! folders and loopback ports, test data, and peer doubles that speak the
//! gtc protocol (one that lies about a chunk, one that is slow), a network
//! test bed of two shaped paths between two namespaces ([`netbed`]), USB
//! keys on loop devices ([`key`]), a raw TLS link to an agent's peer port
//! for attacks ([`link`]), and a recording relay and a man in the middle
//! for the peer link ([`relay`]), and private Postfix instances with `gtc
//! smtp` gateways and a public mail corpus ([`mail`]).
//!
//! Every process, folder, namespace, mount and loop device a test makes is
//! removed when its handle drops, also when the test fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod folders;
pub mod key;
pub mod link;
pub mod mail;
pub mod netbed;
pub mod nginx;
pub mod peer;
pub mod relay;
pub mod seaweed;

/// The `gtc` binary under test: `$GTC_BIN`, else the one cargo built next
/// to this test (building it if needed).
pub fn gtc_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GTC_BIN") {
        return PathBuf::from(p);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/<test> -> target/<profile>/gtc
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>");
            let bin = profile_dir.join("gtc");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            // Always ask cargo: it rebuilds only if the sources changed. With
            // the workspace's test targets, features resolve as under
            // `cargo test --workspace`, so after it this is a no-op (a
            // `-p dot-agent` build would relink gtc with other features).
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-q", "--workspace", "--all-targets"]);
            if release {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(st.success(), "building gtc failed");
            assert!(bin.exists(), "no gtc at {}", bin.display());
            bin
        })
        .clone()
}

/// A running `gtc agent` on its own folder, socket and loopback port.
/// Killed (SIGKILL) on drop if still running.
pub struct Agent {
    child: Option<Child>,
    /// The agent's folder (store in `data/`, socket `gtc.sock`).
    pub dir: PathBuf,
    /// Its FUSE mount, if started with one.
    pub mount: Option<PathBuf>,
    /// Its peer address.
    pub peer: SocketAddr,
    /// The line it printed once ready (`gtc agent: ready peer=...`).
    pub ready_line: String,
    extra: Vec<String>,
    /// Command the agent runs under (`nsenter --net=...`), empty for none.
    prefix: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Agent {
    /// Starts an agent on a new temporary folder.
    pub fn start() -> Agent {
        Agent::start_with(&[])
    }

    /// Starts an agent with extra `gtc agent` flags.
    pub fn start_with(extra: &[&str]) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let mount = extra
            .iter()
            .position(|a| *a == "--mount")
            .and_then(|i| extra.get(i + 1))
            .map(PathBuf::from);
        let mut extra: Vec<&str> = extra.to_vec();
        if mount.is_none() {
            extra.push("--no-mount");
        }
        let mut a = Agent {
            child: None,
            dir,
            mount,
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready_line: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            prefix: Vec::new(),
            _tmp: Some(tmp),
        };
        a.spawn("127.0.0.1:0");
        a
    }

    /// Starts an agent (no mount) with `vars` added to its environment
    /// (credentials a source reads, say).
    pub fn start_with_env(vars: &[(&str, String)]) -> Agent {
        let env = find_tool("env").expect("env");
        let prefix = std::iter::once(env.to_string_lossy().into_owned())
            .chain(vars.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        Agent::start_under(prefix, "127.0.0.1:0", &[])
    }

    /// Starts an agent (no mount) inside the network namespace `netns`
    /// (`/run/netns/NETNS`), listening for peers on `listen`, with extra
    /// `gtc agent` flags. Only the network namespace is switched (`nsenter
    /// --net`), so its folder and its local API socket are reachable from
    /// here as for any agent.
    pub fn start_in_netns(netns: &str, listen: &str, extra: &[&str]) -> Agent {
        let prefix = vec![
            find_tool("nsenter")
                .expect("nsenter")
                .to_string_lossy()
                .into_owned(),
            format!("--net=/run/netns/{netns}"),
        ];
        Agent::start_under(prefix, listen, extra)
    }

    /// Starts an agent (no mount) run under the command `prefix`,
    /// listening for peers on `listen`, with extra `gtc agent` flags.
    fn start_under(prefix: Vec<String>, listen: &str, extra: &[&str]) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut a = Agent {
            child: None,
            dir: tmp.path().to_owned(),
            mount: None,
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready_line: String::new(),
            extra: extra
                .iter()
                .map(|s| s.to_string())
                .chain(["--no-mount".to_owned()])
                .collect(),
            prefix,
            _tmp: Some(tmp),
        };
        a.spawn(listen);
        a
    }

    fn spawn(&mut self, listen: &str) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("agent log");
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(gtc_bin());
                c
            }
            None => Command::new(gtc_bin()),
        };
        let mut child = cmd
            .args(["agent", "--listen", listen, "--data-dir"])
            .arg(self.dir.join("data"))
            .arg("--socket")
            .arg(self.socket())
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start gtc agent");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read the ready line");
        assert!(
            line.starts_with("gtc agent: ready peer="),
            "unexpected first line {line:?}"
        );
        self.peer = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("peer="))
            .and_then(|p| p.parse().ok())
            .expect("peer address");
        self.ready_line = line;
        self.child = Some(child);
    }

    /// Starts an agent with its FUSE mount at `<its folder>/mnt` (and
    /// extra flags).
    pub fn start_mounted(extra: &[&str]) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mnt = tmp.path().join("mnt");
        let mut args = vec!["--mount".to_owned(), mnt.to_string_lossy().into_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Agent {
            child: None,
            dir: tmp.path().to_owned(),
            mount: Some(mnt),
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready_line: String::new(),
            extra: args,
            prefix: Vec::new(),
            _tmp: Some(tmp),
        };
        a.spawn("127.0.0.1:0");
        a
    }

    /// The mount point (panics if the agent has none).
    pub fn mnt(&self) -> &Path {
        self.mount
            .as_deref()
            .expect("agent started without a mount")
    }

    /// Where the agent's log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// The local API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("gtc.sock")
    }

    /// Its hint, `gtc://KEY@ADDR` (`gtc://ADDR` when its tickets name no
    /// key: `plain-peers`).
    pub fn hint(&self) -> String {
        match self.peer_key() {
            Some(key) => format!("gtc://{key}@{}", self.peer),
            None => format!("gtc://{}", self.peer),
        }
    }

    /// The peer key its hints name (from `gtc status`), if any.
    pub fn peer_key(&self) -> Option<String> {
        let st = self.status();
        let hint = st["hints"][0].as_str()?;
        let (key, _) = hint.strip_prefix("gtc://")?.split_once('@')?;
        Some(key.to_owned())
    }

    /// PID of the agent process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Runs `gtc ARGS` against this agent (killed, and the test failed,
    /// if it runs longer than [`COMMAND_LIMIT`]).
    pub fn gtc(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(gtc_bin());
        cmd.args(args).env("GTC_SOCKET", self.socket());
        output_within(cmd, COMMAND_LIMIT)
    }

    /// Runs `gtc ARGS` and asserts it succeeded; returns stdout.
    pub fn gtc_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.gtc(args);
        assert!(
            out.status.success(),
            "gtc {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `gtc put --json FILE`.
    pub fn put(&self, file: &Path) -> serde_json::Value {
        let out = self.gtc_ok(&["put", "--json", file.to_str().expect("utf-8 path")]);
        serde_json::from_slice(&out).expect("put --json is JSON")
    }

    /// The ticket of `gtc put FILE`.
    pub fn put_ticket(&self, file: &Path) -> String {
        self.put(file)["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned()
    }

    /// `gtc status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.gtc_ok(&["status", "--json"])).expect("status is JSON")
    }

    /// Chunk bytes this agent has served to peers.
    pub fn bytes_served(&self) -> u64 {
        self.status()["peers"]["bytes_sent"]
            .as_u64()
            .expect("bytes_sent")
    }

    /// Polls `gtc status` until `cond` holds (or panics after `limit`).
    pub fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            if cond(&self.status()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, and waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the agent again on the same folder and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the agent first");
        let listen = self.peer.to_string();
        self.spawn(&listen);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if let Some(m) = &self.mount {
            detach(m);
        }
        if std::thread::panicking() {
            // Shown with the failing test's output.
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- agent {} log (end) ---", self.peer);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Lazily unmounts `dir` if something is mounted there.
pub fn detach(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Privileged tests (FUSE, network namespaces, loop devices) are
/// `#[cfg_attr(not(privileged), ignore = "...")]`: the `privileged` cfg is
/// set by this crate's build script when it runs as root or under CI, so
/// elsewhere they show as ignored, with their reason, in the test summary.
/// Where they run, a missing capability fails them with a clear message:
/// they never pass without having run.
fn require(test: &str, what: &str, missing: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root && missing.is_empty(),
        "{test}: needs {what}, but here: {}",
        if root {
            format!("{} missing", missing.join(", "))
        } else {
            "not root".to_owned()
        }
    );
}

/// Fails the test unless it runs as root and nothing of `missing` (what
/// else it needs, said as `what`) is missing; see [`require`].
pub fn require_with(test: &str, what: &str, missing: &[&str]) {
    require(test, what, missing);
}

/// Fails the test unless it runs as root (it makes users, say); see
/// [`require`] for when it runs at all.
pub fn require_root(test: &str) {
    require(test, "root", &[]);
}

/// Fails the test unless FUSE mounts can be made here (root and
/// `/dev/fuse`); see [`require`] for when it runs at all.
pub fn require_fuse(test: &str) {
    let missing: Vec<&str> = ["/dev/fuse"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    require(test, "root and /dev/fuse", &missing);
}

/// Runs `args[0]` (found by [`find_tool`]) with `args[1..]` and no stdin,
/// killed after `limit`; its stdout, or the command and its stderr.
pub fn try_tool(args: &[&str], limit: Duration) -> Result<String, String> {
    let exe = find_tool(args[0]).ok_or_else(|| format!("{} not found", args[0]))?;
    let mut cmd = Command::new(exe);
    cmd.args(&args[1..]).stdin(Stdio::null());
    let out = output_within(cmd, limit);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Fails the test unless network namespaces with shaped veth links can be
/// built here (root, and `ip`, `tc` and `nsenter`; see [`netbed`]).
pub fn require_netns(test: &str) {
    let missing: Vec<&str> = ["ip", "tc", "nsenter"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    require(test, "root, ip, tc and nsenter", &missing);
}

/// Fails the test unless keys (loop devices) can be made here: root,
/// `/dev/loop-control`, and `losetup`, `mkfs.ext4`, `mount`, `umount`.
pub fn require_loop(test: &str) {
    let mut missing: Vec<&str> = ["losetup", "mkfs.ext4", "mount", "umount"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !Path::new("/dev/loop-control").exists() {
        missing.push("/dev/loop-control");
    }
    require(test, "root and loop devices", &missing);
}

/// Where the executable `tool` is: on the PATH, else in /usr/sbin or /sbin
/// (root's tools, missing from some users' PATH).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// How long one `gtc` command of a test may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` to completion with its output captured; kills it and panics
/// after `limit`, so a hang fails the test instead of stalling CI.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{cmd:?} ran longer than {limit:?}");
        }
    }
}

/// `n` pseudo-random bytes (xorshift from `seed`): random-looking, so
/// content-defined chunk boundaries exist to be found.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Writes a sparse file of `size` bytes: holes, with a random 64 KiB block
/// every `stride` bytes (so it costs little disk but has real content).
pub fn sparse_random_file(path: &Path, size: u64, stride: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).expect("create");
    f.set_len(size).expect("set_len");
    let mut at = 0;
    let mut seed = 1;
    while at < size {
        let block = random_bytes(64 << 10, seed);
        let n = block.len().min((size - at) as usize);
        f.write_all_at(&block[..n], at).expect("write");
        at += stride;
        seed += 1;
    }
}

/// Whether two files have the same bytes (streamed, for big files).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = match (std::fs::File::open(a), std::fs::File::open(b)) {
        (Ok(x), Ok(y)) => (x, y),
        _ => return false,
    };
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        n
    }
}

/// Fails the test with `what` and the command's stderr unless it succeeded.
pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gtc get TARGET -o OUT` against `agent`, killed after `limit`; its
/// output and wall time.
pub fn get_within(agent: &Agent, target: &str, out: &Path, limit: Duration) -> (Output, Duration) {
    let mut cmd = Command::new(gtc_bin());
    cmd.args(["get", target, "-o", out.to_str().expect("utf-8 path")])
        .env("GTC_SOCKET", agent.socket());
    let t0 = Instant::now();
    let got = output_within(cmd, limit);
    (got, t0.elapsed())
}

/// Writes `data` into `agent`'s folder as `name` and puts it; (file, OID,
/// ticket).
pub fn put_bytes(agent: &Agent, name: &str, data: &[u8]) -> (PathBuf, String, String) {
    let src = agent.dir.join(name);
    std::fs::write(&src, data).expect("write");
    let put = agent.put(&src);
    let field = |k: &str| put[k].as_str().expect(k).to_owned();
    (src, field("oid"), field("ticket"))
}
