//! Kernel uevents: the netlink socket they arrive on and the parser of
//! one datagram.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A kernel uevent: `ACTION@DEVPATH` then `KEY=VALUE` fields, NUL-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Uevent {
    pub(crate) action: String,
    pub(crate) subsystem: String,
    pub(crate) devname: String,
}

impl Uevent {
    pub(crate) fn parse(msg: &[u8]) -> Option<Uevent> {
        let mut parts = msg.split(|b| *b == 0);
        let head = std::str::from_utf8(parts.next()?).ok()?;
        // Messages from udevd ("libudev" header) are not kernel uevents.
        if !head.contains('@') {
            return None;
        }
        let mut ev = Uevent::default();
        for p in parts {
            let Ok(kv) = std::str::from_utf8(p) else {
                continue;
            };
            match kv.split_once('=') {
                Some(("ACTION", v)) => ev.action = v.to_owned(),
                Some(("SUBSYSTEM", v)) => ev.subsystem = v.to_owned(),
                // A name under /dev, never a path out of it.
                Some(("DEVNAME", v)) if !v.contains("..") => {
                    ev.devname = v.trim_start_matches('/').to_owned();
                }
                _ => {}
            }
        }
        Some(ev)
    }
}

/// A non-blocking socket bound to the kernel's uevent multicast group.
pub(crate) fn uevent_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_KOBJECT_UEVENT,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = 1;
    // SAFETY: `addr` is a valid sockaddr_nl of the given size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_uevents_parse_and_udevd_messages_do_not() {
        let msg = b"add@/devices/virtual/block/loop3\0ACTION=add\0DEVPATH=/devices/virtual/block/loop3\0SUBSYSTEM=block\0DEVNAME=loop3\0DEVTYPE=disk\0";
        let ev = Uevent::parse(msg).expect("parses");
        assert_eq!(ev.action, "add");
        assert_eq!(ev.subsystem, "block");
        assert_eq!(ev.devname, "loop3");
        assert!(Uevent::parse(b"libudev\0\xfe\xed").is_none());
        let sneaky = b"add@/x\0SUBSYSTEM=block\0DEVNAME=../etc/passwd\0";
        assert_eq!(Uevent::parse(sneaky).expect("parses").devname, "");
    }
}
