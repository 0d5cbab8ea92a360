//! Fencing every write of a process by a lock another process holds.
//!
//! `topo lock <dir> -- <command>` holds a lock while `<command>` runs and passes the lock on
//! in the environment ([`FENCE_ENV`], a [`LockEnv`] as JSON). A program that opens the same
//! topology with that variable set calls [`LockEnv::from_env`] and puts the fence in
//! [`crate::ServerConfig::fence`]: from then on every create, update and delete the
//! [`crate::Server`] makes is refused, atomically and with nothing written, once the lock
//! is gone — so a command orphaned by a crashed or paused `topo lock` cannot overwrite the
//! next holder's work.
//!
//! A backend checks a fence in the same transaction as the write (etcd: a compare on the
//! lock key's create revision; ZooKeeper: a multi-op checking the lock node; local: one
//! SQLite transaction), which works for any cell stored on the same servers as the lock.
//! Writes to a cell on other servers cannot be fenced that way, so they are refused.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use topo_core::{
    Conn, DirEntry, Fence, KvInfo, LeaderParticipation, LockGuard, LockOptions, RecursiveChange,
    Result, TopoError, Version, WatchData, WatchStream,
};

/// The environment variable that carries a held lock to a command: a [`LockEnv`] as JSON.
pub const FENCE_ENV: &str = "TOPO_LOCK_FENCE";

/// The environment variable with the lock's fencing token alone (a decimal number).
pub const FENCING_TOKEN_ENV: &str = "TOPO_LOCK_FENCING_TOKEN";

/// The environment variable with the lock's backend key or node path alone.
pub const LOCK_KEY_ENV: &str = "TOPO_LOCK_KEY";

/// A held lock as passed to a command: which topology it is in and its fence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEnv {
    /// The topology implementation (`etcd2`, `zk2`, `local`, …).
    pub implementation: String,
    /// The global topology's server address.
    pub server_address: String,
    /// The global topology's root.
    pub root: String,
    /// The locked directory, relative to the root.
    pub dir: String,
    /// The backend's key or node path of the lock entry (absolute, not under the root).
    pub key: String,
    /// The fencing token: etcd's create revision of the key, ZooKeeper's creation zxid of
    /// the node, the local store's entry sequence.
    pub token: u64,
}

impl LockEnv {
    /// The lock behind `fence`, held in the global topology `implementation` at
    /// `server_address` under `root`.
    pub fn new(implementation: &str, server_address: &str, root: &str, fence: &Fence) -> Self {
        LockEnv {
            implementation: implementation.to_string(),
            server_address: server_address.to_string(),
            root: root.to_string(),
            dir: fence.dir().to_string(),
            key: fence.key().to_string(),
            token: fence.token(),
        }
    }

    /// The fence that refuses writes once this lock is gone.
    pub fn fence(&self) -> Fence {
        Fence::new(self.dir.clone(), self.key.clone(), self.token)
    }

    /// The value of [`FENCE_ENV`] for this lock.
    pub fn to_env_value(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a value of [`FENCE_ENV`].
    ///
    /// # Errors
    /// `InvalidArgument` naming the variable when the value is not a lock description.
    pub fn parse(value: &str) -> Result<Self> {
        serde_json::from_str(value).map_err(|e| {
            TopoError::invalid(format!(
                "{FENCE_ENV} does not describe a lock ({e}); unset it or pass --no-fence"
            ))
        })
    }

    /// The lock passed in [`FENCE_ENV`], if the variable is set.
    ///
    /// # Errors
    /// As [`LockEnv::parse`].
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(FENCE_ENV) {
            Ok(v) => Self::parse(&v).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(TopoError::invalid(format!("{FENCE_ENV}: {e}"))),
        }
    }

    /// Whether the lock is in the global topology `implementation` at `server_address`
    /// under `root` (the topology a program is about to open).
    pub fn is_in(&self, implementation: &str, server_address: &str, root: &str) -> bool {
        self.implementation == implementation
            && self.server_address == server_address
            && topo_core::path::clean(&self.root) == topo_core::path::clean(root)
    }
}

/// How a [`FencedConn`] treats writes.
#[derive(Clone, Debug)]
enum Mode {
    /// Every write is checked against the fence in the backend's transaction.
    Fenced(Fence),
    /// The connection is on other servers than the lock: writes are refused with this
    /// explanation.
    Refused(String),
}

/// A connection whose creates, updates and deletes are all fenced by one lock (see the
/// module documentation). Reads, watches, locks and elections pass through.
#[derive(Debug)]
pub struct FencedConn {
    inner: Arc<dyn Conn>,
    mode: Mode,
}

impl FencedConn {
    /// Wraps `inner`, which must be on the same servers as the lock behind `fence`.
    pub fn new(inner: Arc<dyn Conn>, fence: Fence) -> Self {
        FencedConn {
            inner,
            mode: Mode::Fenced(fence),
        }
    }

