//! Who may use the local API: the socket lives in a folder only the agent's
//! user (and, if configured, one group) can enter, the socket file has the
//! same modes, and every connection's peer credentials (`SO_PEERCRED`,
//! `SO_PEERGROUPS`) are checked again on accept: the agent's own user,
//! root, and members of the configured `socket-group` only. A socket
//! folder someone else owns is refused (another user could have made it
//! first, to catch the agent's clients or put a socket of their own in
//! its way).

use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use tokio::net::UnixStream;

/// `SO_PEERGROUPS` (Linux 4.13): the supplementary groups of the peer.
const SO_PEERGROUPS: libc::c_int = 59;
/// Most supplementary groups read of a peer (the kernel's NGROUPS_MAX is
/// 65536; a peer with more is checked against the first ones only).
const MAX_PEER_GROUPS: usize = 1024;

/// The local API's access rule.
#[derive(Debug, Clone, Copy)]
pub(super) struct LocalAccess {
    /// The agent's effective user.
    uid: u32,
    /// The group whose members may use the agent too.
    group: Option<u32>,
}

impl LocalAccess {
    pub fn new(group: Option<u32>) -> LocalAccess {
        LocalAccess {
            // SAFETY: geteuid has no preconditions.
            uid: unsafe { libc::geteuid() },
            group,
        }
    }

    /// The socket folder's mode: 0700, or 0750 with the group.
    fn dir_mode(&self) -> u32 {
        if self.group.is_some() { 0o750 } else { 0o700 }
    }

    /// Makes `dir` (the socket's folder) with the right mode and group if
    /// it is missing. An existing folder is left as it is if it belongs to
    /// this agent's user or to root and nobody else may write to it
    /// without the sticky bit (as `/tmp`, where the socket file's own mode
    /// keeps others out); any other folder is refused.
    ///
    /// # Errors
    /// A folder that cannot be made, or one refused as above.
    pub fn prepare_dir(&self, dir: &Path) -> anyhow::Result<()> {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(self.dir_mode())
                    .create(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                return self.set_owner_and_mode(dir, self.dir_mode());
            }
            Err(e) => return Err(e).with_context(|| format!("examining {}", dir.display())),
            Ok(meta) => {
                if !meta.is_dir() {
                    bail!("{} is not a folder", dir.display());
                }
                if meta.uid() != self.uid && meta.uid() != 0 {
                    bail!(
                        "{} belongs to user {}, not to this agent's user {} or root: refusing to put the socket there (remove it, or give --socket in a folder of your own)",
                        dir.display(),
                        meta.uid(),
                        self.uid
                    );
                }
                let others_write = meta.mode() & 0o022 != 0;
                let sticky = meta.mode() & 0o1000 != 0;
                if others_write && !sticky {
                    bail!(
                        "{} may be written by other users (mode {:o}): refusing to put the socket there",
                        dir.display(),
                        meta.mode() & 0o7777
                    );
                }
            }
        }
        Ok(())
    }

    /// Gives the socket file its mode (0600, or 0660 with the group).
    ///
    /// # Errors
    /// If the mode or group cannot be set.
    pub fn secure_socket(&self, socket: &Path) -> anyhow::Result<()> {
        let mode = if self.group.is_some() { 0o660 } else { 0o600 };
        self.set_owner_and_mode(socket, mode)
    }

    fn set_owner_and_mode(&self, path: &Path, mode: u32) -> anyhow::Result<()> {
        if let Some(gid) = self.group {
            std::os::unix::fs::chown(path, None, Some(gid))
                .with_context(|| format!("giving {} to group {gid}", path.display()))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))
    }

    /// Whether the peer of `stream` may use the agent; the refusal says
    /// who it was.
    pub fn check(&self, stream: &UnixStream) -> Result<(), String> {
        let cred = stream
            .peer_cred()
            .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
        let uid = cred.uid();
        if uid == 0 || uid == self.uid {
            return Ok(());
        }
        if let Some(group) = self.group
            && (cred.gid() == group || peer_groups(stream).contains(&group))
        {
            return Ok(());
        }
        Err(format!(
            "user {uid} may not use this agent (its user, root and the socket-group only)"
        ))
    }
}

/// The supplementary groups of the peer of `stream` (empty if the kernel
/// cannot tell).
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    let mut groups = vec![0 as libc::gid_t; MAX_PEER_GROUPS];
    let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: the buffer holds `len` bytes; the kernel writes at most that
    // and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
    groups
}
