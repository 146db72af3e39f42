//! The config file's keys, defaults and forms, and that `docs/config.md`
//! documents every key.

use super::*;

#[test]
fn an_empty_file_gives_working_defaults() {
    let c: RawConfig = toml::from_str("").expect("parse");
    let c = c.validate().expect("valid");
    assert_eq!(c.listen.port(), DEFAULT_PORT);
    assert_eq!(c.chunker, ChunkerSpec::default());
    assert!(c.data_dir.is_absolute() && c.socket.is_absolute());
    assert!(c.durable, "durable is the default");
    let c: RawConfig = toml::from_str("durable = false").expect("parse");
    assert!(!c.validate().expect("valid").durable);
}

#[test]
fn keys_are_read_and_typos_rejected() {
    let c: RawConfig = toml::from_str(
        "data-dir = \"/srv/dot\"\nlisten = \"127.0.0.1:9000\"\nadvertise = [\"10.0.0.1:9000\"]\nchunker = \"fixed:65536\"\ncache-bytes = 1000",
    )
    .expect("parse");
    let c = c.validate().expect("valid");
    assert_eq!(c.data_dir, PathBuf::from("/srv/dot"));
    assert_eq!(c.listen, "127.0.0.1:9000".parse().expect("addr"));
    assert_eq!(c.advertise, vec!["10.0.0.1:9000".to_owned()]);
    assert_eq!(c.cache_bytes, Some(1000));
    let c: RawConfig =
        toml::from_str("peers = [\"10.0.0.2:7420\"]\nopen-to = [\"10.0.0.0/24\", \"::1\"]")
            .expect("parse");
    let c = c.validate().expect("valid");
    assert_eq!(c.peers[0].to_string(), "gtc://10.0.0.2:7420");
    assert_eq!(c.open_to.len(), 2);
    assert!(
        toml::from_str::<RawConfig>("data_dir = \"/x\"").is_err(),
        "snake_case typo accepted"
    );
    assert!(toml::from_str::<RawConfig>("lisen = \"x\"").is_err());
    for bad in [
        "listen = \"nowhere\"",
        "advertise = [\"host\"]",
        "advertise = [\"h:0\"]",
        "chunker = \"rabin\"",
        "peers = [\"host\"]",
        "open-to = [\"10.0.0.0/40\"]",
    ] {
        let raw: RawConfig = toml::from_str(bad).expect("parse");
        assert!(raw.validate().is_err(), "{bad}");
    }
}

#[test]
fn flags_replace_keys() {
    let file: RawConfig = toml::from_str(
        "listen = \"127.0.0.1:9000\"\nsocket = \"/file.sock\"\nadvertise = [\"a:1\"]\npeers = [\"p:1\"]\nmount = \"/file/mnt\"\nread-timeout-secs = 5",
    )
    .expect("parse");
    let flags = Flags {
        socket: Some("/flag.sock".into()),
        peers: vec!["q:2".into(), "r:3".into()],
        mount: Some("/flag/mnt".into()),
        ..Flags::default()
    };
    let c = file.with_flags(flags).validate().expect("valid");
    assert_eq!(c.socket, PathBuf::from("/flag.sock"));
    assert_eq!(c.listen, "127.0.0.1:9000".parse().expect("addr"));
    assert_eq!(c.advertise, vec!["a:1".to_owned()]);
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.mount, Some(PathBuf::from("/flag/mnt")));
    assert_eq!(c.read_timeout, std::time::Duration::from_secs(5));

    let file: RawConfig = toml::from_str("mount = \"/file/mnt\"").expect("parse");
    let flags = Flags {
        no_mount: true,
        read_timeout: Some(0),
        ..Flags::default()
    };
    let c = file.with_flags(flags).validate().expect("valid");
    assert_eq!(c.mount, None);
    assert_eq!(c.read_timeout, std::time::Duration::from_secs(1));
}

/// The keys `RawConfig` accepts, from serde itself: unknown keys are
/// rejected (`deny_unknown_fields`) with a message listing every key
/// expected (``unknown field `x`, expected one of `data-dir`, ...``).
fn accepted_keys() -> Vec<String> {
    let err =
        toml::from_str::<RawConfig>("no-such-key = 1").expect_err("an unknown key was accepted");
    let msg = err.message();
    let (_, list) = msg
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("no list of keys in {msg:?}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn addresses_take_the_same_forms_everywhere() {
    let c: RawConfig = toml::from_str(
        "listen = \"localhost:0\"\nadvertise = [\"gtc://h.example:1\", \"10.0.0.1:2\"]\npeers = [\"p:3\", \"gtc://q:4\"]",
    )
    .expect("parse");
    let c = c.validate().expect("valid");
    assert!(c.listen.ip().is_loopback(), "{}", c.listen);
    assert_eq!(
        c.advertise,
        vec!["h.example:1".to_owned(), "10.0.0.1:2".to_owned()]
    );
    let peers: Vec<&str> = c.peers.iter().map(|h| h.uri()).collect();
    assert_eq!(peers, ["gtc://p:3", "gtc://q:4"]);
    let keyed: RawConfig =
        toml::from_str("advertise = [\"0123456789abcdef0123456789abcdef@h:1\"]").expect("parse");
    assert!(keyed.validate().is_err(), "advertise names no key");
}

#[test]
fn every_config_key_is_documented() {
    let doc = include_str!("../../../docs/config.md");
    let keys = accepted_keys();
    assert!(
        keys.len() >= 20 && keys.iter().any(|k| k == "plain-peers"),
        "the list of keys was not read: {keys:?}"
    );
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md does not name {missing:?}"
    );
    // The shipped file names every key, commented out: as is it sets
    // nothing; uncommented it parses, and what it shows are the defaults
    // (but for the keys it shows with an example value).
    let example = include_str!("../../../packaging/gtc.toml");
    let absent: Vec<&String> = keys
        .iter()
        .filter(|k| !example.lines().any(|l| l.starts_with(&format!("# {k} = "))))
        .collect();
    assert!(absent.is_empty(), "packaging/gtc.toml lacks {absent:?}");
    let as_shipped: RawConfig = toml::from_str(example).expect("the file parses");
    assert_eq!(
        format!("{:?}", as_shipped.validate().expect("valid")),
        format!("{:?}", RawConfig::default().validate().expect("valid")),
        "packaging/gtc.toml sets a key as shipped"
    );
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(kv) if keys.iter().any(|k| kv.starts_with(&format!("{k} = "))) => kv,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mut shown: RawConfig = toml::from_str(&uncommented).expect("uncommented, it parses");
    // Shown with an example value, not a default.
    shown.data_dir = None;
    shown.socket = None;
    shown.socket_group = None;
    shown.mount = None;
    shown.cache_bytes = None;
    shown.min_free_bytes = None;
    shown.device_mount = None;
    assert!(shown.metrics.take().is_some());
    assert_eq!(
        format!("{:?}", shown.validate().expect("valid")),
        format!("{:?}", RawConfig::default().validate().expect("valid")),
        "packaging/gtc.toml shows a value other than the default"
    );
}
