//! `gtc`: the DOT agent and its command line. The daemon, local API and
//! commands arrive with the agent issue; today this binary only names itself.

fn main() {
    eprintln!(
        "gtc {}: the agent is not built yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
