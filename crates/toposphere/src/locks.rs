//! Keyspace, shard, named and routing-rules locks (spec §3.10), with Vitess's JSON lock
//! descriptor, the lock timeout, and fencing.
//!
//! Instead of Go's context map, a lock is a value: [`TopoLock`]. Operations that need a
//! lock take it as an argument, check that it is the right one and still held, and make
//! their writes fenced, so a holder that lost its lock cannot write.

use std::time::Duration;

use serde::Serialize;
use topo_core::{ConnExt, Fence, LockGuard, Result, TopoError};

use crate::names::{validate_object_name, validate_path_element};
use crate::{paths, Server};

/// What a lock protects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockTarget {
    /// A keyspace (`keyspaces/<ks>`).
    Keyspace(String),
    /// A shard (`keyspaces/<ks>/shards/<shard>`).
    Shard(String, String),
    /// A named lock (`internal/named_locks/<name>`).
    Named(String),
    /// The routing rules (`routing_rules`).
    RoutingRules,
}

impl std::fmt::Display for LockTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockTarget::Keyspace(ks) => write!(f, "keyspace {ks}"),
            LockTarget::Shard(ks, s) => write!(f, "shard {ks}/{s}"),
            LockTarget::Named(n) => write!(f, "named lock {n}"),
            LockTarget::RoutingRules => f.write_str("routing rules"),
        }
    }
}

/// Vitess's lock descriptor, stored as the lock entry's contents (JSON, Go field order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Descriptor<'a> {
    action: &'a str,
    host_name: String,
    user_name: String,
    time: String,
    options: serde_json::Map<String, serde_json::Value>,
    status: &'a str,
}

/// The JSON lock descriptor for `action`, as Vitess writes it (two-space indent).
pub fn lock_descriptor(action: &str) -> String {
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let user_name = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let d = Descriptor {
        action,
        host_name,
        user_name,
        time: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        options: serde_json::Map::new(),
        status: "Running",
    };
    serde_json::to_string_pretty(&d).unwrap_or_default()
}

/// The least time [`TopoLock::unlock`] allows beyond the backend's own bound on an unlock
/// (the remote-operation timeout).
const UNLOCK_MARGIN: Duration = Duration::from_secs(2);

/// The outer bound of an unlock, given the backend's own bound `remote`: with a margin, so
/// the backend reports its own timeout, and starts its background clean-up, before this
/// drops the call (which would otherwise cancel it before the clean-up began).
fn unlock_bound(remote: Duration) -> Duration {
    remote + UNLOCK_MARGIN.max(remote / 4)
}

/// A held topology lock. Dropping it releases the lock in the background; prefer
/// [`TopoLock::unlock`], which reports errors.
#[derive(Debug)]
pub struct TopoLock {
    target: LockTarget,
    guard: LockGuard,
    unlock_timeout: Duration,
}

impl TopoLock {
    /// What is locked.
    pub fn target(&self) -> &LockTarget {
        &self.target
    }

    /// The fence for writes made under this lock.
    pub fn fence(&self) -> Fence {
        self.guard.fence()
    }

    /// The fencing token (larger for every later holder).
    pub fn fencing_token(&self) -> u64 {
        self.guard.fencing_token()
    }

    /// Succeeds while the lock is held.
    ///
    /// # Errors
    /// `LockLost` when the backend lost it.
    pub async fn check(&self) -> Result<()> {
        self.guard.check().await
    }

    /// Releases the lock, bounded by the remote-operation timeout plus a margin (the
    /// backend's own bound comes first).
    ///
    /// # Errors
    /// `LockLost` when it had been lost; `Timeout` when the backend did not answer.
    pub async fn unlock(self) -> Result<()> {
        let what = self.target.to_string();
        match tokio::time::timeout(self.unlock_timeout, self.guard.unlock()).await {
            Ok(r) => r,
            Err(_) => Err(TopoError::Timeout(format!("unlock of {what}"))),
        }
    }

    /// Succeeds when this is the lock of keyspace `ks` and it is still held (Vitess's
    /// `CheckKeyspaceLocked`).
    ///
    /// # Errors
    /// `InvalidArgument` when it locks something else; `LockLost` when lost.
    pub async fn require_keyspace(&self, ks: &str) -> Result<()> {
        self.require(
            |t| matches!(t, LockTarget::Keyspace(k) if k == ks),
            &format!("keyspace {ks}"),
        )
        .await
    }

    /// Succeeds when this is the lock of shard `ks/shard` and it is still held (Vitess's
    /// `CheckShardLocked`).
    ///
    /// # Errors
    /// As [`TopoLock::require_keyspace`].
    pub async fn require_shard(&self, ks: &str, shard: &str) -> Result<()> {
        self.require(
            |t| matches!(t, LockTarget::Shard(k, s) if k == ks && s == shard),
            &format!("shard {ks}/{shard}"),
        )
        .await
    }

    /// Succeeds when this is the routing-rules lock and it is still held.
    ///
    /// # Errors
    /// As [`TopoLock::require_keyspace`].
    pub async fn require_routing_rules(&self) -> Result<()> {
        self.require(|t| *t == LockTarget::RoutingRules, "routing rules")
            .await
    }

    async fn require(&self, ok: impl Fn(&LockTarget) -> bool, what: &str) -> Result<()> {
        if !ok(&self.target) {
            return Err(TopoError::invalid(format!(
                "{what} is not locked (the lock given is for {})",
                self.target
            )));
        }
        self.check().await
    }
}

