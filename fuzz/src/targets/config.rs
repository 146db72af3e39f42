//! The agent's configuration file, and the chunker spec it may name.

use dot_agent::config::RawConfig;
use dot_store::ChunkerSpec;
use dot_store::chunker::chunk_lengths;

use super::{Target, text};

pub(super) const CONFIG: Target = Target {
    name: "config",
    asserts: "a config file (TOML into RawConfig, then RawConfig::validate): no panic; \
              a valid config keeps its bounds (timeouts and caps at least 1)",
    seeds: || {
        [
            "",
            "durable = false\nlisten = \"127.0.0.1:7420\"\n",
            "data-dir = \"/var/lib/dot\"\nsocket = \"/run/dot/gtc.sock\"\nsocket-group = \"0\"\n\
             advertise = [\"host.example:7420\", \"[::1]:7420\"]\nchunker = \"cdc:16384:65536:262144\"\n\
             cache-bytes = 1000000\nmount = \"\"\nread-timeout-secs = 0\npassthrough = true\n\
             put-limit = 5\nbind = [\"10.0.0.1\", \"::1\"]\ndevices = false\n\
             device-folders = [\"/media/u\"]\ndevice-mount = \"/mnt/k\"\noutbox = true\n\
             peers = [\"peer:7420\"]\nopen-to = [\"10.0.0.0/8\", \"fd00::/8\"]\nmax-peers = 0\n\
             max-peers-per-address = 3\npeer-idle-secs = 0\npeer-write-timeout-secs = 9\n\
             plain-peers = false\n",
            "chunker = \"fixed:4096\"\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dict: &[
        b" = ",
        b"\n",
        b"\"",
        b"[",
        b"]",
        b"{",
        b"[[",
        b"'''",
        b"\"\"\"",
        b"\\u",
        b"18446744073709551615",
        b"-1",
        b"1e999",
        b"open-to",
        b"chunker",
        b"listen",
        b"socket-group",
        b"advertise",
        b"peers",
    ],
    max_len: 4096,
    run: config,
};

pub(super) const CHUNKER_SPEC: Target = Target {
    name: "chunker-spec",
    asserts: "ChunkerSpec::from_str (the config's `chunker`): a spec that parses prints \
              back as the input, parses to the same spec, and builds a chunker that cuts \
              8 KiB into chunks within its bounds",
    seeds: || {
        [
            "cdc:16384:65536:262144",
            "fixed:4096",
            "cdc:64:256:1024",
            "fixed:4194304",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dict: &[b"cdc:", b"fixed:", b":", b"0", b"4194304", b"4294967296"],
    max_len: 80,
    run: chunker_spec,
};

fn config(data: &[u8]) -> bool {
    let Ok(raw) = toml::from_str::<RawConfig>(&text(data)) else {
        return false;
    };
    if let Ok(c) = raw.validate() {
        assert!(c.read_timeout.as_secs() >= 1);
        assert!(c.serve.max_connections >= 1 && c.serve.max_per_address >= 1);
    }
    true
}

fn chunker_spec(data: &[u8]) -> bool {
    let s = text(data);
    let Ok(spec) = s.parse::<ChunkerSpec>() else {
        return false;
    };
    let again = spec.to_string();
    assert_eq!(again, s);
    assert_eq!(again.parse::<ChunkerSpec>().ok(), Some(spec));
    let chunker = spec.build().expect("a spec that parses builds");
    let data: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let lens = chunk_lengths(chunker.as_ref(), &data);
    assert_eq!(lens.iter().sum::<usize>(), data.len());
    let max = match spec {
        ChunkerSpec::Fixed { size } => size,
        ChunkerSpec::Cdc { max, .. } => max,
    };
    assert!(
        lens.iter().all(|l| (1..=max as usize).contains(l)),
        "{lens:?}"
    );
    true
}
