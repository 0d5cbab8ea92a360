//! [`TeeConn`]: a connection that writes to two topologies, for live migration (Vitess's
//! `helpers.Tee`, spec §7.4).
//!
//! Reads, watches and elections use the primary. Writes go to the primary first (its
//! result is the call's result) and then to the secondary unconditionally: a failed
//! secondary create fails the call, failed secondary updates and deletes are only logged.
//! Locks are taken on both, in a configurable order, and released in reverse.
//! Fenced writes are fenced on the primary only (a fence names one backend's lock entry).
//!
//! [`TeeFactory`] is Vitess's `NewTee`: a [`Server`] opened with it tees every connection,
//! the global one and each cell's (each side resolves the cell through its own global
//! topology's `CellInfo`).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use topo_core::{
    Conn, DirEntry, ErrorKind, Factory, Fence, KvInfo, LeaderParticipation, LockDescriptor,
    LockGuard, LockOptions, RecursiveChange, Result, TopoError, Version, WatchData, WatchStream,
};

use crate::{Server, GLOBAL_CELL, GLOBAL_READ_ONLY_CELL};

/// Creates [`TeeConn`]s over two open servers: open a [`Server`] with it
/// ([`Server::open_with_factory`]; the address and root given there are not used) to
/// write every change to both topologies (Vitess's `NewTee`).
///
/// A cell must be known to both servers: each resolves it through its own `CellInfo`, so
/// the secondary's cell records point at the secondary's servers.
#[derive(Debug)]
pub struct TeeFactory {
    primary: Server,
    secondary: Server,
    reverse_lock_order: bool,
}

impl TeeFactory {
    /// A factory teeing `primary` and `secondary`; `reverse_lock_order` as in
    /// [`TeeConn::new`].
    pub fn new(primary: Server, secondary: Server, reverse_lock_order: bool) -> Self {
        TeeFactory {
            primary,
            secondary,
            reverse_lock_order,
        }
    }
}

/// Names the side of the tee in a connection error, keeping its kind.
fn on_side(side: &str, cell: &str, e: TopoError) -> TopoError {
    let m = |m: String| format!("{side} topology, cell {cell}: {m}");
    match e {
        TopoError::NoNode(s) => TopoError::NoNode(m(s)),
        TopoError::InvalidArgument(s) => TopoError::InvalidArgument(m(s)),
        TopoError::FailedPrecondition(s) => TopoError::FailedPrecondition(m(s)),
        other => other,
    }
}

#[async_trait]
impl Factory for TeeFactory {
    fn name(&self) -> &'static str {
        "tee"
    }

    async fn create(
        &self,
        cell: &str,
        _server_address: &str,
        _root: &str,
    ) -> Result<Arc<dyn Conn>> {
        let (primary, secondary) = if cell == GLOBAL_CELL || cell == GLOBAL_READ_ONLY_CELL {
            (
                self.primary.global().clone(),
                self.secondary.global().clone(),
            )
        } else {
            let p = self
                .primary
                .conn_for_cell(cell)
                .await
                .map_err(|e| on_side("primary", cell, e))?;
            let s = self
                .secondary
                .conn_for_cell(cell)
                .await
                .map_err(|e| on_side("secondary", cell, e))?;
            (p, s)
        };
        Ok(Arc::new(TeeConn::new(
            primary,
            secondary,
            self.reverse_lock_order,
        )))
    }
}

/// Writes to a primary and a secondary connection; reads from the primary.
#[derive(Debug, Clone)]
pub struct TeeConn {
    primary: Arc<dyn Conn>,
    secondary: Arc<dyn Conn>,
    reverse_lock_order: bool,
}

impl TeeConn {
    /// A tee over `primary` and `secondary`; with `reverse_lock_order` locks are taken on
    /// the secondary first (use the same order as every other tee of the migration).
    pub fn new(primary: Arc<dyn Conn>, secondary: Arc<dyn Conn>, reverse_lock_order: bool) -> Self {
        TeeConn {
            primary,
            secondary,
            reverse_lock_order,
        }
    }

