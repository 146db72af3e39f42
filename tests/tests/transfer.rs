//! Two or three real agent processes on loopback moving objects by ticket.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dot_tests::peer::{Behaviour, PeerDouble};
use dot_tests::{
    Agent, COMMAND_LIMIT, gtc_bin, output_within, random_bytes, same_file, sparse_random_file,
};

/// What `gtc get --json` reported: on stdout when the data went to `-o`,
/// else on stderr.
fn stats(get: &std::process::Output) -> serde_json::Value {
    [&get.stdout, &get.stderr]
        .into_iter()
        .find_map(|out| {
            let text = String::from_utf8_lossy(out);
            let line = text.lines().last().unwrap_or_default().to_owned();
            serde_json::from_str(&line).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no stats JSON in {:?}",
                String::from_utf8_lossy(&get.stderr)
            )
        })
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn objects_of_every_size_move_by_ticket_and_a_second_get_fetches_nothing() {
    let (a, b) = (Agent::start(), Agent::start());
    // 16 KiB is the chunker's minimum: exactly one chunk.
    for (n, name) in [
        (0usize, "empty"),
        (1, "one"),
        (16 << 10, "one-chunk"),
        (100_000, "small"),
        (3_500_000, "multi"),
    ] {
        let src = a.dir.join(name);
        let data = random_bytes(n, n as u64 + 7);
        std::fs::write(&src, &data).expect("write");
        let put = a.put(&src);
        if name == "one-chunk" {
            assert_eq!(put["chunks"].as_u64(), Some(1));
        }
        let ticket = put["ticket"].as_str().expect("ticket");
        let dst = b.dir.join(format!("{name}.out"));
        let get = b.gtc(&["get", ticket, "-o", path(&dst), "--json"]);
        assert!(
            get.status.success(),
            "get {name}: {}",
            String::from_utf8_lossy(&get.stderr)
        );
        assert_eq!(std::fs::read(&dst).expect("read"), data, "{name}");
        assert_eq!(stats(&get)["from_peers"].as_u64(), Some(n as u64));
        // Again, to stdout: held locally now, nothing fetched.
        let again = b.gtc(&["get", ticket, "--json"]);
        assert!(again.status.success());
        assert_eq!(again.stdout, data, "{name}");
        assert_eq!(stats(&again)["from_peers"].as_u64(), Some(0));
    }
}

#[test]
fn a_sparse_random_gigabyte_moves_intact() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("big");
    let size = 1u64 << 30;
    sparse_random_file(&src, size, 1 << 20);
    let ticket = a.put_ticket(&src);
    let dst = b.dir.join("big.out");
    let get = b.gtc(&["get", &ticket, "-o", path(&dst), "--json"]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    let st = stats(&get);
    assert_eq!(st["size"].as_u64(), Some(size));
    assert!(same_file(&src, &dst), "the copy differs");
    // B also holds it, verified against the whole OID.
    b.wait_status("B to finish checking", Duration::from_secs(120), |s| {
        s["transfers"].as_array().is_some_and(|t| t.is_empty())
    });
    assert_eq!(b.status()["complete"].as_u64(), Some(1));
}

/// Many readers of one object at once (a mail gateway fetching messages
/// with the same body): those who join a fetch just started wait until it
/// has recorded the object, instead of finding no object ("the object left
/// the store").
#[test]
fn readers_who_join_a_fetch_just_started_all_get_the_object() {
    let (a, b) = (Agent::start(), Agent::start());
    for round in 0..5u64 {
        let src = a.dir.join(format!("obj{round}"));
        let data = random_bytes(3000, round);
        std::fs::write(&src, &data).expect("write");
        let ticket = a.put_ticket(&src);
        let gets: Vec<_> = (0..8)
            .map(|i| {
                let out = b.dir.join(format!("out{round}-{i}"));
                let mut cmd = Command::new(gtc_bin());
                cmd.env("GTC_SOCKET", b.socket())
                    .args(["get", &ticket, "-o", path(&out)])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                (cmd.spawn().expect("spawn get"), out)
            })
            .collect();
        for (child, out) in gets {
            let done = child.wait_with_output().expect("wait");
            assert!(
                done.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&done.stderr)
            );
            assert_eq!(std::fs::read(&out).expect("read"), data);
        }
    }
}

