//! Moves one file between two stores over the gtc plugin on loopback, in
//! one process, and reports the rate: a probe of the plugin's own speed
//! (the agent-to-agent benchmark is bench/loopback.sh, with the agent).
//!
//! `cargo run --release -p dot-plugins --example loopback -- FILE [WINDOW] [tls]`
//!
//! With `tls`, the link is TLS 1.3 with the server's key pinned, as between
//! agents by default; without, plain TCP.

use std::sync::Arc;
use std::time::Instant;

use dot_plugins::gtc::client::GtcSource;
use dot_plugins::gtc::server::{ServeOptions, ServerStats, serve_with};
use dot_plugins::gtc::tls::Identity;
use dot_plugins::transfer::ChunkSink;
use dot_plugins::{ChunkEvent, Transfer};
use dot_store::{Store, StoreOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.first() else {
        eprintln!("usage: loopback FILE [WINDOW] [tls]");
        std::process::exit(2);
    };
    let window: usize = args
        .get(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(dot_plugins::gtc::client::DEFAULT_WINDOW);
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let opts = StoreOptions {
        durable: false,
        ..StoreOptions::default()
    };
    let a = Store::open(a_dir.path(), opts.clone())?;
    let b = Store::open(b_dir.path(), opts)?;
    let put = a.put_path(std::path::Path::new(file))?;
    let token = a.token(put.oid)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tls = args.get(2).is_some_and(|a| a == "tls");
    let identity = Identity::load_or_create(&a_dir.path().join("peer.key"))?;
    let opts = ServeOptions {
        tls: Some(identity.server_config()),
        plain: !tls,
        ..ServeOptions::default()
    };
    let stats = Arc::new(ServerStats::default());
    tokio::spawn(serve_with(listener, a.clone(), stats, opts));

    let t = Instant::now();
    let src = GtcSource::new(addr, window).secured(tls.then(|| identity.key()));
    let d = src.get_descriptors(put.oid, Some(token.into())).await?;
    b.begin_fill(put.oid, d.size, &d.descriptors)?;
    let wanted: Vec<_> = d
        .descriptors
        .iter()
        .enumerate()
        .map(|(i, x)| (i as u32, *x))
        .collect();
    let n = wanted.len();
    let (tx, mut events) = tokio::sync::mpsc::channel(256);
    src.get_chunks(put.oid, wanted, ChunkSink::new(tx, 0));
    let mut got = 0;
    while got < n {
        match events.recv().await.map(|(_, ev)| ev) {
            Some(ChunkEvent::Chunk(chunk)) => {
                b.write_verified(put.oid, &chunk)?;
                got += 1;
            }
            other => return Err(format!("fetch failed: {other:?}").into()),
        }
    }
    let transfer = t.elapsed().as_secs_f64();
    b.finish(put.oid)?;
    let total = t.elapsed().as_secs_f64();
    let mib = put.size as f64 / (1 << 20) as f64;
    println!(
        "{mib:.0} MiB, window {window}, {}: chunks verified and written in {transfer:.3} s ({:.0} MiB/s); with the whole-object check {total:.3} s ({:.0} MiB/s)",
        if tls { "TLS" } else { "plain TCP" },
        mib / transfer,
        mib / total
    );
    Ok(())
}