    async fn mirror_create(&self, path: &str, contents: &[u8]) -> Result<()> {
        match self.secondary.create(path, contents).await {
            Err(e) if e.is(ErrorKind::NodeExists) => self
                .secondary
                .update(path, contents, None)
                .await
                .map(|_| ()),
            other => other.map(|_| ()),
        }
    }

    async fn mirror_update(&self, path: &str, contents: &[u8]) {
        if let Err(e) = self.secondary.update(path, contents, None).await {
            tracing::warn!(path, "tee: secondary update failed: {e}");
        }
    }

    async fn mirror_delete(&self, path: &str) {
        match self.secondary.delete(path, None).await {
            Err(e) if !e.is_no_node() => tracing::warn!(path, "tee: secondary delete failed: {e}"),
            _ => {}
        }
    }

    async fn lock_both(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard> {
        let (first, second) = if self.reverse_lock_order {
            (&self.secondary, &self.primary)
        } else {
            (&self.primary, &self.secondary)
        };
        let g1 = first.lock_with(dir, contents, opts).await?;
        let g2 = match second.lock_with(dir, contents, opts).await {
            Ok(g) => g,
            Err(e) => {
                if let Err(u) = g1.unlock().await {
                    tracing::warn!("tee: releasing the first lock after the second failed: {u}");
                }
                return Err(e);
            }
        };
        let (primary, secondary) = if self.reverse_lock_order {
            (g2, g1)
        } else {
            (g1, g2)
        };
        Ok(Box::new(TeeLock { primary, secondary }))
    }
}

/// Both locks of a tee.
struct TeeLock {
    primary: LockGuard,
    secondary: LockGuard,
}

impl fmt::Debug for TeeLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeeLock")
            .field("dir", &self.primary.dir())
            .finish()
    }
}

#[async_trait]
impl LockDescriptor for TeeLock {
    fn dir(&self) -> &str {
        self.primary.dir()
    }
    fn fencing_token(&self) -> u64 {
        self.primary.fencing_token()
    }
    fn fence(&self) -> Fence {
        self.primary.fence()
    }
    async fn check(&self) -> Result<()> {
        self.primary.check().await?;
        self.secondary.check().await
    }
    async fn unlock(self: Box<Self>) -> Result<()> {
        let second = self.secondary.unlock().await;
        let first = self.primary.unlock().await;
        second.and(first)
    }
}

