//! `gtc status`: what the agent holds, serves and fetches, as text or as
//! one JSON object.

use std::path::PathBuf;

use dot_agent::client::Client;

/// The flags of `gtc status`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Local API socket (default: $GTC_SOCKET, else the agent's default).
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// Runs `gtc status`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let st = Client::connect(args.socket.as_deref())?.status()?;
    if args.json {
        println!("{}", serde_json::to_string(&st)?);
        return Ok(());
    }
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
        println!(
            "  {} {}: {} of {} received ({} local, {} from devices) from {}, {:.1} s",
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
            println!(
                "    path {}: {} in {}, dropped {}",
                p.name,
                count(p.bytes, "byte"),
                count(p.chunks, "chunk"),
                count(p.drops, "time")
            );
        }
    }
    Ok(())
}