#[test]
fn a_get_fetches_only_the_chunks_the_receiver_lacks() {
    let (a, b) = (Agent::start(), Agent::start());
    let old = random_bytes(6_000_000, 3);
    let mut new = old.clone();
    new.splice(1_000..1_000, b"an edit near the start".iter().copied());
    std::fs::write(b.dir.join("old"), &old).expect("write");
    std::fs::write(a.dir.join("new"), &new).expect("write");
    b.put(&b.dir.join("old"));
    let put = a.put(&a.dir.join("new"));
    let chunks = put["chunks"].as_u64().expect("chunks");
    let get = b.gtc(&["get", put["ticket"].as_str().expect("ticket"), "--json"]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(get.stdout, new);
    let served = a.status()["peers"]["chunks_served"]
        .as_u64()
        .expect("served");
    assert!(
        (1..=3).contains(&served),
        "{served} of {chunks} chunks fetched for a small edit"
    );
    let st = stats(&get);
    assert_eq!(
        st["from_peers"].as_u64().expect("from_peers") + st["local"].as_u64().expect("local"),
        new.len() as u64
    );
    assert!(st["local"].as_u64().expect("local") > 5_000_000);
}

#[test]
fn a_wrong_token_is_refused_and_garbage_is_a_clear_error() {
    let (a, b) = (Agent::start(), Agent::start());
    let src = a.dir.join("secret");
    std::fs::write(&src, b"secret bytes").expect("write");
    let ticket: dot_store::Ticket = a.put_ticket(&src).parse().expect("ticket");
    let forged = dot_store::Ticket::new(
        ticket.oid(),
        Some(dot_store::Token([0; 16])),
        None,
        ticket.hints().to_vec(),
    )
    .with_key(ticket.key().expect("the ticket names the key"));
    let get = b.gtc(&["get", &forged.to_string(), "-o", "-"]);
    assert_eq!(get.status.code(), Some(3), "refused is exit code 3");
    assert!(
        String::from_utf8_lossy(&get.stderr)
            .contains("no such object here, or a wrong access token"),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(get.stdout.is_empty(), "bytes of a refused object came out");
    assert_eq!(a.status()["peers"]["refused"].as_u64(), Some(1));
    let bad = b.gtc(&["get", "dot1.not-a-ticket"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid ticket"));
    // A bare OID goes to the hints of the last ticket seen for it: here
    // the forged one, refused again.
    let seen = b.gtc(&["get", &ticket.oid().to_string()]);
    assert_eq!(seen.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&seen.stderr)
            .contains("no such object here, or a wrong access token"),
        "{}",
        String::from_utf8_lossy(&seen.stderr)
    );
    assert!(seen.stdout.is_empty(), "bytes of a refused object came out");
    // One never seen, with no peers configured: nowhere to ask.
    let never = dot_store::Oid::of(b"never put anywhere");
    let none = b.gtc(&["get", &never.to_string()]);
    assert_eq!(none.status.code(), Some(3), "nowhere to ask is not found");
    assert!(String::from_utf8_lossy(&none.stderr).contains("no source is known"));
}

#[test]
fn a_lying_peer_never_gets_a_wrong_byte_to_the_reader() {
    let (a, b) = (Agent::start(), Agent::start());
    let data = random_bytes(2_000_000, 5);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    let liar = PeerDouble::start(
        &[&data],
        Behaviour {
            corrupt: Some(4),
            ..Behaviour::default()
        },
    );
    // The liar alone: the get fails clearly, nothing is written.
    let dst = b.dir.join("out");
    let alone = b.gtc(&["get", &ticket, "--hint", &liar.hint(), "-o", path(&dst)]);
    assert!(!alone.status.success());
    let err = String::from_utf8_lossy(&alone.stderr);
    assert!(err.contains("chunk 4"), "{err}");
    assert!(!dst.exists(), "a failed get left its output");
    // The liar first, the honest agent second: the reader (in order, on
    // stdout) gets exactly the object.
    let liar_first = format!("{}?p=1", liar.hint());
    let honest = format!("{}?p=2", a.hint());
    let get = b.gtc(&["get", &ticket, "--hint", &liar_first, "--hint", &honest]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(get.stdout == data, "wrong bytes reached the reader");
    assert!(liar.counters.chunks() > 4, "the liar was never asked");
    assert!(a.bytes_served() > 0, "the honest peer was never asked");
}

#[test]
fn a_killed_receiver_resumes_without_refetching_what_it_had() {
    let (a, mut b) = (Agent::start(), Agent::start());
    let data = random_bytes(16 << 20, 9);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    // A slow source, so B can be killed in the middle.
    let slow = PeerDouble::start(
        &[&data],
        Behaviour {
            delay: Duration::from_millis(8),
            ..Behaviour::default()
        },
    );
    let mut get = Command::new(gtc_bin())
        .args(["get", &ticket, "--hint", &slow.hint(), "-o"])
        .arg(b.dir.join("first.out"))
        .env("GTC_SOCKET", b.socket())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gtc get");
    let third = data.len() as u64 / 3;
    b.wait_status("a third of the object", Duration::from_secs(60), |s| {
        s["transfers"][0]["from_peers"]
            .as_u64()
            .is_some_and(|n| n >= third)
    });
    b.kill();
    assert!(!get.wait().expect("wait").success());
    b.restart();
    let dst = b.dir.join("out");
    let again = b.gtc(&["get", &ticket, "-o", path(&dst), "--json"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(std::fs::read(&dst).expect("read") == data, "wrong bytes");
    let st = stats(&again);
    let local = st["local"].as_u64().expect("local");
    let fetched = st["from_peers"].as_u64().expect("from_peers");
    assert!(
        local >= third,
        "kept only {local} of the {third}+ bytes it had"
    );
    assert_eq!(local + fetched, data.len() as u64);
    assert_eq!(a.bytes_served(), fetched, "A sent more than was missing");
}

#[test]
fn gtc_cp_copies_between_agents_over_rsh_keeping_mode_and_mtime() {
    let (a, b) = (Agent::start(), Agent::start());
    // A stand-in for ssh: `rsh HOST COMMAND` runs COMMAND by the shell
    // against the agent of host `a` or `b`.
    let rsh = a.dir.join("fake-ssh");
    std::fs::write(
        &rsh,
        format!(
            "#!/bin/sh\ncase ${{1#*@}} in\n a) s='{}';;\n b) s='{}';;\n *) echo \"no host $1\" >&2; exit 255;;\nesac\nshift\nGTC_SOCKET=$s exec sh -c \"$*\"\n",
            path(&a.socket()),
            path(&b.socket())
        ),
    )
    .expect("write rsh");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rsh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let data = random_bytes(700_000, 13);
    let src = a.dir.join("report it's.bin");
    std::fs::write(&src, &data).expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(&src)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");
    let out_dir = b.dir.join("inbox");
    std::fs::create_dir(&out_dir).expect("mkdir");
    // Remote to remote: both sides through the fake ssh.
    let mut cmd = Command::new(gtc_bin());
    cmd.args([
        "cp",
        "--rsh",
        path(&rsh),
        "--remote-gtc",
        gtc_bin().to_str().expect("utf-8"),
        &format!("a:{}", path(&src)),
        &format!("root@b:{}/", path(&out_dir)),
    ]);
    let cp = output_within(cmd, COMMAND_LIMIT);
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let dst = out_dir.join("report it's.bin");
    assert_eq!(std::fs::read(&dst).expect("read"), data);
    let meta = std::fs::metadata(&dst).expect("meta");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    }
    assert_eq!(meta.modified().expect("mtime"), mtime);
    assert!(
        a.bytes_served() >= data.len() as u64,
        "bytes did not go agent to agent"
    );
    // Local source to a local path, talking to one agent directly.
    let dst2 = b.dir.join("copy2");
    let mut cmd = Command::new(gtc_bin());
    cmd.args(["cp", "--socket", path(&b.socket()), path(&src), path(&dst2)]);
    let cp = output_within(cmd, COMMAND_LIMIT);
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    assert_eq!(std::fs::read(&dst2).expect("read"), data);
    assert_eq!(
        std::fs::metadata(&dst2)
            .and_then(|m| m.modified())
            .expect("mtime"),
        mtime
    );
}

#[test]
fn an_agent_whose_store_holds_a_file_cut_short_starts_and_refetches_what_it_lacks() {
    let a = Agent::start();
    let data = random_bytes(6 << 20, 21);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    let oid = ticket
        .parse::<dot_store::Ticket>()
        .expect("ticket")
        .oid()
        .hex();
    let conf = tempfile::tempdir().expect("tempdir");
    let not_durable = conf.path().join("not-durable.toml");
    std::fs::write(&not_durable, "durable = false\n").expect("write config");
    // Durable (the default) and stopped cleanly; not durable and killed,
    // so the start also re-verifies what was written before the kill.
    for durable in [true, false] {
        let flags: Vec<&str> = if durable {
            Vec::new()
        } else {
            vec!["--config", path(&not_durable)]
        };
        let mut b = Agent::start_with(&flags);
        let first = b.gtc(&["get", &ticket, "-o", path(&b.dir.join("first.out"))]);
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        b.wait_status("B to finish checking", Duration::from_secs(60), |s| {
            s["transfers"].as_array().is_some_and(|t| t.is_empty()) && s["complete"] == 1
        });
        if durable {
            assert!(b.stop().success());
        } else {
            b.kill();
        }
        // A power cut left the object's file short, in the middle of a chunk.
        let cut = data.len() as u64 / 2 + 12_345;
        std::fs::File::options()
            .write(true)
            .open(b.dir.join("data/objects").join(&oid[..2]).join(&oid))
            .and_then(|f| f.set_len(cut))
            .expect("cut the object file short");
        b.restart();
        let log = std::fs::read_to_string(b.log_path()).expect("log");
        assert!(
            log.contains("object file is shorter than the object"),
            "durable={durable}: no log line for the short file"
        );
        let st = b.status();
        assert_eq!(st["objects"], 1, "durable={durable}: {st}");
        assert_eq!(st["complete"], 0, "durable={durable}: {st}");
        let served = a.bytes_served();
        let dst = b.dir.join("out");
        let get = b.gtc(&["get", &ticket, "-o", path(&dst), "--json"]);
        assert!(
            get.status.success(),
            "durable={durable}: {}",
            String::from_utf8_lossy(&get.stderr)
        );
        assert!(std::fs::read(&dst).expect("read") == data, "wrong bytes");
        let st = stats(&get);
        let local = st["local"].as_u64().expect("local");
        let fetched = st["from_peers"].as_u64().expect("from_peers");
        assert_eq!(local + fetched, data.len() as u64);
        // Everything before the cut's chunk was kept; only the rest moved.
        assert!(
            local > cut - (256 << 10) && local <= cut,
            "durable={durable}: kept {local} bytes of the {cut} the file held"
        );
        assert_eq!(a.bytes_served() - served, fetched, "durable={durable}");
        b.wait_status("B to complete it again", Duration::from_secs(60), |s| {
            s["transfers"].as_array().is_some_and(|t| t.is_empty()) && s["complete"] == 1
        });
    }
}
