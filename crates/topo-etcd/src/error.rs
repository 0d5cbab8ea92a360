//! The one place where etcd client errors become [`TopoError`]s.

use topo_core::TopoError;

/// Converts an etcd client error met while working on `path`.
pub(crate) fn convert(err: etcd_client::Error, path: &str) -> TopoError {
    use tonic::Code;
    match &err {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::NotFound => TopoError::NoNode(path.to_string()),
            Code::Unavailable | Code::DeadlineExceeded => match connect_failure(status) {
                Some(cause) => TopoError::backend_msg(
                    crate::BACKEND,
                    format!("{path}: cannot connect to etcd: {cause}"),
                ),
                None => TopoError::Timeout(format!("{path}: {}", status.message())),
            },
            // etcd's own "too large", and tonic's client-side message limit (OutOfRange).
            Code::ResourceExhausted => {
                TopoError::ResourceExhausted(format!("{path}: {}", status.message()))
            }
            Code::OutOfRange if status.message().contains("message length too large") => {
                TopoError::ResourceExhausted(format!("{path}: {}", status.message()))
            }
            // A read at a revision compacted away (or not reached yet): no such version.
            Code::OutOfRange if status.message().contains("required revision") => {
                TopoError::NoNode(path.to_string())
            }
            Code::Cancelled => TopoError::Interrupted(path.to_string()),
            _ => TopoError::backend(crate::BACKEND, path.to_string(), err),
        },
        _ => TopoError::backend(crate::BACKEND, path.to_string(), err),
    }
}

/// Why a connection to a member could not be opened, when that is what `status` reports:
/// `connection refused`, or the innermost cause (a DNS or TLS failure) as it reads.
fn connect_failure(status: &tonic::Status) -> Option<String> {
    let mut source = std::error::Error::source(status);
    let mut connect = false;
    let mut innermost = None;
    while let Some(e) = source {
        connect |= e.is::<tonic::ConnectError>();
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return connect.then(|| "connection refused".to_string());
            }
        }
        innermost = Some(e.to_string());
        source = e.source();
    }
    if connect {
        innermost
    } else {
        None
    }
}

/// True for errors after which the same call may succeed on another endpoint: the member
/// is unavailable, or the connection to it broke (tonic reports that as `Unknown` with a
/// transport-error source, or as `Cancelled`).
pub(crate) fn is_unavailable(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(s) => {
            // We never cancel a gRPC call ourselves (an abandoned call is just dropped), so a
            // `Cancelled` status means the connection went away under it.
            s.code() == tonic::Code::Unavailable
                || s.code() == tonic::Code::Cancelled
                || (s.code() == tonic::Code::Unknown && s.message() == "transport error")
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// True when the request provably never reached a server: the connection to the member
/// could not even be opened. Only then may a write be sent again without further thought.
pub(crate) fn never_sent(err: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = err else {
        return false;
    };
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// True when the server answered that it did not apply the request (a rejection by its
/// own rules, not a lost connection or an unfinished consensus round).
pub(crate) fn rejected(err: &etcd_client::Error) -> bool {
    use tonic::Code;
    match err {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::ResourceExhausted
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
        ),
        // Client-side failures (a bad argument, an unusable endpoint) before sending.
        etcd_client::Error::InvalidArgs(_)
        | etcd_client::Error::InvalidUri(_)
        | etcd_client::Error::InvalidMetadataValue(_) => true,
        _ => false,
    }
}

/// True for errors that retrying cannot fix: the server refuses the request itself (no
/// permission, no or bad authentication, an invalid request), as opposed to a member or
/// connection that is down for now.
pub(crate) fn permanent(err: &etcd_client::Error) -> bool {
    use tonic::Code;
    match err {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::PermissionDenied
                | Code::Unauthenticated
                | Code::InvalidArgument
                | Code::Unimplemented
        ),
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => true,
        _ => false,
    }
}

/// True for the reason of a watch etcd cancelled that a new watch would meet again
/// (compactions are told apart by their compact revision, not here).
pub(crate) fn permanent_cancel(reason: &str) -> bool {
    [
        "permission denied",
        "user name is empty",
        "invalid auth token",
        "authentication failed",
        "key is not provided",
    ]
    .iter()
    .any(|r| reason.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_kinds() {
        let st = |c| etcd_client::Error::GRpcStatus(tonic::Status::new(c, "x"));
        assert!(convert(st(tonic::Code::NotFound), "/k").is_no_node());
        assert!(convert(st(tonic::Code::Unavailable), "/k").is(topo_core::ErrorKind::Timeout));
        assert!(convert(st(tonic::Code::ResourceExhausted), "/k")
            .is(topo_core::ErrorKind::ResourceExhausted));
        let too_large = etcd_client::Error::GRpcStatus(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        ));
        assert!(convert(too_large, "/k").is(topo_core::ErrorKind::ResourceExhausted));
        // etcd's compaction error is OutOfRange too, and is about a version that is gone.
        let compacted = etcd_client::Error::GRpcStatus(tonic::Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert!(convert(compacted, "/k").is_no_node());
        let other = etcd_client::Error::GRpcStatus(tonic::Status::out_of_range("x"));
        assert!(convert(other, "/k").is(topo_core::ErrorKind::Backend));
        assert!(convert(st(tonic::Code::Cancelled), "/k").is(topo_core::ErrorKind::Interrupted));
        assert!(convert(st(tonic::Code::Internal), "/k").is(topo_core::ErrorKind::Backend));
        assert!(is_unavailable(&st(tonic::Code::Unavailable)));
        assert!(!is_unavailable(&st(tonic::Code::NotFound)));
        assert!(is_unavailable(&st(tonic::Code::Cancelled)));
        let broken = etcd_client::Error::GRpcStatus(tonic::Status::unknown("transport error"));
        assert!(is_unavailable(&broken));
        assert!(
            !never_sent(&broken),
            "a broken connection may have carried the request"
        );
        assert!(!rejected(&broken));
        assert!(
            !never_sent(&st(tonic::Code::Unavailable)),
            "etcd's \"request timed out\""
        );
        assert!(rejected(&st(tonic::Code::InvalidArgument)));
        assert!(permanent(&st(tonic::Code::PermissionDenied)));
        assert!(!permanent(&st(tonic::Code::Unavailable)));
        assert!(permanent_cancel("etcdserver: permission denied"));
        assert!(!permanent_cancel(
            "mvcc: required revision is a future revision"
        ));
    }
}
