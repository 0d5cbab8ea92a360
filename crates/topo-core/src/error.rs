//! [`TopoError`]: the error kinds of the topology service.
//!
//! The first eleven kinds follow Vitess's `topo.ErrorCode` one for one, with the same message
//! texts, so logs and CLI output read the same as Vitess's. Every kind carries the path (or the
//! name) it is about. Errors that fit none of them (a refused connection, a corrupt response)
//! are [`TopoError::Backend`], which names the backend and keeps the source.

use std::fmt;
use std::sync::Arc;

/// A `Result` whose error is a [`TopoError`].
pub type Result<T, E = TopoError> = std::result::Result<T, E>;

/// The kinds of [`TopoError`], in Vitess's `ErrorCode` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The node already exists.
    NodeExists,
    /// The node does not exist.
    NoNode,
    /// The node has children.
    NodeNotEmpty,
    /// A deadline passed.
    Timeout,
    /// The operation was cancelled.
    Interrupted,
    /// A compare-and-set found another version.
    BadVersion,
    /// Only part of a multi-part result is available.
    PartialResult,
    /// An update callback found nothing to change.
    NoUpdateNeeded,
    /// The backend (or the requested implementation) does not offer this operation.
    NoImplementation,
    /// No read-only implementation exists.
    NoReadOnlyImplementation,
    /// The server refused for lack of resources (for example a response over its size limit).
    ResourceExhausted,
    /// The operation needs a lock that is not held (any more).
    LockLost,
    /// The caller passed an argument the topology cannot accept.
    InvalidArgument,
    /// The topology is not in a state that allows the operation.
    FailedPrecondition,
    /// The connection refuses writes.
    ReadOnly,
    /// Stored bytes could not be decoded.
    Corrupt,
    /// A write whose answer was lost: it may or may not have been applied.
    OutcomeUnknown,
    /// Any other backend failure.
    Backend,
}

/// An error of the topology service.
///
/// `Clone + PartialEq` so tests can compare errors; sources are kept behind an [`Arc`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TopoError {
    /// `node already exists: <path>`
    #[error("node already exists: {0}")]
    NodeExists(String),
    /// `node doesn't exist: <path>`
    #[error("node doesn't exist: {0}")]
    NoNode(String),
    /// `node not empty: <path>`
    #[error("node not empty: {0}")]
    NodeNotEmpty(String),
    /// `deadline exceeded: <path>`
    #[error("deadline exceeded: {0}")]
    Timeout(String),
    /// `interrupted: <path>`
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// `bad node version: <path>`
    #[error("bad node version: {0}")]
    BadVersion(String),
    /// `partial result: <what>`
    #[error("partial result: {0}")]
    PartialResult(String),
    /// `no update needed: <path>`: returned by update callbacks to skip the write.
    #[error("no update needed: {0}")]
    NoUpdateNeeded(String),
    /// `no such topology implementation <name>` (Vitess prints no colon here).
    #[error("no such topology implementation {0}")]
    NoImplementation(String),
    /// `no read-only topology implementation <name>`
    #[error("no read-only topology implementation {0}")]
    NoReadOnlyImplementation(String),
    /// `server resource exhausted: <path>`
    #[error("server resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A fenced write or a lock check found the lock no longer held.
    #[error("lock lost: {0}")]
    LockLost(String),
    /// A name or argument the topology cannot accept; the message names it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The topology is not in a state that allows the operation; the message says why.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The connection is read-only.
    #[error("cannot perform {op} on {path} as the topology server connection is read-only")]
    ReadOnly {
        /// The refused operation.
        op: &'static str,
        /// The path it was called on.
        path: String,
    },
    /// Stored bytes that do not decode as the record they should hold.
    #[error("cannot decode {path}: {message}")]
    Corrupt {
        /// Where the bytes were read.
        path: String,
        /// What is wrong with them.
        message: String,
    },
    /// A write whose answer was lost (the connection dropped or the call timed out after
    /// the request was sent) and whose outcome could not be read back: it may or may not
    /// have been applied. Not retryable as such: the caller must read first.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Any other failure of a backend, with its source.
    #[error("{backend}: {message}{}", source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Backend {
        /// The backend's registered name (`etcd2`, `zk2`, ...).
        backend: &'static str,
        /// What failed, naming the path where there is one.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<SharedError>,
    },
}