impl Server {
    async fn take_lock(
        &self,
        target: LockTarget,
        dir: String,
        action: &str,
        mode: Mode,
    ) -> Result<TopoLock> {
        let conn = self.global();
        let contents = lock_descriptor(action);
        let timeout = self.config().lock_timeout;
        let guard = match mode {
            Mode::Blocking => conn.lock_timeout(&dir, &contents, timeout).await,
            Mode::Try => conn.try_lock(&dir, &contents).await,
            Mode::Named => {
                match tokio::time::timeout(timeout, conn.lock_name(&dir, &contents)).await {
                    Ok(r) => r,
                    Err(_) => Err(TopoError::Timeout(dir.clone())),
                }
            }
        }?;
        tracing::debug!(%target, token = guard.fencing_token(), "locked");
        Ok(TopoLock {
            target,
            guard,
            unlock_timeout: unlock_bound(self.config().remote_operation_timeout),
        })
    }

    /// Locks keyspace `ks` for `action`, waiting at most the lock timeout.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad name; `NoNode` when the keyspace has nothing in the
    /// topology; `Timeout` when the lock stays held by someone else.
    pub async fn lock_keyspace(&self, ks: &str, action: &str) -> Result<TopoLock> {
        validate_object_name(ks)?;
        self.take_lock(
            LockTarget::Keyspace(ks.into()),
            paths::keyspace_dir(ks),
            action,
            Mode::Blocking,
        )
        .await
    }

    /// Locks shard `ks/shard` for `action`, waiting at most the lock timeout.
    ///
    /// # Errors
    /// As [`Server::lock_keyspace`].
    pub async fn lock_shard(&self, ks: &str, shard: &str, action: &str) -> Result<TopoLock> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        self.take_lock(
            LockTarget::Shard(ks.into(), shard.into()),
            paths::shard_dir(ks, shard),
            action,
            Mode::Blocking,
        )
        .await
    }

    /// Locks shard `ks/shard` only if nobody holds or waits for it.
    ///
    /// # Errors
    /// `NodeExists` when the lock is taken; otherwise as [`Server::lock_shard`].
    pub async fn try_lock_shard(&self, ks: &str, shard: &str, action: &str) -> Result<TopoLock> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        self.take_lock(
            LockTarget::Shard(ks.into(), shard.into()),
            paths::shard_dir(ks, shard),
            action,
            Mode::Try,
        )
        .await
    }

    /// Takes the named lock `name` (no record needs to exist; 24 h TTL where TTLs apply).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad name; `Timeout` when it stays held.
    pub async fn lock_name(&self, name: &str, action: &str) -> Result<TopoLock> {
        validate_path_element("lock name", name)?;
        self.take_lock(
            LockTarget::Named(name.into()),
            paths::named_lock(name),
            action,
            Mode::Named,
        )
        .await
    }

    /// Locks the routing rules.
    ///
    /// # Errors
    /// `NoNode` when nothing exists under `routing_rules` yet; `Timeout` when it stays held.
    pub async fn lock_routing_rules(&self, action: &str) -> Result<TopoLock> {
        self.take_lock(
            LockTarget::RoutingRules,
            paths::ROUTING_RULES_LOCK_DIR.into(),
            action,
            Mode::Blocking,
        )
        .await
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Blocking,
    Try,
    Named,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard whose unlock times out inside the backend (which then starts its background
    /// clean-up): its own bound started after a first 50 ms round trip.
    #[derive(Debug)]
    struct SlowUnlock(Duration, std::sync::Arc<std::sync::atomic::AtomicBool>);

    #[async_trait::async_trait]
    impl topo_core::LockDescriptor for SlowUnlock {
        fn dir(&self) -> &str {
            "keyspaces/ks"
        }
        fn fencing_token(&self) -> u64 {
            1
        }
        fn fence(&self) -> Fence {
            Fence::new("keyspaces/ks", "/keyspaces/ks/locks/1", 1)
        }
        async fn check(&self) -> Result<()> {
            Ok(())
        }
        async fn unlock(self: Box<Self>) -> Result<()> {
            tokio::time::sleep(Duration::from_millis(50) + self.0).await;
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            Err(TopoError::Timeout("unlock inside the backend".into()))
        }
    }

    /// The backend's own bound on an unlock fires before `TopoLock::unlock` gives up, so
    /// the backend's answer (and clean-up) is not cut off.
    #[tokio::test]
    async fn unlock_outlasts_the_backends_own_bound() {
        let remote = Duration::from_millis(300);
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lock = TopoLock {
            target: LockTarget::Keyspace("ks".into()),
            guard: Box::new(SlowUnlock(remote, reached.clone())),
            unlock_timeout: unlock_bound(remote),
        };
        let err = lock.unlock().await.unwrap_err();
        assert!(
            reached.load(std::sync::atomic::Ordering::SeqCst),
            "the backend's unlock was dropped before its own bound: {err}"
        );
        assert_eq!(
            err.to_string(),
            "deadline exceeded: unlock inside the backend"
        );
    }

    #[test]
    fn descriptor_is_vitess_json() {
        let d = lock_descriptor("RebuildKeyspace");
        let v: serde_json::Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["Action"], "RebuildKeyspace");
        assert_eq!(v["Status"], "Running");
        assert_eq!(v["Options"], serde_json::json!({}));
        let keys: Vec<&str> = d
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(
            keys,
            ["Action", "HostName", "UserName", "Time", "Options", "Status"]
        );
        assert!(d.contains("\n  \"Action\""), "two-space indent: {d}");
    }
}
