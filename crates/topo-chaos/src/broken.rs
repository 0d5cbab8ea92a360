//! A deliberately broken connection, to prove the campaign catches a lying backend: it
//! acknowledges some updates (plain and fenced) without sending them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use topo_core::{
    Conn, DirEntry, Fence, KvInfo, LeaderParticipation, LockGuard, LockOptions, RecursiveChange,
    Result, Version, WatchData, WatchStream,
};

/// Forwards everything to `inner` except every `every`-th update (`update` or
/// `update_fenced`, so the register, watch and lock workloads all meet the lie), which it
/// reports as done without sending.
#[derive(Debug)]
pub struct DropWrites {
    inner: Arc<dyn Conn>,
    every: u64,
    calls: AtomicU64,
}

impl DropWrites {
    /// Wraps `inner`, dropping one update in `every` (at least 1).
    pub fn new(inner: Arc<dyn Conn>, every: u64) -> Self {
        DropWrites {
            inner,
            every: every.max(1),
            calls: AtomicU64::new(0),
        }
    }

    /// The version the lie reports for an update of `version`, when this update is one to
    /// drop.
    fn lie(&self, version: Option<&Version>) -> Option<Version> {
        ((self.calls.fetch_add(1, Ordering::Relaxed) + 1) % self.every == 0)
            .then(|| Version::new(version.map_or(1, |v| v.raw() + 1)))
    }
}

#[async_trait]
impl Conn for DropWrites {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        self.inner.list_dir(dir, full).await
    }
    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        self.inner.create(path, contents).await
    }
    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        if let Some(lie) = self.lie(version) {
            return Ok(lie);
        }
        self.inner.update(path, contents, version).await
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
        self.inner.delete(path, version).await
    }
    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        self.inner.create_fenced(fence, path, contents).await
    }
    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        if let Some(lie) = self.lie(version) {
            return Ok(lie);
        }
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
        self.inner.close().await
    }
    fn value_limit(&self) -> Option<topo_core::ValueLimit> {
        self.inner.value_limit()
    }
}
