//! `gtc ls` (what the store holds: size, state, holders, last use),
//! `gtc rm` (drop objects from the store) and `gtc verify` (check them
//! again).

use std::path::PathBuf;

use anyhow::{Context, bail};
use dot_agent::api::{ErrorKind, Verified};
use dot_agent::client::{Client, ClientError};

/// The flags of `gtc ls`.
#[derive(clap::Args)]
pub struct LsArgs {
    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,
    /// Local API socket (default: $GTC_SOCKET, else the agent's default).
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// The flags of `gtc rm`.
#[derive(clap::Args)]
pub struct RmArgs {
    /// The objects' OIDs.
    #[arg(required = true, value_name = "OID")]
    oids: Vec<String>,
    /// Local API socket (default: $GTC_SOCKET, else the agent's default).
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// The flags of `gtc verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The objects' OIDs (none: every object).
    #[arg(value_name = "OID")]
    oids: Vec<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Local API socket (default: $GTC_SOCKET, else the agent's default).
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// Runs `gtc verify`: one object at a time, with a progress bar by bytes
/// on a terminal; exits with the integrity code when it found damage.
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(args.socket.as_deref())?;
    let whole_store = args.oids.is_empty();
    let objects: Vec<(String, u64)> = if whole_store {
        client
            .list()?
            .into_iter()
            .map(|o| (o.oid, o.size))
            .collect()
    } else {
        args.oids.iter().map(|o| (o.clone(), 0)).collect()
    };
    let bar = super::progress::bar(objects.iter().map(|(_, size)| size).sum());
    let mut v = Verified::default();
    for (oid, size) in &objects {
        match client.verify(std::slice::from_ref(oid)) {
            Ok(found) => v.add(found),
            // Gone (evicted, removed) since the store was listed.
            Err(ClientError::Agent {
                kind: Some(ErrorKind::NotFound),
                ..
            }) if whole_store => {}
            Err(e) => return Err(e).with_context(|| format!("verifying {oid}")),
        }
        if let Some(b) = &bar {
            b.inc(*size);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        for (oid, i) in &v.damaged_chunks {
            println!("{oid}: chunk {i} damaged, marked missing (fetched again when next wanted)");
        }
        for oid in &v.bad_objects {
            println!("{oid}: does not hash to its OID, dropped");
        }
        for (oid, path) in &v.changed_files {
            println!("{oid}: its file {path} changed or went, dropped");
        }
        println!(
            "{} re-read: {} and {} checked",
            super::count(v.objects, "object"),
            super::count(v.chunks, "chunk"),
            super::count(v.bytes, "byte")
        );
    }
    if !v.is_clean() {
        let n = v.damaged_chunks.len() + v.bad_objects.len() + v.changed_files.len();
        return Err(super::exit::Damaged(format!(
            "verify found {}",
            super::count(n as u64, "problem")
        ))
        .into());
    }
    Ok(())
}

/// Runs `gtc ls`.
pub fn ls(args: LsArgs) -> anyhow::Result<()> {
    let objects = Client::connect(args.socket.as_deref())?.list()?;
    if args.json {
        println!("{}", serde_json::to_string(&objects)?);
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for o in &objects {
        let state = if o.state == "complete" {
            o.state.clone()
        } else {
            format!("{} ({}/{} chunks)", o.state, o.present, o.chunks)
        };
        let held = if o.pins > 0 {
            format!(", held by {}", super::count(u64::from(o.pins), "client"))
        } else {
            String::new()
        };
        let by_ref = o
            .referenced
            .as_deref()
            .map(|p| format!(", file {p}"))
            .unwrap_or_default();
        println!(
            "{}  {}  {state}, used {} ago{held}{by_ref}",
            o.oid,
            super::count(o.size, "byte"),
            ago(now - o.last_use)
        );
    }
    Ok(())
}

/// Runs `gtc rm`: every OID is tried; fails if any stayed.
pub fn rm(args: RmArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(args.socket.as_deref())?;
    if let [oid] = args.oids.as_slice() {
        client.remove(oid)?;
        println!("removed {oid}");
        return Ok(());
    }
    let mut failed = 0;
    for oid in &args.oids {
        match client.remove(oid) {
            Ok(()) => println!("removed {oid}"),
            Err(e) => {
                eprintln!("gtc: {oid}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} objects were not removed", args.oids.len());
    }
    Ok(())
}

/// Seconds as the largest whole unit: "40 s", "3 min", "5 h", "2 d".
fn ago(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}