    /// Wraps `inner`, a connection the fence cannot reach, so that every write fails with
    /// `FailedPrecondition` and `why`.
    pub fn refusing(inner: Arc<dyn Conn>, why: impl Into<String>) -> Self {
        FencedConn {
            inner,
            mode: Mode::Refused(why.into()),
        }
    }

    fn fence(&self, path: &str) -> Result<&Fence> {
        match &self.mode {
            Mode::Fenced(f) => Ok(f),
            Mode::Refused(why) => Err(TopoError::precondition(format!("{path}: {why}"))),
        }
    }
}

/// Names the refused write and the lock behind it in a `LockLost` error.
fn refused<T>(fence: &Fence, path: &str, result: Result<T>) -> Result<T> {
    result.map_err(|e| match e {
        TopoError::LockLost(_) => TopoError::LockLost(format!(
            "write to {path} refused: the lock on {} that fences it is gone",
            fence.dir()
        )),
        other => other,
    })
}

#[async_trait]
impl Conn for FencedConn {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        self.inner.list_dir(dir, full).await
    }
    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        let fence = self.fence(path)?;
        refused(
            fence,
            path,
            self.inner.create_fenced(fence, path, contents).await,
        )
    }
    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        let fence = self.fence(path)?;
        let result = self
            .inner
            .update_fenced(fence, path, contents, version)
            .await;
        refused(fence, path, result)
    }
    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        self.inner.get(path).await
    }
    async fn get_version(&self, path: &str, version: &Version) -> Result<Vec<u8>> {
        self.inner.get_version(path, version).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        let fence = self.fence(path)?;
        refused(
            fence,
            path,
            self.inner.delete_fenced(fence, path, version).await,
        )
    }
    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        self.fence(path)?;
        self.inner.create_fenced(fence, path, contents).await
    }
    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.fence(path)?;
        self.inner
            .update_fenced(fence, path, contents, version)
            .await
    }
    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        self.fence(path)?;
        self.inner.delete_fenced(fence, path, version).await
    }
    async fn lock_with(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard> {
        self.inner.lock_with(dir, contents, opts).await
    }
    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)> {
        self.inner.watch(path).await
    }
    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
        self.inner.watch_recursive(path).await
    }
    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>> {
        self.inner.new_leader_participation(name, id).await
    }
    async fn close(&self) {
        self.inner.close().await;
    }
    fn value_limit(&self) -> Option<topo_core::ValueLimit> {
        self.inner.value_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topo_core::memory::MemoryFactory;
    use topo_core::{ConnExt, ErrorKind, Factory};

    #[test]
    fn lock_env_round_trips_and_bad_values_name_the_variable() {
        let env = LockEnv::new(
            "etcd2",
            "127.0.0.1:2379",
            "/vitess/global",
            &Fence::new("keyspaces/ks", "/vitess/global/keyspaces/ks/locks/1", 42),
        );
        let back = LockEnv::parse(&env.to_env_value()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.fence().token(), 42);
        assert!(back.is_in("etcd2", "127.0.0.1:2379", "/vitess/global/"));
        assert!(!back.is_in("zk2", "127.0.0.1:2379", "/vitess/global"));
        let err = LockEnv::parse("{not json").unwrap_err();
        assert!(err.to_string().contains(FENCE_ENV), "{err}");
    }

    #[tokio::test]
    async fn writes_are_refused_once_the_lock_is_gone() {
        let raw = MemoryFactory::new()
            .create("global", "", "/root")
            .await
            .unwrap();
        raw.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
        let guard = raw.lock("/keyspaces/ks", "test").await.unwrap();
        let fenced = FencedConn::new(raw.clone(), guard.fence());
        let v = fenced.create("/keyspaces/ks/owner", b"A").await.unwrap();
        fenced
            .update("/keyspaces/ks/owner", b"B", Some(&v))
            .await
            .unwrap();
        guard.unlock().await.unwrap();
        let err = fenced
            .update("/keyspaces/ks/owner", b"C", None)
            .await
            .unwrap_err();
        assert!(err.is(ErrorKind::LockLost), "{err}");
        assert!(fenced
            .delete("/keyspaces/ks/owner", None)
            .await
            .unwrap_err()
            .is(ErrorKind::LockLost));
        assert_eq!(
            raw.get_opt("/keyspaces/ks/owner").await.unwrap().unwrap().0,
            b"B"
        );
    }

    #[tokio::test]
    async fn a_refusing_connection_writes_nothing_and_says_why() {
        let raw = MemoryFactory::new()
            .create("zone1", "", "/zone1")
            .await
            .unwrap();
        let conn = FencedConn::refusing(raw.clone(), "on other servers than the lock");
        let err = conn.create("/tablets/t/Tablet", b"x").await.unwrap_err();
        assert!(err.is(ErrorKind::FailedPrecondition), "{err}");
        assert!(err.to_string().contains("/tablets/t/Tablet"), "{err}");
        assert!(raw.get_opt("/tablets/t/Tablet").await.unwrap().is_none());
    }
}
