//! Reaching files on a key that someone else wrote, as root, safely: every
//! path is resolved beneath a directory handle with `openat2` (no symbolic
//! link anywhere, nothing off the key's filesystem), files are looked at
//! through `O_PATH` before any is opened (regular files only: no FIFO
//! waited on, no device driver called), and folders are made and files
//! removed relative to directory handles.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Files in `tmp/` older than this are left by a pulled write.
pub(super) const STALE: Duration = Duration::from_secs(3600);

/// How every path on a key is resolved from a directory handle: beneath
/// it, through no symbolic link at all (the last component included), and
/// without leaving its filesystem.
pub(super) const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_XDEV);
/// A folder on a key, opened to work beneath.
pub(super) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The error for `errno` from reaching `shown` on a key: a symbolic link
/// or another filesystem is bad data on the key (`InvalidData`: for a chunk
/// file, a failed chunk), a kernel without `openat2` is `Unsupported`.
pub(super) fn refused(shown: &Path, errno: Errno) -> io::Error {
    let (kind, why) = match errno {
        Errno::LOOP => (
            io::ErrorKind::InvalidData,
            "is, or lies under, a symbolic link: refused (nothing on a key is reached through a link)",
        ),
        Errno::XDEV => (
            io::ErrorKind::InvalidData,
            "is not on the key's filesystem: refused",
        ),
        Errno::NOTDIR => (
            io::ErrorKind::InvalidData,
            "is not a folder, or lies under something that is not one",
        ),
        Errno::NOSYS => {
            return io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: the kernel has no openat2 (Linux 5.6 or later), without which keys are not used",
                    shown.display()
                ),
            );
        }
        _ => {
            let e = io::Error::from(errno);
            return io::Error::new(e.kind(), format!("{}: {e}", shown.display()));
        }
    };
    io::Error::new(kind, format!("{} {why}", shown.display()))
}

pub(super) fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a folder",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "of an unknown type",
    }
}

pub(super) fn regular(st: &rfs::Stat, shown: &Path) -> io::Result<()> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Ok(()),
        t => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {}, not a regular file: refused",
                shown.display(),
                type_name(t)
            ),
        )),
    }
}

/// The regular file `rel` beneath the folder `dir` of a key, open for
/// reading, and its length. It is looked at first through an `O_PATH`
/// handle, which opens nothing (no FIFO waits for a writer, no device
/// driver is called), and opened only if it is a regular file, and only
/// that file (same device and inode).
pub(super) fn open_regular(
    dir: BorrowedFd<'_>,
    rel: &str,
    shown: &Path,
) -> io::Result<(File, u64)> {
    let probe = rfs::openat2(
        dir,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
    .map_err(|e| refused(shown, e))?;
    let seen = rfs::fstat(&probe)?;
    regular(&seen, shown)?;
    let fd = rfs::openat2(
        dir,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
    .map_err(|e| refused(shown, e))?;
    let st = rfs::fstat(&fd)?;
    regular(&st, shown)?;
    if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} changed while it was opened: refused", shown.display()),
        ));
    }
    // A regular file: O_NONBLOCK only guarded the open; cleared so that no
    // filesystem answers a read with EAGAIN.
    rfs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
}

/// Whether `rel` beneath `dir` is a regular file (looked at, not opened).
pub(super) fn is_regular(dir: BorrowedFd<'_>, rel: &str) -> bool {
    rfs::openat2(
        dir,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
    .and_then(rfs::fstat)
    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
}

/// The folder `name` (one component) in `dir`.
pub(super) fn open_dir(dir: BorrowedFd<'_>, name: &str, shown: &Path) -> io::Result<OwnedFd> {
    rfs::openat2(dir, name, DIR_FLAGS, Mode::empty(), RESOLVE)
        .map_err(|e| refused(shown, link_or(dir, name, e)))
}

pub(super) fn is_symlink(dir: BorrowedFd<'_>, name: &str) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// `ELOOP` when opening the folder `name` in `dir` failed because it is a
/// symbolic link (`O_DIRECTORY | O_NOFOLLOW` on a link says `ENOTDIR`),
/// else `errno`.
pub(super) fn link_or(dir: BorrowedFd<'_>, name: &str, errno: Errno) -> Errno {
    match errno {
        Errno::NOTDIR | Errno::LOOP if is_symlink(dir, name) => Errno::LOOP,
        e => e,
    }
}

/// The folder `name` (one component) in `dir`, made if missing. A symbolic
/// link in its place (a hostile key's) is removed, the link itself
/// (`unlinkat` never follows one), and a real folder made instead.
pub(super) fn make_dir(dir: BorrowedFd<'_>, name: &str, shown: &Path) -> io::Result<OwnedFd> {
    for _ in 0..2 {
        match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(refused(shown, e)),
        }
        match open_dir(dir, name, shown) {
            Err(_) if is_symlink(dir, name) => {
                tracing::warn!(link = %shown.display(), "a symbolic link on the key where a folder belongs: replaced by a folder");
                rfs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| refused(shown, e))?;
            }
            r => return r,
        }
    }
    Err(refused(shown, Errno::LOOP))
}

/// Deletes the files a pulled write left in the key's real `tmp/` folder
/// (the handle): regular files named `w-*` an hour old or more, by name in
/// that folder (`unlinkat`). Nothing else there is touched.
pub(super) fn clean_tmp(tmp: BorrowedFd<'_>) {
    let Ok(mut entries) = rfs::Dir::read_from(tmp) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    while let Some(Ok(e)) = entries.read() {
        let name = e.file_name();
        if !name.to_bytes().starts_with(b"w-") {
            continue;
        }
        let stale = rfs::statat(tmp, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && now.saturating_sub(u64::try_from(st.st_mtime).unwrap_or(u64::MAX))
                    >= STALE.as_secs()
        });
        if stale {
            let _ = rfs::unlinkat(tmp, name, AtFlags::empty());
        }
    }
}

/// Reads `buf` whole; a file that ends early (it shrank after its length
/// was checked) is bad data.
pub(super) fn read_all(r: &mut impl Read, buf: &mut [u8], shown: &Path) -> io::Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} ends before its length", shown.display()),
            )
        } else {
            e
        }
    })
}
