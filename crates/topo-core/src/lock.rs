//! What every backend's locks share: Vitess's lock layout (`<dir>/locks/<entry>`), the
//! three kinds of lock call, the TTL of named locks, the "lock already exists" error and
//! the rule for election names. [`Conn::lock_with`](crate::Conn::lock_with) takes a
//! [`LockOptions`]; the short forms (`lock`, `lock_with_ttl`, `lock_name`, `try_lock`) are
//! in [`ConnExt`](crate::ConnExt).

use std::time::Duration;

use crate::error::{Result, TopoError};

/// Vitess's `NamedLockTTL`: the TTL of a named lock's entry where the backend has TTLs.
pub const NAMED_LOCK_TTL: Duration = Duration::from_secs(24 * 3600);

/// How a lock call waits, and what it needs to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Waits behind holders; the directory must have entries (`NoNode` otherwise).
    Blocking,
    /// Waits behind holders; the directory need not exist (Vitess's `LockName`).
    Named,
    /// Never waits: `NodeExists` at once when the lock is held or waited for.
    Try,
}

/// The options of one lock call: its kind and, optionally, the TTL of its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// How the call waits.
    pub kind: LockKind,
    /// The entry's lease or session TTL; `None` takes the backend's default (for a named
    /// lock, [`NAMED_LOCK_TTL`]). Ignored by backends whose locks are session-bound.
    pub ttl: Option<Duration>,
}

impl LockOptions {
    /// A blocking lock with the backend's TTL.
    pub fn blocking() -> Self {
        LockOptions {
            kind: LockKind::Blocking,
            ttl: None,
        }
    }

    /// A named lock (the directory need not exist) with [`NAMED_LOCK_TTL`].
    pub fn named() -> Self {
        LockOptions {
            kind: LockKind::Named,
            ttl: None,
        }
    }

    /// A lock that never waits.
    pub fn try_once() -> Self {
        LockOptions {
            kind: LockKind::Try,
            ttl: None,
        }
    }

    /// The same options with `ttl` as the entry's TTL.
    pub fn with_ttl(self, ttl: Duration) -> Self {
        LockOptions {
            ttl: Some(ttl),
            ..self
        }
    }

    /// The TTL to give the entry on a backend whose default lock TTL is `default`.
    pub fn ttl_or(&self, default: Duration) -> Duration {
        match (self.ttl, self.kind) {
            (Some(ttl), _) => ttl,
            (None, LockKind::Named) => NAMED_LOCK_TTL,
            (None, _) => default,
        }
    }
}

/// The queue directory of the lock on `dir` (a key or a relative path): `<dir>/locks`.
pub fn locks_dir(dir: &str) -> String {
    format!("{}/locks", dir.trim_end_matches('/'))
}

/// Vitess's error for a lock that is held: `NodeExists` with
/// `lock already exists at path <dir>`.
pub fn lock_exists(dir: &str) -> TopoError {
    TopoError::NodeExists(format!("lock already exists at path {dir}"))
}

/// Checks an election name: one path element, not `.` or `..`.
///
/// # Errors
/// `InvalidArgument` naming the election otherwise.
pub fn check_election_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(TopoError::invalid(format!(
            "invalid election name {name:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn ttl_defaults_by_kind() {
        let d = Duration::from_secs(30);
        assert_eq!(LockOptions::blocking().ttl_or(d), d);
        assert_eq!(LockOptions::try_once().ttl_or(d), d);
        assert_eq!(LockOptions::named().ttl_or(d), NAMED_LOCK_TTL);
        let five = Duration::from_secs(5);
        assert_eq!(LockOptions::named().with_ttl(five).ttl_or(d), five);
    }

    #[test]
    fn election_names() {
        for bad in ["", ".", "..", "a/b"] {
            let e = check_election_name(bad).unwrap_err();
            assert!(e.is(ErrorKind::InvalidArgument), "{bad:?}: {e}");
        }
        check_election_name("primary").unwrap();
    }

    #[test]
    fn layout_and_message() {
        assert_eq!(locks_dir("/root/keyspaces/ks/"), "/root/keyspaces/ks/locks");
        let e = lock_exists("keyspaces/ks");
        assert!(e.is(ErrorKind::NodeExists));
        assert!(e
            .to_string()
            .contains("lock already exists at path keyspaces/ks"));
    }
}
