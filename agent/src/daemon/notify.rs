//! The service manager's readiness protocol (systemd `Type=notify`): once
//! the agent serves (local API socket, peer port and mount up) one
//! datagram `READY=1` to `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace), and `STOPPING=1` when it begins to stop. Without
//! the variable, nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Tells the service manager `state` (`KEY=value` lines), if one asked.
pub(super) fn notify(state: &str) {
    let Some(to) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent =
        UnixDatagram::unbound().and_then(|sock| match to.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), &to),
        });
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "telling the service manager failed");
    }
}
