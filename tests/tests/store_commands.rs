//! `gtc ls` and `gtc rm` against a real agent: what the store holds, and
//! dropping objects, never one a client holds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dot_tests::{Agent, COMMAND_LIMIT, gtc_bin, output_within, put_bytes, random_bytes};

fn listed(a: &Agent) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_slice(&a.gtc_ok(&["ls", "--json"])).expect("ls --json is JSON");
    v.as_array().expect("an array").clone()
}

fn entry(a: &Agent, oid: &str) -> Option<serde_json::Value> {
    listed(a).into_iter().find(|o| o["oid"] == oid)
}

/// Waits (up to 30 s) until `oid`'s holders are `want`.
fn wait_pins(a: &Agent, oid: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pins = entry(a, oid).and_then(|o| o["pins"].as_u64());
        if pins == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{oid} held by {pins:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ls_shows_what_the_store_holds_and_rm_drops_it_unless_a_client_holds_it() {
    let a = Agent::start();
    // One object the store owns (a stream put), one put by reference.
    let owned = random_bytes(3 << 20, 901);
    let src = a.dir.join("owned");
    std::fs::write(&src, &owned).expect("write");
    let put = output_within(
        {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "'{}' put --json - < '{}'",
                    gtc_bin().display(),
                    src.display()
                ))
                .env("GTC_SOCKET", a.socket());
            c
        },
        COMMAND_LIMIT,
    );
    assert!(put.status.success(), "{put:?}");
    let put: serde_json::Value = serde_json::from_slice(&put.stdout).expect("JSON");
    let owned_oid = put["oid"].as_str().expect("oid").to_owned();
    let (file, by_ref, _) = put_bytes(&a, "by-ref", &random_bytes(100_000, 902));

    let all = listed(&a);
    assert_eq!(all.len(), 2, "{all:?}");
    let o = entry(&a, &owned_oid).expect("listed");
    assert_eq!(
        (o["size"].as_u64(), o["state"].as_str()),
        (Some(3 << 20), Some("complete"))
    );
    assert!(o.get("referenced").is_none(), "{o}");
    let r = entry(&a, &by_ref).expect("listed");
    assert_eq!(
        r["referenced"].as_str(),
        Some(file.to_str().expect("utf-8"))
    );
    let text = String::from_utf8(a.gtc_ok(&["ls"])).expect("utf-8");
    assert!(
        text.contains(&owned_oid) && text.contains("3145728 bytes  complete"),
        "{text}"
    );

    // A reader holds the owned object: a get whose output nobody reads.
    let mut reader = Command::new(gtc_bin())
        .args(["get", &owned_oid, "-o", "-"])
        .env("GTC_SOCKET", a.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn get");
    wait_pins(&a, &owned_oid, 1);
    let held = a.gtc(&["rm", &owned_oid]);
    assert!(!held.status.success(), "a held object was removed");
    let err = String::from_utf8_lossy(&held.stderr);
    assert!(err.contains("held by a client"), "{err}");
    assert!(entry(&a, &owned_oid).is_some());
    reader.kill().expect("kill");
    reader.wait().expect("wait");
    wait_pins(&a, &owned_oid, 0);

    // Now both go; the referenced file stays where it is.
    let out = String::from_utf8(a.gtc_ok(&["rm", &owned_oid, &by_ref])).expect("utf-8");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(listed(&a).is_empty());
    assert!(file.exists(), "rm deleted a file put by reference");
    // The object is gone for good: a get by OID finds nothing here.
    assert_eq!(
        a.gtc(&["get", &owned_oid, "-o", "-"]).status.code(),
        Some(3)
    );

    // Bad input: a clear line and a non-zero exit, nothing removed.
    let (_, kept, _) = put_bytes(&a, "kept", b"kept");
    for bad in ["not-an-oid", &owned_oid] {
        let out = a.gtc(&["rm", bad]);
        assert!(!out.status.success(), "rm {bad} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_eq!(
        a.gtc(&["rm", &owned_oid]).status.code(),
        Some(3),
        "not held: exit 3"
    );
    assert!(entry(&a, &kept).is_some());
}

#[test]
fn verify_finds_damaged_bytes_and_the_next_get_fetches_them_again() {
    let (a, b) = (Agent::start(), Agent::start());
    let data = random_bytes(1 << 20, 903);
    let (_, oid, ticket) = put_bytes(&a, "src", &data);
    let copy = b.dir.join("copy");
    b.gtc_ok(&["get", &ticket, "-o", copy.to_str().expect("utf-8")]);
    let clean: serde_json::Value =
        serde_json::from_slice(&b.gtc_ok(&["verify", "--json"])).expect("JSON");
    assert_eq!(clean["objects"], 1, "{clean}");
    assert_eq!(clean["bytes"], 1 << 20, "{clean}");
    assert!(clean["damaged_chunks"].as_array().expect("list").is_empty());

    // A few bytes of B's copy go bad on disk.
    let hex = oid.strip_prefix("dot1-sha256-").expect("an OID");
    let file = b.dir.join("data/objects").join(&hex[..2]).join(hex);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("the store's file");
        f.write_all_at(b"damage", 100).expect("write");
    }
    let found = b.gtc(&["verify", &oid]);
    assert_eq!(found.status.code(), Some(5), "{found:?}");
    let said = String::from_utf8_lossy(&found.stdout);
    assert!(said.contains("chunk 0 damaged"), "{said}");
    let o = entry(&b, &oid).expect("still listed");
    assert_eq!(o["state"], "partial", "{o}");

    // The next get takes the lost chunk from A again, and only it.
    let before = a.bytes_served();
    let again = b.dir.join("again");
    b.gtc_ok(&["get", &ticket, "-o", again.to_str().expect("utf-8")]);
    assert!(
        std::fs::read(&again).expect("read") == data,
        "the copy differs"
    );
    let fetched = a.bytes_served() - before;
    assert!(
        fetched > 0 && fetched < 300_000,
        "the get fetched {fetched} bytes again"
    );
    b.gtc_ok(&["verify"]);
    // An OID the store does not hold: exit 3, one line.
    let unknown = format!("dot1-sha256-{}", "0".repeat(64));
    let out = b.gtc(&["verify", &unknown]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}
