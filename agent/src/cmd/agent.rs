//! `gtc agent`: logging to stderr, the configuration from the file and
//! flags ([`Config::from_flags`]), then the daemon on a tokio runtime
//! until SIGINT or SIGTERM.

use dot_agent::config::{Config, Flags};

/// Runs the agent in the foreground.
pub fn run(flags: Flags) -> anyhow::Result<()> {
    super::init_logging();
    let config = Config::from_flags(flags)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(dot_agent::daemon::run(config));
    // The store is closed by now. Blocking work still running is not
    // waited for past a second: an idle-priority whole-object hash may get
    // no CPU on a busy machine to notice the stop, and SIGTERM must not
    // wait for the machine to go idle.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
