//! Passing an open file descriptor over the local API socket (SCM_RIGHTS),
//! so that a put by descriptor needs no copy and no path lookup race.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Sends one byte carrying `fd` over the Unix socket `sock`.
///
/// # Errors
/// The socket's error.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    one_byte(1, |msg| {
        // SAFETY: msg_control has room for one header carrying one
        // descriptor; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
        loop {
            // SAFETY: `msg` and everything it points to live across the call.
            let n = unsafe { libc::sendmsg(sock, msg, libc::MSG_NOSIGNAL) };
            if n == 1 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    })
}

/// Runs `f` with a message of one byte and room for `fds` descriptors of
/// control data (the header, its iovec and buffers live across `f`).
fn one_byte<T>(fds: usize, f: impl FnOnce(&mut libc::msghdr) -> T) -> T {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut cmsg_buf = vec![0u8; space];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    f(&mut msg)
}

/// Receives one byte from the Unix socket `sock` and the descriptor
/// attached to it. On a non-blocking socket with nothing to read it fails
/// with `WouldBlock`, for the caller's readiness loop.
///
/// # Errors
/// The socket's error; `InvalidData` if the byte came without exactly one
/// descriptor (any descriptors that did come are closed).
pub fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    // Room for a few: extra descriptors are received, and closed.
    one_byte(4, |msg| {
        // SAFETY: buffers live across the call; MSG_CMSG_CLOEXEC keeps
        // received descriptors out of children.
        let n = unsafe { libc::recvmsg(sock, msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed before sending the file",
            ));
        }
        let mut fds = Vec::new();
        // SAFETY: walk the control messages the kernel wrote into the
        // control buffer.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        if fds.len() != 1 || msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected exactly one file descriptor",
            ));
        }
        Ok(fds.remove(0))
    })
}