#[async_trait]
impl Conn for TeeConn {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        self.primary.list_dir(dir, full).await
    }
    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        let v = self.primary.create(path, contents).await?;
        self.mirror_create(path, contents).await?;
        Ok(v)
    }
    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        let v = self.primary.update(path, contents, version).await?;
        self.mirror_update(path, contents).await;
        Ok(v)
    }
    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        self.primary.get(path).await
    }
    async fn get_version(&self, path: &str, version: &Version) -> Result<Vec<u8>> {
        self.primary.get_version(path, version).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        self.primary.list(prefix).await
    }
    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        self.primary.delete(path, version).await?;
        self.mirror_delete(path).await;
        Ok(())
    }
    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        let v = self.primary.create_fenced(fence, path, contents).await?;
        self.mirror_create(path, contents).await?;
        Ok(v)
    }
    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        let v = self
            .primary
            .update_fenced(fence, path, contents, version)
            .await?;
        self.mirror_update(path, contents).await;
        Ok(v)
    }
    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        self.primary.delete_fenced(fence, path, version).await?;
        self.mirror_delete(path).await;
        Ok(())
    }
    async fn lock_with(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard> {
        self.lock_both(dir, contents, opts).await
    }
    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)> {
        self.primary.watch(path).await
    }
    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
        self.primary.watch_recursive(path).await
    }
    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>> {
        self.primary.new_leader_participation(name, id).await
    }
    async fn close(&self) {
        self.primary.close().await;
        self.secondary.close().await;
    }
    fn value_limit(&self) -> Option<topo_core::ValueLimit> {
        // Both sides are written: the smaller limit holds.
        match (self.primary.value_limit(), self.secondary.value_limit()) {
            (Some(a), Some(b)) => Some(if a.max <= b.max { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topo_core::memory::MemoryStore;
    use topo_core::ConnExt;

    #[tokio::test]
    async fn writes_reach_both_and_locks_exclude_on_both() {
        let (p, s) = (MemoryStore::new().conn("/r"), MemoryStore::new().conn("/r"));
        let tee = TeeConn::new(p.clone(), s.clone(), false);
        let v = tee.create("/ks/Keyspace", b"1").await.unwrap();
        assert_eq!(p.get("/ks/Keyspace").await.unwrap(), (b"1".to_vec(), v));
        assert_eq!(s.get("/ks/Keyspace").await.unwrap().0, b"1");
        tee.update("/ks/Keyspace", b"2", Some(&v)).await.unwrap();
        assert_eq!(s.get("/ks/Keyspace").await.unwrap().0, b"2");
        // A stale version fails on the primary and leaves the secondary alone.
        assert!(tee.update("/ks/Keyspace", b"3", Some(&v)).await.is_err());
        assert_eq!(s.get("/ks/Keyspace").await.unwrap().0, b"2");

        let g = tee.lock("/ks", "x").await.unwrap();
        assert!(s
            .try_lock("/ks", "y")
            .await
            .unwrap_err()
            .is(ErrorKind::NodeExists));
        assert!(p
            .try_lock("/ks", "y")
            .await
            .unwrap_err()
            .is(ErrorKind::NodeExists));
        g.check().await.unwrap();
        g.unlock().await.unwrap();
        s.try_lock("/ks", "y")
            .await
            .unwrap()
            .unlock()
            .await
            .unwrap();

        tee.delete("/ks/Keyspace", None).await.unwrap();
        assert!(s.get("/ks/Keyspace").await.unwrap_err().is_no_node());
    }

    #[tokio::test]
    async fn a_tee_server_tees_each_cell_as_each_side_knows_it() {
        use topo_proto::topodata::CellInfo;
        let registry = crate::Registry::with_memory();
        let open = |address: &'static str| {
            crate::Server::open(
                &registry,
                "memory",
                address,
                "/vitess/global",
                crate::ServerConfig::default(),
            )
        };
        let (p, s) = (open("p").await.unwrap(), open("s").await.unwrap());
        for (side, cell_address) in [(&p, "p-zone1"), (&s, "s-zone1")] {
            let info = CellInfo {
                server_address: cell_address.into(),
                root: "/vitess/zone1".into(),
            };
            side.create_cell_info("zone1", &info).await.unwrap();
        }
        let factory = Arc::new(TeeFactory::new(p.clone(), s.clone(), false));
        let tee = Server::open_with_factory(factory, "", "", crate::ServerConfig::default())
            .await
            .unwrap();
        assert_eq!(tee.implementation(), "tee");
        let cell = tee.conn_for_cell("zone1").await.unwrap();
        cell.create("tablets/zone1-100/Tablet", b"t").await.unwrap();
        for side in [&p, &s] {
            let conn = side.conn_for_cell("zone1").await.unwrap();
            assert_eq!(conn.get("tablets/zone1-100/Tablet").await.unwrap().0, b"t");
        }
        // A cell the secondary does not know is an error that says so.
        let info = CellInfo {
            server_address: "p-zone2".into(),
            root: "/vitess/zone2".into(),
        };
        p.create_cell_info("zone2", &info).await.unwrap();
        let e = tee.conn_for_cell("zone2").await.unwrap_err();
        assert!(e.is_no_node(), "{e}");
        assert!(
            e.to_string().contains("secondary topology, cell zone2"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn failed_second_lock_releases_the_first() {
        let (p, s) = (MemoryStore::new().conn("/r"), MemoryStore::new().conn("/r"));
        p.create("/ks/Keyspace", b"").await.unwrap();
        // The secondary has nothing under /ks, so its lock fails with NoNode.
        let tee = TeeConn::new(p.clone(), s, false);
        assert!(tee.lock("/ks", "x").await.unwrap_err().is_no_node());
        p.try_lock("/ks", "y")
            .await
            .unwrap()
            .unlock()
            .await
            .unwrap();
    }
}
