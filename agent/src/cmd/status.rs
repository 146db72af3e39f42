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
    println!(
        "agent {} serving peers on {} ({}), {} clients",
        st.version,
        st.listen,
        st.hints.join(", "),
        st.clients
    );
    println!(
        "store {}: {} objects ({} complete, {} pinned), {} bytes held",
        st.data_dir, st.objects, st.complete, st.pinned, st.stored_bytes
    );
    println!(
        "peers: {} chunks / {} bytes served, {} refused, {} violations",
        st.peers.chunks_served, st.peers.bytes_sent, st.peers.refused, st.peers.violations
    );
    println!("transfers in flight: {}", st.transfers.len());
    for t in &st.transfers {
        println!(
            "  {} {}: {} of {} bytes ({} local, {} from devices) from {}, {:.1} s",
            t.oid,
            t.state,
            t.from_peers + t.local + t.from_devices,
            t.size,
            t.local,
            t.from_devices,
            t.source,
            t.seconds
        );
        for p in &t.paths {
            println!(
                "    path {}: {} bytes in {} chunks, dropped {} times",
                p.name, p.bytes, p.chunks, p.drops
            );
        }
    }
    Ok(())
}
