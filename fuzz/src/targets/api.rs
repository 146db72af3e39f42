//! The local API: messages as a client writes them to the agent's socket
//! (framing, then the JSON of a request or an answer).

use dot_agent::api::{
    GetMode, Message, PutResult, Request, Response, data_head, encode_json, read_message_blocking,
};

use super::Target;

pub(super) const API: Target = Target {
    name: "api",
    asserts: "local-API messages back to back (read_message_blocking, then the JSON as a \
              Request and as a Response): a request that parses re-encodes to a message \
              that reads back the same; a data message's head re-encodes the same",
    seeds,
    dict: &[
        b"\x00\x00\x00",
        b"\x00",
        b"\x01",
        b"{\"op\":\"",
        b"{\"result\":\"",
        b"\"get\"",
        b"\"put-file\"",
        b"\"read\"",
        b"\"offset\":",
        b"18446744073709551615",
        b"1e400",
        b"-0",
        b"[[[[[[[[",
        b"\"\\ud800\"",
        b"null",
    ],
    max_len: 4096,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    let requests = [
        Request::Status,
        Request::PutFile {
            path: "/tmp/x".into(),
        },
        Request::PutInit {
            chunker: None,
            tree: false,
            segments: false,
        },
        Request::PutInit {
            chunker: Some("cdc:1024:4096:32768".into()),
            tree: false,
            segments: true,
        },
        Request::PutCuts {
            ends: vec![0, 17, 4096, 4096],
        },
        Request::PutInit {
            chunker: None,
            tree: true,
            segments: false,
        },
        Request::PutCommit,
        Request::Get {
            ticket: "dot1.AAAA".into(),
            hints: vec!["gtc://10.0.0.1:7420".into()],
            mode: GetMode::OutOfOrder,
        },
        Request::Read {
            offset: 1,
            len: 1 << 20,
        },
        Request::Export {
            ticket: "dot1.AAAA".into(),
            path: "/mnt/key".into(),
        },
        Request::Done { oid: "x".into() },
        Request::List { after: None },
        Request::List {
            after: Some("x".into()),
        },
        Request::Remove { oid: "x".into() },
        Request::Verify {
            oids: vec!["x".into()],
        },
    ];
    let responses = [
        Response::Put(PutResult {
            oid: "o".into(),
            ticket: "t".into(),
            size: 3,
            chunks: 1,
            hints: vec!["h".into()],
            hashed: true,
            mode: Some(0o644),
            mtime_ns: Some(-1),
        }),
        Response::Object {
            oid: "o".into(),
            size: 9,
            via_fd: false,
        },
        Response::End {
            from_peers: 1,
            local: 2,
            from_devices: 3,
        },
        Response::Progress { done: 1, total: 2 },
        Response::Verified(dot_agent::api::Verified {
            objects: 2,
            chunks: 3,
            bytes: 4,
            damaged_chunks: vec![("x".into(), 1)],
            bad_objects: vec!["y".into()],
            changed_files: vec![("z".into(), "/f".into())],
        }),
        Response::List {
            objects: vec![dot_agent::api::Listed {
                oid: "x".into(),
                size: 3,
                state: "partial".into(),
                chunks: 2,
                present: 1,
                referenced: Some("/f".into()),
                pins: 1,
                last_use: 5,
            }],
            next: Some("x".into()),
        },
        Response::Ok,
        Response::Error {
            message: "no".into(),
            kind: None,
        },
        Response::Error {
            message: "gone".into(),
            kind: Some(dot_agent::api::ErrorKind::NotFound),
        },
    ];
    let mut seeds: Vec<Vec<u8>> = requests
        .iter()
        .filter_map(|r| encode_json(r).ok())
        .collect();
    seeds.extend(responses.iter().filter_map(|r| encode_json(r).ok()));
    if let Ok(head) = data_head(5) {
        let mut data = head.to_vec();
        data.extend_from_slice(b"bytes");
        seeds.push(data);
    }
    let all = seeds.concat();
    seeds.push(all);
    seeds
}

fn run(data: &[u8]) -> bool {
    let mut r = data;
    let mut accepted = false;
    loop {
        let before = r.len();
        match read_message_blocking(&mut r) {
            Ok(Some(Message::Json(body))) => {
                if let Ok(req) = serde_json::from_slice::<Request>(&body) {
                    let msg = encode_json(&req).expect("a request encodes");
                    match read_message_blocking(&mut msg.as_slice()) {
                        Ok(Some(Message::Json(b))) => {
                            let back: Request =
                                serde_json::from_slice(&b).expect("a re-encoded request parses");
                            assert_eq!(back, req);
                        }
                        other => panic!("{req:?} re-encoded reads as {other:?}"),
                    }
                    accepted = true;
                }
                if let Ok(resp) = serde_json::from_slice::<Response>(&body) {
                    encode_json(&resp).expect("a response encodes");
                    accepted = true;
                }
            }
            Ok(Some(Message::Data(d))) => {
                let used = before - r.len();
                let head = data_head(d.len()).expect("a data message that read has a head");
                let start = data.len() - before;
                assert_eq!(&data[start..start + 5], &head[..], "{used} bytes");
                accepted = true;
            }
            Ok(None) | Err(_) => break,
        }
    }
    accepted
}
