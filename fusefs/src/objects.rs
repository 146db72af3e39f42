//! What the filesystem asks of the agent: the [`Objects`] trait, the names
//! it resolves ([`Name`]), what it answers ([`Meta`], [`Put`]), how it
//! fails ([`ObjError`], and the errno each failure is to the kernel) and
//! the [`Done`] callback that completes a call that may wait.

use std::fs::File;
use std::path::Path;

use dot_store::tree::Manifest;
use dot_store::{Bytes, Oid, Ticket};
use fuser::Errno;

/// What a name under the mount names.
#[derive(Debug, Clone)]
pub enum Name {
    /// `dot1-sha256-...`
    Oid(Oid),
    /// `dot1.<base64url>`
    Ticket(Box<Ticket>),
}

impl Name {
    /// Parses a directory entry name; `None` for anything else (answered
    /// with ENOENT at once, no network).
    pub fn parse(name: &str) -> Option<Name> {
        if name.starts_with(dot_store::oid::OID_PREFIX) {
            name.parse().ok().map(Name::Oid)
        } else if name.starts_with("dot1.") {
            name.parse().ok().map(|t| Name::Ticket(Box::new(t)))
        } else {
            None
        }
    }
}

/// The digest of the descriptor list a name vouches for: a ticket's, or
/// none for a bare OID. Files of one object under names that vouch for
/// different lists (or none) are different files to the kernel, so bytes a
/// ticket's list made readable early are never seen under another name.
pub type Vouched = Option<[u8; 32]>;

/// An object's identity and size, and what its name vouches for.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// The OID.
    pub oid: Oid,
    /// Size in bytes.
    pub size: u64,
    /// The list the name it was found by vouches for.
    pub vouched: Vouched,
}

/// A finished put.
#[derive(Debug, Clone)]
pub struct Put {
    /// The OID.
    pub oid: Oid,
    /// Size in bytes.
    pub size: u64,
    /// The ticket.
    pub ticket: String,
}

/// Why an object operation failed.
#[derive(Debug, Clone)]
pub enum ObjError {
    /// No such object, or nobody to ask.
    NotFound,
    /// No source delivered in time.
    TimedOut,
    /// Anything else (logged by the implementation).
    Failed(String),
}

impl ObjError {
    /// The errno the kernel is answered with.
    pub(crate) fn errno(&self) -> Errno {
        match self {
            ObjError::NotFound => Errno::ENOENT,
            ObjError::TimedOut | ObjError::Failed(_) => Errno::EIO,
        }
    }
}

/// A callback completing an operation, from any thread.
pub type Done<T> = Box<dyn FnOnce(Result<T, ObjError>) + Send>;

/// What the filesystem needs from the agent.
pub trait Objects: Send + Sync + 'static {
    /// Resolves a ticket or OID to the object's size (which may mean asking
    /// a peer for its descriptors).
    fn resolve(&self, name: Name, done: Done<Meta>);
    /// Resolves a tree's ticket: its manifest fetched whole and checked.
    fn tree(&self, ticket: Ticket, done: Done<(Meta, Manifest)>);
    /// Reads up to `len` bytes of `oid` at `offset` (fewer only at the
    /// end) for a file found by a name vouching for `vouched`, fetching
    /// what is missing; only bytes that pass the check that name implies
    /// (a chunk of the vouched list, or the whole object's hash); fails
    /// after the agent's timeout.
    fn read(&self, oid: Oid, vouched: Vouched, offset: u64, len: u32, done: Done<Bytes>);
    /// The same bytes if they can be had at once from local, verified
    /// chunks (no waiting); `None` sends the read the slow way.
    fn read_now(&self, oid: Oid, vouched: Vouched, offset: u64, len: u32) -> Option<Bytes>;
    /// Whether `oid` is known to be held whole here (no waiting: `false`
    /// when not known yet); such an object's files open without resolving.
    fn known_whole(&self, oid: Oid) -> bool;
    /// The store's own file of a complete object, for passthrough; `None`
    /// when the object is not complete or is a referenced file.
    fn backing_file(&self, oid: Oid) -> Option<File>;
    /// The complete objects held locally.
    fn list(&self) -> Vec<Meta>;
    /// Puts the finished file at `path` (local work, may block briefly).
    ///
    /// # Errors
    /// Why the put failed.
    fn put(&self, path: &Path) -> Result<Put, String>;
    /// A ticket for a local object.
    fn ticket(&self, oid: Oid) -> Option<String>;
}
