//! The one place where SQLite errors become [`TopoError`]s.

use topo_core::TopoError;

/// Converts a SQLite error met while working on `what` (a key or the database path).
pub(crate) fn convert(err: rusqlite::Error, what: &str) -> TopoError {
    use rusqlite::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => TopoError::Timeout(
            format!("{what}: the database stayed locked by another process"),
        ),
        Some(ErrorCode::DiskFull) => TopoError::ResourceExhausted(format!("{what}: disk full")),
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            TopoError::corrupt(what, format_args!("the database file is damaged: {err}"))
        }
        _ => TopoError::backend("local", what.to_string(), err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_a_timeout_and_others_name_the_key() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(convert(busy, "/k").is(topo_core::ErrorKind::Timeout));
        let other = rusqlite::Error::InvalidQuery;
        assert!(convert(other, "/k").to_string().contains("/k"));
    }
}
