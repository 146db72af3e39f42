//! Why a fetch failed: each source's failure said once (the source, then
//! the cause, never the source twice), and the kind of the whole failure
//! for a caller to act on ([`ErrorKind`]).

use dot_plugins::TransferError;
use dot_plugins::gtc::proto::ErrorCode;

use crate::api::ErrorKind;

/// The failures of a fetch's sources so far.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    said: Vec<String>,
    kinds: Vec<ErrorKind>,
}

impl Failures {
    /// Records that `source` failed with `e`.
    pub fn push(&mut self, source: &str, e: &anyhow::Error) {
        let (detail, kind) = match e.downcast_ref::<TransferError>() {
            Some(t) => (detail(t), kind_of_transfer(t)),
            None => (
                format!("{e:#}"),
                e.downcast_ref::<dot_store::Error>()
                    .and_then(kind_of_store)
                    .unwrap_or(ErrorKind::Unreachable),
            ),
        };
        self.push_said(source, &detail, kind);
    }

    /// Records that `source` failed as `detail` says.
    pub fn push_said(&mut self, source: &str, detail: &str, kind: ErrorKind) {
        self.said.push(format!("{source}: {detail}"));
        self.kinds.push(kind);
    }

    pub fn append(&mut self, other: &mut Failures) {
        self.said.append(&mut other.said);
        self.kinds.append(&mut other.kinds);
    }

    pub fn is_empty(&self) -> bool {
        self.said.is_empty()
    }

    /// The failure of the whole fetch of `oid`: integrity if any source
    /// sent bad bytes, else not found if any said it has no such object,
    /// else unreachable.
    pub fn into_error(self, oid: dot_store::Oid) -> Failure {
        let kind = [ErrorKind::Integrity, ErrorKind::NotFound]
            .into_iter()
            .find(|k| self.kinds.contains(k))
            .unwrap_or(ErrorKind::Unreachable);
        Failure {
            why: format!("could not get {oid}: {}", self.said.join("; ")),
            kind: Some(kind),
        }
    }
}

/// Why a fetch failed, as its readers and the local API's answer say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct Failure {
    /// Why, said once.
    pub why: String,
    /// What kind of failure, where known.
    pub kind: Option<ErrorKind>,
}

/// A transfer failure without the source's name (the caller names it).
fn detail(e: &TransferError) -> String {
    match e {
        TransferError::Connection { message, .. } => message.clone(),
        TransferError::Protocol { source, .. } => format!("protocol violation: {source}"),
        TransferError::Refused { code, message, .. } => match code {
            ErrorCode::Unauthorized | ErrorCode::NotFound => message.clone(),
            _ => format!("{code:?}: {message}"),
        },
        TransferError::BadDescriptors { reason, .. } => format!("bad descriptor list: {reason}"),
        TransferError::Corrupt { source, .. } => format!("sent a corrupt chunk: {source}"),
    }
}

fn kind_of_transfer(e: &TransferError) -> ErrorKind {
    match e {
        TransferError::Connection { .. } | TransferError::Protocol { .. } => ErrorKind::Unreachable,
        TransferError::Refused {
            code: ErrorCode::Unauthorized | ErrorCode::NotFound,
            ..
        } => ErrorKind::NotFound,
        TransferError::Refused { .. } => ErrorKind::Unreachable,
        TransferError::BadDescriptors { .. } | TransferError::Corrupt { .. } => {
            ErrorKind::Integrity
        }
    }
}

/// The kind of a store error, where it has one.
pub(crate) fn kind_of_store(e: &dot_store::Error) -> Option<ErrorKind> {
    use dot_store::Error as E;
    match e {
        E::UnknownObject(_) => Some(ErrorKind::NotFound),
        E::ChunkMismatch { .. }
        | E::ChunkLength { .. }
        | E::ObjectMismatch { .. }
        | E::FileChanged { .. } => Some(ErrorKind::Integrity),
        _ => None,
    }
}

/// The kind of any error the agent answers with: a fetch's, a store's, a
/// transfer's, found anywhere in the chain.
pub(crate) fn kind_of(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain().find_map(|cause| {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.kind;
        }
        if let Some(s) = cause.downcast_ref::<dot_store::Error>() {
            return kind_of_store(s);
        }
        cause.downcast_ref::<TransferError>().map(kind_of_transfer)
    })
}
