//! Puts one file into a store and reports how long the put took.
//!
//! `cargo run --release -p dot-store --example put -- STORE_DIR FILE [--copy]`
//!
//! Prints `oid size chunks hashed seconds`. By default the file is put by
//! reference (no copy), as `gtc put FILE` does; `--copy` streams it into the
//! store instead. Used by `bench/put.sh`.

use std::path::PathBuf;
use std::time::Instant;

use dot_store::{Store, StoreOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(file)) = (args.first(), args.get(1)) else {
        eprintln!("usage: put STORE_DIR FILE [--copy]");
        std::process::exit(2);
    };
    let copy = args.iter().any(|a| a == "--copy");
    let store = Store::open(&PathBuf::from(dir), StoreOptions::default())?;
    let t = Instant::now();
    let out = if copy {
        store.put_reader(&mut std::fs::File::open(file)?)?
    } else {
        store.put_path(&PathBuf::from(file))?
    };
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{} {} {} {} {:.6}",
        out.oid, out.size, out.chunks, out.hashed, secs
    );
    Ok(())
}
