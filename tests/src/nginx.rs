//! A private nginx for the mirror tests: serves a folder on a loopback
//! port, with extra `location` blocks a test gives (errors, a proxy
//! cache), logging every request. Started in the foreground as a child of
//! the test and killed by its PID on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::find_tool;

/// A running nginx.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Nginx {
    /// Serves `root` at `http://ADDR/`, with `extra` inserted in the
    /// server block (e.g. `location /x/ { return 500; }`).
    pub fn serve(root: &Path, extra: &str) -> Nginx {
        Nginx::start("", &format!("    root {};\n{extra}", root.display()))
    }

    /// A caching proxy in front of `origin` (a base URL): every file it
    /// serves is kept (`proxy_cache`), and concurrent misses for one file
    /// make one request to the origin (`proxy_cache_lock`), as
    /// docs/mirrors.md advises.
    pub fn cache(origin: &str) -> Nginx {
        Nginx::start(
            "  proxy_cache_path {d}/cache levels=1:2 keys_zone=dot:10m max_size=4g inactive=1h use_temp_path=off;\n",
            &format!(
                "    location / {{\n      proxy_pass {origin};\n      proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n      proxy_cache dot;\n\
                 proxy_cache_valid 200 1h;\n      proxy_cache_lock on;\n\
                 proxy_cache_lock_timeout 60s;\n      proxy_cache_lock_age 60s;\n    }}\n"
            ),
        )
    }

    /// Starts nginx with `http` inserted in its http block (`{d}` there
    /// stands for its own folder) and `server` as its server block's body.
    fn start(http: &str, server: &str) -> Nginx {
        let exe = find_tool("nginx").expect("nginx (Debian package nginx)");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        // One process (no master to outlive a kill), as root: the test's
        // folders are private to root.
        let conf = format!(
            "master_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{http}\
             server {{\n    listen 127.0.0.1:{port};\n{server}\n  }}\n}}\n",
            http = http.replace("{d}", &d.to_string()),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new(exe)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let n = Nginx { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {addr}: {}",
                std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    /// Its base URL, ending in `/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The request lines of its access log so far (`GET /path HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.log().into_iter().map(|(r, _)| r).collect()
    }

    /// Body bytes it has sent, from its access log.
    pub fn bytes_sent(&self) -> u64 {
        self.log().into_iter().map(|(_, b)| b).sum()
    }

    /// Each request line of its access log with the body bytes sent
    /// (the combined format: `... "GET /p HTTP/1.1" 200 1234 ...`).
    fn log(&self) -> Vec<(String, u64)> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.split('"');
                let request = parts.nth(1)?.to_owned();
                let bytes = parts.next()?.split_whitespace().nth(1)?.parse().ok()?;
                Some((request, bytes))
            })
            .collect()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
