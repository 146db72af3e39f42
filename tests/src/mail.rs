//! Mail test bed: private Postfix instances (`tests/mail/postfix-instance.sh`),
//! `gtc smtp` gateways as processes, the SpamAssassin corpus
//! (`tests/mail/fetch-corpus.sh`) and its delivery check
//! (`tests/mail/corpus.py verify`). Every instance and gateway is stopped
//! when its handle drops, also when the test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_tool, gtc_bin, output_within};

fn mail_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mail")
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Fails the test unless Postfix, npm (or a cached corpus) and python3
/// are here, and it runs as root.
pub fn require_postfix(test: &str) {
    let mut missing: Vec<&str> = ["postfix", "python3", "runuser", "ss"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if find_tool("npm").is_none() {
        missing.push("npm");
    }
    crate::require_with(test, "root, Postfix, python3 and npm", &missing);
}

/// A folder the Postfix instances and mail live in: 0755 all the way, as
/// virtual(8) writes Maildirs as `nobody`.
pub fn mail_tmp() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::Builder::new()
        .prefix("dot-mail-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    t
}

/// A private Postfix instance under one folder, on one loopback port.
pub struct Postfix {
    /// Its folder.
    pub dir: PathBuf,
    /// Its SMTP port.
    pub port: u16,
}

fn script(args: &[&str], limit: Duration) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(mail_dir().join("postfix-instance.sh"))
        .args(args)
        .stdin(Stdio::null());
    let out = output_within(cmd, limit);
    assert!(
        out.status.success(),
        "postfix-instance.sh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postfix {
    /// Starts an instance in `dir` on `port`, relaying other domains to
    /// `relay` if given. Returns once it listens.
    pub fn start(dir: &Path, port: u16, relay: Option<SocketAddr>) -> Postfix {
        let mut args = vec![
            "start".to_owned(),
            dir.display().to_string(),
            port.to_string(),
        ];
        if let Some(r) = relay {
            args.push(r.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        script(&args, Duration::from_secs(60));
        Postfix {
            dir: dir.to_owned(),
            port,
        }
    }

    /// Submits each file as one message from `from` to `to` (one SMTP
    /// session); every one must be accepted.
    pub fn send(&self, from: &str, to: &str, files: &[PathBuf]) {
        let mut args = vec![
            "send".to_owned(),
            self.dir.display().to_string(),
            from.to_owned(),
            to.to_owned(),
        ];
        args.extend(files.iter().map(|f| f.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        script(&args, Duration::from_secs(120));
    }

    /// Messages delivered into its Maildirs.
    pub fn count(&self) -> usize {
        let d = self.dir.display().to_string();
        script(&["count", &d], Duration::from_secs(30))
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Messages still in its queue.
    pub fn queued(&self) -> usize {
        let d = self.dir.display().to_string();
        script(&["queued", &d], Duration::from_secs(30))
            .trim()
            .parse()
            .unwrap_or(usize::MAX)
    }

    /// Waits until `n` messages were delivered, or fails after `limit`
    /// showing the log.
    pub fn wait_count(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        loop {
            let c = self.count();
            if c >= n {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "{} has {c} of {n} messages after {limit:?}; log:\n{}",
                    self.dir.display(),
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The Maildir of the catch-all mailbox.
    pub fn maildir(&self, label: &str) -> PathBuf {
        self.dir.join("mail").join(label)
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let mut cmd = Command::new("bash");
        cmd.arg(mail_dir().join("postfix-instance.sh"))
            .args(["stop", &self.dir.display().to_string()])
            .stdin(Stdio::null());
        let _ = output_within(cmd, Duration::from_secs(40));
    }
}

/// A running `gtc smtp` gateway, killed on drop.
pub struct Gateway {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Gateway {
    /// Starts `gtc smtp SIDE --listen 127.0.0.1:PORT --to TO` with the
    /// agent socket `socket` and `extra` flags; returns once it listens.
    pub fn start(side: &str, to: SocketAddr, socket: &Path, log: &Path, extra: &[&str]) -> Gateway {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let err = std::fs::File::create(log).expect("gateway log");
        let child = Command::new(gtc_bin())
            .args([
                "smtp",
                side,
                "--listen",
                &addr.to_string(),
                "--to",
                &to.to_string(),
            ])
            .args(["--socket", &socket.display().to_string()])
            .args(["--name", &format!("gw{port}.dot.test")])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start gtc smtp");
        let g = Gateway {
            child,
            addr,
            log: log.to_owned(),
        };
        let start = Instant::now();
        while !g.log().contains("smtp gateway ready") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "gtc smtp did not start: {}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        g
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `what`.
    pub fn logged(&self, what: &str) -> usize {
        self.log().lines().filter(|l| l.contains(what)).count()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The corpus's messages in arrival order (fetched once into a cache).
pub fn corpus() -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(mail_dir().join("fetch-corpus.sh"))
        .stdin(Stdio::null());
    let out = output_within(cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "fetch-corpus.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Copies the corpus's messages `first..first + n` into `dir` (the "sent"
/// folder `verify` compares with); returns their paths.
pub fn pick(corpus: &Path, first: usize, n: usize, dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("mkdir");
    (first..first + n)
        .map(|i| {
            let name = format!("{i:05}.eml");
            let to = dir.join(&name);
            std::fs::copy(corpus.join(&name), &to).expect("copy a corpus message");
            to
        })
        .collect()
}

/// `corpus.py verify SENT MAILDIR`: every sent message delivered exactly
/// once, as Postfix would store it, and nothing else. Panics with its
/// report otherwise.
pub fn verify(sent: &Path, maildir: &Path) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(mail_dir().join("corpus.py"))
        .args(["verify"])
        .arg(sent)
        .arg(maildir)
        .stdin(Stdio::null());
    let out = output_within(cmd, Duration::from_secs(120));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "verify failed:\n{report}");
    report
}

/// A raw SMTP client for attack tests: send lines, read replies.
pub struct RawSmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawSmtp {
    /// Connects and reads the greeting (returned).
    pub fn connect(addr: SocketAddr) -> (RawSmtp, String) {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut raw = RawSmtp {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        };
        let greeting = raw.reply();
        (raw, greeting)
    }

    /// Sends `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends `line` and CRLF, and reads the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Reads one whole reply (all its lines), or "" at the end.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Whether the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}