impl TopoError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TopoError::NodeExists(_) => ErrorKind::NodeExists,
            TopoError::NoNode(_) => ErrorKind::NoNode,
            TopoError::NodeNotEmpty(_) => ErrorKind::NodeNotEmpty,
            TopoError::Timeout(_) => ErrorKind::Timeout,
            TopoError::Interrupted(_) => ErrorKind::Interrupted,
            TopoError::BadVersion(_) => ErrorKind::BadVersion,
            TopoError::PartialResult(_) => ErrorKind::PartialResult,
            TopoError::NoUpdateNeeded(_) => ErrorKind::NoUpdateNeeded,
            TopoError::NoImplementation(_) => ErrorKind::NoImplementation,
            TopoError::NoReadOnlyImplementation(_) => ErrorKind::NoReadOnlyImplementation,
            TopoError::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            TopoError::LockLost(_) => ErrorKind::LockLost,
            TopoError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            TopoError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            TopoError::ReadOnly { .. } => ErrorKind::ReadOnly,
            TopoError::Corrupt { .. } => ErrorKind::Corrupt,
            TopoError::OutcomeUnknown(_) => ErrorKind::OutcomeUnknown,
            TopoError::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// True when this error is of `kind` (Vitess's `IsErrType`).
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind() == kind
    }

    /// True for `NoNode`.
    pub fn is_no_node(&self) -> bool {
        self.is(ErrorKind::NoNode)
    }

    /// True when the same call may succeed if made again: timeouts, resource exhaustion and
    /// backend (transport) failures. Version conflicts are not retryable as such: the caller
    /// must re-read first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Timeout | ErrorKind::ResourceExhausted | ErrorKind::Backend
        )
    }

    /// A backend failure with a message and a source.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        TopoError::Backend {
            backend,
            message: message.into(),
            source: Some(SharedError(Arc::new(source))),
        }
    }

    /// A backend failure with only a message.
    pub fn backend_msg(backend: &'static str, message: impl Into<String>) -> Self {
        TopoError::Backend {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// An [`TopoError::InvalidArgument`] with the given message.
    pub fn invalid(message: impl Into<String>) -> Self {
        TopoError::InvalidArgument(message.into())
    }

    /// A [`TopoError::FailedPrecondition`] with the given message.
    pub fn precondition(message: impl Into<String>) -> Self {
        TopoError::FailedPrecondition(message.into())
    }

    /// Bytes at `path` that do not decode.
    pub fn corrupt(path: impl Into<String>, message: impl fmt::Display) -> Self {
        TopoError::Corrupt {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// A cloneable, comparable holder for an error source (compared by identity).
#[derive(Clone, Debug)]
pub struct SharedError(pub Arc<dyn std::error::Error + Send + Sync>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for SharedError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

static_assertions::assert_impl_all!(TopoError: Send, Sync, Clone);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_vitess() {
        assert_eq!(
            TopoError::NodeExists("/a".into()).to_string(),
            "node already exists: /a"
        );
        assert_eq!(
            TopoError::NoNode("/a".into()).to_string(),
            "node doesn't exist: /a"
        );
        assert_eq!(
            TopoError::NoImplementation("foo".into()).to_string(),
            "no such topology implementation foo"
        );
        assert_eq!(
            TopoError::BadVersion("/x".into()).to_string(),
            "bad node version: /x"
        );
    }

    #[test]
    fn classification() {
        assert!(TopoError::Timeout("x".into()).is_retryable());
        assert!(!TopoError::BadVersion("x".into()).is_retryable());
        assert!(!TopoError::NoNode("x".into()).is_retryable());
        assert!(!TopoError::OutcomeUnknown("x".into()).is_retryable());
        assert_eq!(
            TopoError::OutcomeUnknown("/a".into()).to_string(),
            "outcome unknown: /a"
        );
        assert!(TopoError::NoNode("x".into()).is_no_node());
        assert_eq!(
            TopoError::ReadOnly {
                op: "Create",
                path: "/a".into()
            }
            .kind(),
            ErrorKind::ReadOnly
        );
    }
}
