//! `gtc status`: what the agent holds, serves and fetches, as text or as
//! one JSON object; with `--watch`, again every interval, each transfer
//! and each of its sources with the rate since the last view.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use dot_agent::api::Status;
use dot_agent::client::Client;

/// The flags of `gtc status`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Local API socket (default: $GTC_SOCKET, else the agent's default).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Show it again every interval, with each transfer's and each
    /// source's rate, until interrupted (with --json: one object per line).
    #[arg(long, short = 'w')]
    watch: bool,
    /// Seconds between views with --watch (at least 0.1).
    #[arg(long, default_value_t = 1.0, value_name = "SECS", requires = "watch")]
    interval: f64,
    /// Stop after this many views with --watch.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
}

/// Runs `gtc status`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut client = Client::connect(args.socket.as_deref())?;
    if !args.watch {
        let st = client.status()?;
        if args.json {
            println!("{}", serde_json::to_string(&st)?);
        } else {
            print_text(&st, None);
        }
        return Ok(());
    }
    if !args.interval.is_finite() || args.interval < 0.1 {
        bail!("--interval: give at least 0.1 seconds");
    }
    let interval = Duration::from_secs_f64(args.interval.min(86_400.0));
    let redraw = !args.json && std::io::stdout().is_terminal();
    let mut last: Option<(Instant, Status)> = None;
    let mut shown = 0u64;
    loop {
        let st = client.status()?;
        let now = Instant::now();
        if args.json {
            println!("{}", serde_json::to_string(&st)?);
        } else {
            if redraw {
                // Home and clear: one view on the screen at a time.
                print!("\x1b[H\x1b[2J");
            } else if shown > 0 {
                println!();
            }
            let rates = last
                .as_ref()
                .map(|(then, prev)| Rates::between(prev, &st, now - *then));
            print_text(&st, rates.as_ref());
        }
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        last = Some((now, st));
        std::thread::sleep(interval);
    }
}

/// Bytes per second since the last view: per transfer (by OID) and per
/// path of each (by OID and path name).
struct Rates {
    transfers: HashMap<String, f64>,
    paths: HashMap<(String, String), f64>,
}

impl Rates {
    fn between(prev: &Status, now: &Status, took: Duration) -> Rates {
        let secs = took.as_secs_f64().max(1e-3);
        let received = |t: &dot_agent::api::TransferStatus| t.from_peers + t.local + t.from_devices;
        let before: HashMap<&str, u64> = prev
            .transfers
            .iter()
            .map(|t| (t.oid.as_str(), received(t)))
            .collect();
        let path_before: HashMap<(&str, &str), u64> = prev
            .transfers
            .iter()
            .flat_map(|t| {
                t.paths
                    .iter()
                    .map(move |p| ((t.oid.as_str(), p.name.as_str()), p.bytes))
            })
            .collect();
        let mut rates = Rates {
            transfers: HashMap::new(),
            paths: HashMap::new(),
        };
        for t in &now.transfers {
            let was = before.get(t.oid.as_str()).copied().unwrap_or(received(t));
            rates
                .transfers
                .insert(t.oid.clone(), received(t).saturating_sub(was) as f64 / secs);
            for p in &t.paths {
                let was = path_before
                    .get(&(t.oid.as_str(), p.name.as_str()))
                    .copied()
                    .unwrap_or(p.bytes);
                rates.paths.insert(
                    (t.oid.clone(), p.name.clone()),
                    p.bytes.saturating_sub(was) as f64 / secs,
                );
            }
        }
        rates
    }
}

/// Bytes per second as a person reads it: "12.3 MB/s".
fn rate(bytes_per_sec: f64) -> String {
    let (v, unit) = match bytes_per_sec {
        r if r >= 1e9 => (r / 1e9, "GB/s"),
        r if r >= 1e6 => (r / 1e6, "MB/s"),
        r if r >= 1e3 => (r / 1e3, "kB/s"),
        r => (r, "B/s"),
    };
    format!("{v:.1} {unit}")
}

/// The text view of `st`, with rates when watching.
fn print_text(st: &Status, rates: Option<&Rates>) {
    use super::count;
    println!(
        "agent {} serving peers on {} ({}), {}",
        st.version,
        st.listen,
        st.hints.join(", "),
        count(st.clients, "client")
    );
    println!(
        "store {}: {} ({} complete, {} pinned), {} held",
        st.data_dir,
        count(st.objects, "object"),
        st.complete,
        st.pinned,
        count(st.stored_bytes, "byte")
    );
    let budget = if st.budget == u64::MAX {
        "no budget".to_owned()
    } else {
        format!("budget {}", count(st.budget, "byte"))
    };
    println!(
        "cache: {budget}, keeps {} free ({} free now); evicted {} ({})",
        count(st.min_free_bytes, "byte"),
        count(st.free_bytes, "byte"),
        count(st.evicted, "object"),
        count(st.evicted_bytes, "byte")
    );
    println!(
        "peers: {} / {} served, {} refused, {}",
        count(st.peers.chunks_served, "chunk"),
        count(st.peers.bytes_sent, "byte"),
        st.peers.refused,
        count(st.peers.violations, "violation")
    );
    println!("transfers in flight: {}", st.transfers.len());
    for t in &st.transfers {
        let at = rates
            .and_then(|r| r.transfers.get(&t.oid))
            .map(|r| format!(" at {}", rate(*r)))
            .unwrap_or_default();
        println!(
            "  {} {}: {} of {} received ({} local, {} from devices) from {}{at}, {:.1} s",
            t.oid,
            t.state,
            t.from_peers + t.local + t.from_devices,
            count(t.size, "byte"),
            t.local,
            t.from_devices,
            t.source,
            t.seconds
        );
        for p in &t.paths {
            let at = rates
                .and_then(|r| r.paths.get(&(t.oid.clone(), p.name.clone())))
                .map(|r| format!(" at {}", rate(*r)))
                .unwrap_or_default();
            println!(
                "    path {}: {} in {}{at}, dropped {}",
                p.name,
                count(p.bytes, "byte"),
                count(p.chunks, "chunk"),
                count(p.drops, "time")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(rate(0.0), "0.0 B/s");
        assert_eq!(rate(12_345.0), "12.3 kB/s");
        assert_eq!(rate(118e6), "118.0 MB/s");
        assert_eq!(rate(2.5e9), "2.5 GB/s");
    }
}
