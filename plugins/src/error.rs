//! Errors of transfer plugins.

use crate::gtc::proto::{ErrorCode, ProtoError};

/// Why a transfer from a source failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    /// Could not reach the source, or the connection broke.
    #[error("{peer}: {message}")]
    Connection {
        /// The source.
        peer: String,
        /// What happened.
        message: String,
    },
    /// The source sent a frame that breaks the protocol.
    #[error("{peer}: protocol violation: {source}")]
    Protocol {
        /// The source.
        peer: String,
        /// The violation.
        #[source]
        source: ProtoError,
    },
    /// The source refused or failed a request.
    #[error("{peer}: {code:?}: {message}")]
    Refused {
        /// The source.
        peer: String,
        /// Its error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The source described the object inconsistently.
    #[error("{peer}: bad descriptor list: {reason}")]
    BadDescriptors {
        /// The source.
        peer: String,
        /// What is wrong.
        reason: String,
    },
    /// The source sent bytes that are not the chunk asked for.
    #[error("{peer}: sent a corrupt chunk: {source}")]
    Corrupt {
        /// The source.
        peer: String,
        /// What did not match.
        #[source]
        source: dot_store::ChunkError,
    },
}
