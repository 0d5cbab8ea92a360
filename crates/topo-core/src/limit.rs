//! The largest value a backend stores, checked before anything is sent.
//!
//! etcd refuses requests over its `--max-request-bytes` (1.5 MiB by default) and ZooKeeper
//! closes the connection on a packet over its `jute.maxbuffer` (1 MiB by default) — the
//! client then reconnects and resends until its deadline, disturbing every watch and lock
//! of the session. So each backend knows its limit and refuses a larger create or update at
//! once with [`TopoError::TooLarge`], which names the path, the size, the limit and the
//! setting that raises it. The embedded store takes the smallest of the others by default,
//! so whatever fits locally can be copied to etcd or ZooKeeper.

use crate::error::{Result, TopoError};

/// Room left in a request for the key, a fence's compare and the protocol's own fields.
pub const REQUEST_OVERHEAD: usize = 8 * 1024;

/// etcd's default `--max-request-bytes`.
pub const ETCD_DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// ZooKeeper's default `jute.maxbuffer` (0xfffff).
pub const ZK_DEFAULT_JUTE_MAXBUFFER: usize = 0xfffff;

/// The value limit of a backend: values over `max` bytes are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueLimit {
    /// The largest value accepted, in bytes.
    pub max: usize,
    /// The setting that raises the limit, for the error message.
    pub setting: &'static str,
}

impl ValueLimit {
    /// The limit of a server that refuses requests over `request_bytes`: that less
    /// [`REQUEST_OVERHEAD`].
    pub fn for_requests(request_bytes: usize, setting: &'static str) -> Self {
        ValueLimit {
            max: request_bytes.saturating_sub(REQUEST_OVERHEAD),
            setting,
        }
    }

    /// The embedded store's default: the smallest of etcd's and ZooKeeper's defaults.
    pub fn smallest_default(setting: &'static str) -> Self {
        ValueLimit {
            max: ETCD_DEFAULT_MAX_REQUEST_BYTES.min(ZK_DEFAULT_JUTE_MAXBUFFER) - REQUEST_OVERHEAD,
            setting,
        }
    }

    /// Succeeds when `size` bytes fit.
    ///
    /// # Errors
    /// [`TopoError::TooLarge`] naming `path` when they do not.
    pub fn check(&self, path: &str, size: usize) -> Result<()> {
        if size <= self.max {
            return Ok(());
        }
        Err(TopoError::TooLarge {
            path: path.to_string(),
            size,
            limit: self.max,
            setting: self.setting,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn refuses_one_byte_over_and_names_everything() {
        let limit = ValueLimit::for_requests(10_000, "--max-bytes");
        assert_eq!(limit.max, 10_000 - REQUEST_OVERHEAD);
        assert!(limit.check("/a", limit.max).is_ok());
        let err = limit.check("/a/b", limit.max + 1).unwrap_err();
        assert!(err.is(ErrorKind::TooLarge));
        assert!(!err.is_retryable());
        let text = err.to_string();
        for part in [
            "/a/b",
            &(limit.max + 1).to_string(),
            &limit.max.to_string(),
            "--max-bytes",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        assert_eq!(
            ValueLimit::smallest_default("x").max,
            ZK_DEFAULT_JUTE_MAXBUFFER - REQUEST_OVERHEAD
        );
    }
}
