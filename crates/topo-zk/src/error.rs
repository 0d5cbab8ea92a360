//! The one place where ZooKeeper client errors become [`TopoError`]s.

use topo_core::TopoError;
use zookeeper_client::Error;

/// Whether `err` says the connection failed under a call (the client reconnects within the
/// session): a read may be made again.
pub(crate) fn connection_lost(err: &Error) -> bool {
    matches!(err, Error::ConnectionLoss | Error::Custom(_))
}

/// Whether a write that failed with `err` may have been applied all the same: its request
/// may have reached the server before the connection failed or the answer timed out.
pub(crate) fn outcome_unknown(err: &Error) -> bool {
    connection_lost(err)
        || matches!(
            err,
            Error::Timeout | Error::SessionMoved | Error::UnexpectedError(_)
        )
}

/// The error for a write about `what` that may or may not have been applied (`why`).
pub(crate) fn unknown(what: &str, why: impl std::fmt::Display) -> TopoError {
    TopoError::OutcomeUnknown(format!(
        "{what}: the write may or may not have been applied ({why})"
    ))
}

/// Converts a ZooKeeper error met while working on `path`.
pub(crate) fn convert(err: Error, path: &str) -> TopoError {
    match err {
        Error::NoNode => TopoError::NoNode(path.to_string()),
        Error::NodeExists => TopoError::NodeExists(path.to_string()),
        Error::BadVersion => TopoError::BadVersion(path.to_string()),
        Error::NotEmpty => TopoError::NodeNotEmpty(path.to_string()),
        // Vitess maps an expired session to a timeout too; the caller's next call starts a
        // new session.
        Error::SessionExpired | Error::Timeout => TopoError::Timeout(format!("{path}: {err}")),
        Error::NoAuth => TopoError::backend(
            crate::BACKEND,
            format!("{path}: not authorized (check --topo-zk-auth-file)"),
            err,
        ),
        other => TopoError::backend(crate::BACKEND, path.to_string(), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topo_core::ErrorKind;

    #[test]
    fn codes_map_to_kinds() {
        assert!(convert(Error::NoNode, "/k").is_no_node());
        assert!(convert(Error::NodeExists, "/k").is(ErrorKind::NodeExists));
        assert!(convert(Error::BadVersion, "/k").is(ErrorKind::BadVersion));
        assert!(convert(Error::NotEmpty, "/k").is(ErrorKind::NodeNotEmpty));
        assert!(convert(Error::SessionExpired, "/k").is(ErrorKind::Timeout));
        assert!(convert(Error::NoAuth, "/k")
            .to_string()
            .contains("not authorized"));
    }

    #[test]
    fn lost_answers_are_unknown_outcomes() {
        assert!(outcome_unknown(&Error::ConnectionLoss));
        assert!(outcome_unknown(&Error::Timeout));
        assert!(!outcome_unknown(&Error::BadVersion));
        assert!(!outcome_unknown(&Error::NoNode));
        assert!(unknown("/k", "timed out").is(ErrorKind::OutcomeUnknown));
    }
}
