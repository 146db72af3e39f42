//! The local API through the client library, against a real agent:
//! stream puts, the three get modes, retention until `done` or disconnect.

use std::io::{Read, Write};
use std::time::Duration;

use dot_agent::api::GetMode;
use dot_agent::client::{AsyncClient, Client};
use dot_tests::peer::{Behaviour, PeerDouble};
use dot_tests::{Agent, random_bytes};

#[test]
fn a_stream_put_is_got_back_in_order_out_of_order_and_by_offset() {
    let a = Agent::start();
    let data = random_bytes(3_000_000, 21);
    let mut c = Client::connect(Some(&a.socket())).expect("connect");
    let mut put = c.put().expect("put");
    for piece in data.chunks(77_777) {
        put.write_all(piece).expect("write");
    }
    let r = put.commit().expect("commit");
    assert_eq!(r.size, data.len() as u64);
    assert!(r.chunks > 10);

    let mut got = Vec::new();
    let mut get = c.get(&r.ticket, &[]).expect("get");
    get.read_to_end(&mut got).expect("read");
    assert_eq!(get.stats().map(|s| s.local), Some(data.len() as u64));
    assert!(got == data, "in-order read differs");

    let mut assembled = vec![0u8; data.len()];
    let mut total = 0;
    for piece in c.get_out_of_order(&r.oid, &[]).expect("get") {
        let (at, bytes) = piece.expect("piece");
        assembled[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        total += bytes.len();
    }
    assert_eq!(total, data.len());
    assert!(assembled == data, "out-of-order pieces differ");

    let mut random = c.get_random(&r.oid, &[]).expect("get");
    let mut buf = vec![0u8; 10_000];
    for at in [2_999_999u64, 0, 1_234_567, 2_995_000] {
        let n = random.read_at(&mut buf, at).expect("read_at");
        let end = (at as usize + 10_000).min(data.len());
        assert_eq!(&buf[..n], &data[at as usize..end]);
    }
    assert_eq!(random.read_at(&mut buf, 3_000_000).expect("at end"), 0);
}

#[test]
fn objects_are_held_until_done_or_disconnect() {
    let a = Agent::start();
    let pinned = |a: &Agent| a.status()["pinned"].as_u64().expect("pinned");
    let mut c = Client::connect(Some(&a.socket())).expect("connect");
    let mut put = c.put().expect("put");
    put.write_all(b"kept while I am here").expect("write");
    let r = put.commit().expect("commit");
    assert_eq!(pinned(&a), 1);
    c.done(&r.oid).expect("done");
    assert_eq!(pinned(&a), 0);
    assert!(c.done(&r.oid).is_err(), "done twice");
    let mut put = c.put().expect("put");
    put.write_all(b"kept until I leave").expect("write");
    put.commit().expect("commit");
    assert_eq!(pinned(&a), 1);
    drop(c);
    a.wait_status("the pin to go", Duration::from_secs(10), |s| {
        s["pinned"].as_u64() == Some(0)
    });
    // A put abandoned mid-stream leaves nothing behind.
    let mut c = Client::connect(Some(&a.socket())).expect("connect");
    let mut put = c.put().expect("put");
    put.write_all(&random_bytes(2 << 20, 1)).expect("write");
    put.flush().expect("flush");
    drop(put);
    drop(c);
    // The status request is itself the one client left.
    a.wait_status("the client to go", Duration::from_secs(10), |s| {
        s["clients"].as_u64() == Some(1)
    });
    assert_eq!(a.status()["objects"].as_u64(), Some(2));
}

#[test]
fn reads_are_served_while_the_object_is_still_arriving() {
    let (a, b) = (Agent::start(), Agent::start());
    let data = random_bytes(8 << 20, 33);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    // About 2 s from this source: chunks trickle in.
    let slow = slow_source(&data, 15);
    let mut c = Client::connect(Some(&b.socket())).expect("connect");
    let mut get = c.get_random(&ticket, &[slow.hint()]).expect("get");
    let mut buf = vec![0u8; 4096];
    let n = get.read_at(&mut buf, 100).expect("read_at");
    assert_eq!(&buf[..n], &data[100..4196]);
    let st = b.status();
    assert_eq!(
        st["transfers"].as_array().map(Vec::len),
        Some(1),
        "the first bytes came only after the whole object: {st}"
    );
}

#[test]
fn the_async_client_puts_and_gets() {
    let a = Agent::start();
    let data = random_bytes(1_500_000, 44);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = AsyncClient::connect(Some(&a.socket()))
            .await
            .expect("connect");
        let mut put = c.put().await.expect("put");
        put.write(&data).await.expect("write");
        let r = put.commit().await.expect("commit");
        let mut got = vec![0u8; data.len()];
        let mut get = c
            .get(&r.ticket, &[], GetMode::OutOfOrder)
            .await
            .expect("get");
        while let Some((at, bytes)) = get.next_piece().await.expect("piece") {
            got[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        assert!(got == data);
        let mut get = c.get(&r.oid, &[], GetMode::Random).await.expect("get");
        let mut buf = [0u8; 100];
        let n = get.read_at(&mut buf, 1_000_000).await.expect("read_at");
        assert_eq!(&buf[..n], &data[1_000_000..1_000_100]);
    });
}

#[test]
fn gtc_put_reads_standard_input() {
    let a = Agent::start();
    let data = random_bytes(600_000, 55);
    let mut child = std::process::Command::new(dot_tests::gtc_bin())
        .args(["put", "-"])
        .env("GTC_SOCKET", a.socket())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gtc put -");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&data)
        .expect("feed");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let ticket = text.lines().last().expect("ticket");
    assert!(ticket.starts_with("dot1."));
    assert!(a.gtc_ok(&["get", ticket]) == data);
}

#[test]
fn a_file_put_by_reference_is_read_back_as_data_in_every_mode() {
    // The agent does not pass a referenced file's descriptor: it re-checks
    // each chunk and sends the bytes.
    let a = Agent::start();
    let data = random_bytes(3_300_000, 66);
    let src = a.dir.join("referenced");
    std::fs::write(&src, &data).expect("write");
    let oid = a.put(&src)["oid"].as_str().expect("oid").to_owned();
    let mut c = Client::connect(Some(&a.socket())).expect("connect");
    let mut got = Vec::new();
    c.get(&oid, &[])
        .expect("get")
        .read_to_end(&mut got)
        .expect("read");
    assert!(got == data, "in-order read differs");
    let mut n = 0;
    for piece in c.get_out_of_order(&oid, &[]).expect("get") {
        let (at, bytes) = piece.expect("piece");
        assert!(bytes[..] == data[at as usize..at as usize + bytes.len()]);
        n += bytes.len();
    }
    assert_eq!(n, data.len());
    let mut random = c.get_random(&oid, &[]).expect("get");
    let mut buf = vec![0u8; 2_500_000];
    let got = random.read_at(&mut buf, 1_000_000).expect("read_at");
    assert_eq!(got, 2_300_000);
    assert!(buf[..got] == data[1_000_000..]);
}

#[test]
fn an_agent_with_a_fetch_in_flight_stops_at_once() {
    let (a, mut b) = (Agent::start(), Agent::start());
    let data = random_bytes(8 << 20, 55);
    let src = a.dir.join("obj");
    std::fs::write(&src, &data).expect("write");
    let ticket = a.put_ticket(&src);
    // About 25 s from this source: the fetch is still running at the stop.
    let slow = slow_source(&data, 200);
    let mut c = Client::connect(Some(&b.socket())).expect("connect");
    let mut get = c.get_random(&ticket, &[slow.hint()]).expect("get");
    let mut buf = vec![0u8; 4096];
    get.read_at(&mut buf, 0).expect("read_at");
    let started = std::time::Instant::now();
    assert!(b.stop().success(), "the agent failed to stop cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?} with a fetch in flight",
        started.elapsed()
    );
}

/// A source of `data` that waits `ms` before each chunk.
fn slow_source(data: &[u8], ms: u64) -> PeerDouble {
    PeerDouble::start(
        &[data],
        Behaviour {
            delay: Duration::from_millis(ms),
            ..Behaviour::default()
        },
    )
}

#[test]
fn a_put_of_segments_refuses_ends_out_of_order_and_keeps_serving() {
    let a = Agent::start();
    let data = random_bytes(200_000, 22);
    let mut c = Client::connect(Some(&a.socket())).expect("connect");
    // Ends that go back: the put fails with a clear error, nothing is kept.
    let mut put = c.put_segments("cdc:1024:4096:32768").expect("put");
    put.end_segments(&[100_000, 50_000]).expect("send ends");
    put.write_all(&data).expect("write");
    let e = put.commit().expect_err("ends out of order");
    assert!(e.to_string().contains("out of order"), "{e}");
    // The connection and the agent go on: a sound put of segments works,
    // its chunks ending where the segments do.
    let mut put = c.put_segments("cdc:1024:4096:32768").expect("put");
    put.end_segments(&[70_001, 70_001, 200_000])
        .expect("send ends");
    put.write_all(&data).expect("write");
    let r = put.commit().expect("commit");
    assert_eq!(r.size, data.len() as u64);
    let listed = Client::connect(Some(&a.socket()))
        .expect("connect")
        .list()
        .expect("list");
    assert_eq!(listed.len(), 1, "only the sound put is held: {listed:?}");
    // A put not started with segments takes no ends: a protocol
    // violation, the connection is closed.
    let mut plain = Client::connect(Some(&a.socket())).expect("connect");
    let mut put = plain.put().expect("put");
    put.end_segments(&[10]).expect("send ends");
    put.write_all(b"x").expect("write");
    assert!(put.commit().is_err());
    assert!(a.status()["version"].is_string(), "the agent still serves");
}
