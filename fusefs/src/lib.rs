//! The content-addressed FUSE namespace: `MOUNT/<ticket>` and `MOUNT/<oid>`
//! are read-only files whose bytes are fetched as they are read,
//! `MOUNT/<tree ticket>/` a read-only folder (a tree);
//! `MOUNT/put/` takes new files, put when closed.
//!
//! The filesystem knows nothing of the network: it asks an [`Objects`]
//! implementation (the agent) to resolve names, read verified bytes, hand
//! over the file of a complete object (for FUSE passthrough) and put
//! finished files. Calls that may wait on the network take a callback and
//! return at once, so FUSE worker threads never block on a peer; the
//! callback replies to the kernel from whatever thread completes it.
//!
//! Rules for `put/` (see `docs/fuse.md`): a file created there is a draft
//! until its last writer closes it; then it is put, and its OID and ticket
//! are readable as the extended attributes `user.dot.oid` and
//! `user.dot.ticket`; the object also appears as `MOUNT/<oid>`.
//!
//! One job per module:
//! - `access`: who may see what on a machine with several users (grants
//!   by ticket or put, the owner and root see all, `put/` is sticky);
//! - `objects`: what the filesystem asks of the agent: the [`Objects`]
//!   trait, [`Name`], [`Meta`], [`Put`], [`ObjError`] (with the errno each
//!   failure answers) and the [`Done`] callback;
//! - `nodes`: the inode table (objects met, and `put/` files, draft or
//!   put) and the attributes and cache lifetimes given to the kernel;
//! - `put_dir`: the rules of `put/`: drafts, their put on the last
//!   writer's release, rewrite, rename and unlink, and the extended
//!   attributes;
//! - `tree_dir`: `MOUNT/<tree ticket>/`, a read-only folder listed from
//!   the tree's manifest, its files fetched as they are read;
//! - `read_stats`: what a mount counts of its reads ([`ReadStats`]: reads,
//!   bytes, errors, passthrough opens, a latency histogram);
//! - `state`: what one mount shares between its worker threads, with the
//!   open handles and passthrough backing IDs;
//! - `fs`: the `fuser::Filesystem` implementation, dispatching each
//!   request to the above;
//! - `mount`: [`mount()`] with its [`MountOptions`], the replacement of a
//!   stale mount, the raise of the kernel's readahead, and [`Mount`], which
//!   detaches when dropped.

#![warn(missing_docs)]

mod access;
mod fs;
mod mount;
mod nodes;
mod objects;
mod put_dir;
mod read_stats;
mod state;
mod tree_dir;

pub use mount::{KERNEL_READAHEAD_KB, Mount, MountOptions, mount};
pub use objects::{Done, Meta, Name, ObjError, Objects, Put, Vouched};
pub use read_stats::{LATENCY_BOUNDS, ReadSnapshot, ReadStats};
