//! [`Server`]: the global connection, the per-cell connections resolved from `CellInfo`
//! records, and the backend [`Registry`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use topo_core::wrap::{StatsConn, TopoStats, DEFAULT_READ_CONCURRENCY};
use topo_core::{Conn, Factory, Fence, Result, TopoError};

use crate::fencing::FencedConn;
use topo_proto::topodata::CellInfo;

/// Vitess's cell name for the global topology.
pub const GLOBAL_CELL: &str = "global";
/// Vitess's cell name for the read-only view of the global topology.
pub const GLOBAL_READ_ONLY_CELL: &str = "global-read-only";

/// Backend factories by implementation name (`memory`, `local`, `etcd2`, `zk2`).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn Factory>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with `memory`, the one backend always compiled in. Backend crates
    /// (`topo-local`, `topo-etcd`, `topo-zk`) add theirs with [`Registry::register`]; the
    /// `topo` CLI registers every backend it was built with.
    pub fn with_memory() -> Self {
        let mut r = Self::new();
        r.register(Arc::new(topo_core::memory::MemoryFactory::new()));
        r
    }

    /// Adds (or replaces) a factory under its own name.
    pub fn register(&mut self, factory: Arc<dyn Factory>) {
        self.factories.insert(factory.name().to_string(), factory);
    }

    /// The names registered, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// The factory registered as `name`.
    ///
    /// # Errors
    /// `NoImplementation` naming `name` and listing the registered names.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Factory>> {
        self.factories.get(name).cloned().ok_or_else(|| {
            TopoError::NoImplementation(format!(
                "{name} (compiled in: {})",
                self.names().join(", ")
            ))
        })
    }
}

/// Settings of a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long lock acquisitions wait (Vitess's `--lock-timeout`, 45 s).
    pub lock_timeout: Duration,
    /// The bound on single remote operations such as unlock and the first read of a watch
    /// (Vitess's `--remote-operation-timeout`, 15 s).
    pub remote_operation_timeout: Duration,
    /// Concurrent reads per cell (Vitess's `--topo-read-concurrency`, 32).
    pub read_concurrency: usize,
    /// When set, every write through the server is fenced by this lock of the global
    /// topology (see [`crate::fencing`]): refused once the lock is gone. Writes to a cell on
    /// other servers than the global topology are refused.
    pub fence: Option<Fence>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            lock_timeout: Duration::from_secs(45),
            remote_operation_timeout: Duration::from_secs(15),
            read_concurrency: DEFAULT_READ_CONCURRENCY,
            fence: None,
        }
    }
}

#[derive(Debug)]
struct CellConn {
    info: CellInfo,
    conn: Arc<dyn Conn>,
}

#[derive(Debug)]
struct Inner {
    factory: Arc<dyn Factory>,
    /// The global topology's server address: cells on the same servers can be fenced.
    server_address: String,
    global: Arc<dyn Conn>,
    global_read_only: Arc<dyn Conn>,
    cells: Mutex<HashMap<String, CellConn>>,
    config: ServerConfig,
    stats: Arc<TopoStats>,
}

/// The typed topology server: one global connection and one connection per cell, each
/// wrapped for statistics and the per-cell read limit (Vitess's `topo.Server`).
///
/// Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct Server {
    inner: Arc<Inner>,
}

impl Server {
    /// Opens the global topology of implementation `implementation` at `server_address`
    /// under `root` (Vitess's `OpenServer`).
    ///
    /// # Errors
    /// `NoImplementation` for an unknown implementation; the backend's error when the
    /// connection cannot be made.
    pub async fn open(
        registry: &Registry,
        implementation: &str,
        server_address: &str,
        root: &str,
        config: ServerConfig,
    ) -> Result<Server> {
        let factory = registry.get(implementation)?;
        Self::open_with_factory(factory, server_address, root, config).await
    }

    /// As [`Server::open`], with the factory given directly.
    ///
    /// # Errors
    /// The backend's error when a connection cannot be made.
    pub async fn open_with_factory(
        factory: Arc<dyn Factory>,
        server_address: &str,
        root: &str,
        config: ServerConfig,
    ) -> Result<Server> {
        let stats = TopoStats::new();
        let reads = StatsConn::read_limit(config.read_concurrency);
        let raw = factory.create(GLOBAL_CELL, server_address, root).await?;
        let limit = config.remote_operation_timeout;
        let global: Arc<dyn Conn> = Arc::new(
            StatsConn::with_stats(raw, GLOBAL_CELL, stats.clone(), reads.clone(), false)
                .with_deadline(limit),
        );
        let global = match &config.fence {
            Some(fence) => Arc::new(FencedConn::new(global, fence.clone())) as Arc<dyn Conn>,
            None => global,
        };
        let global_read_only = if factory.has_global_read_only_cell(server_address, root) {
            let raw = factory
                .create(GLOBAL_READ_ONLY_CELL, server_address, root)
                .await?;
            Arc::new(
                StatsConn::with_stats(raw, GLOBAL_READ_ONLY_CELL, stats.clone(), reads, false)
                    .with_deadline(limit),
            ) as Arc<dyn Conn>
        } else {
            global.clone()
        };
        Ok(Server {
            inner: Arc::new(Inner {
                factory,
                server_address: server_address.to_string(),
                global,
                global_read_only,
                cells: Mutex::new(HashMap::new()),
                config,
                stats,
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Statistics of every connection of this server.
    pub fn stats(&self) -> &Arc<TopoStats> {
        &self.inner.stats
    }

    /// The backend's implementation name.
    pub fn implementation(&self) -> &'static str {
        self.inner.factory.name()
    }

    /// The global connection.
    pub fn global(&self) -> &Arc<dyn Conn> {
        &self.inner.global
    }

    /// The read-only global connection (the global one unless the backend has read-only
    /// replicas, like ZooKeeper observers).
    pub fn global_read_only(&self) -> &Arc<dyn Conn> {
        &self.inner.global_read_only
    }

    /// The connection for `cell` (`global` gives the global one). The cell's `CellInfo` is
    /// read on every call so a changed record takes effect at once; the connection is cached
    /// while its server address and root stay the same.
    ///
    /// # Errors
    /// `NoNode` for an unknown cell; the backend's error when connecting fails.
    pub async fn conn_for_cell(&self, cell: &str) -> Result<Arc<dyn Conn>> {
        if cell == GLOBAL_CELL {
            return Ok(self.inner.global.clone());
        }
        crate::names::validate_cell_name(cell)?;
        let info = self.get_cell_info(cell, false).await?;
        if let Some(c) = self.cached(cell, &info) {
            return Ok(c);
        }
        let raw = self
            .inner
            .factory
            .create(cell, &info.server_address, &info.root)
            .await
            .map_err(|e| match e {
                TopoError::NoNode(m) => TopoError::NoNode(format!("cell {cell}: {m}")),
                other => other,
            })?;
        let conn: Arc<dyn Conn> = Arc::new(
            StatsConn::with_stats(
                raw,
                cell,
                self.inner.stats.clone(),
                Arc::new(Semaphore::new(self.inner.config.read_concurrency.max(1))),
                false,
            )
            .with_deadline(self.inner.config.remote_operation_timeout),
        );
        let conn: Arc<dyn Conn> = match &self.inner.config.fence {
            None => conn,
            Some(fence) if info.server_address == self.inner.server_address => {
                Arc::new(FencedConn::new(conn, fence.clone()))
            }
            Some(_) => Arc::new(FencedConn::refusing(
                conn,
                format!(
                    "cell {cell} is on other servers ({}) than the lock fencing this process's \
                     writes ({}), so its writes cannot be fenced",
                    info.server_address, self.inner.server_address
                ),
            )),
        };
        let stale = {
            let mut cells = self.inner.cells.lock().unwrap_or_else(|e| e.into_inner());
            // Another task may have connected meanwhile; keep the first connection.
            if let Some(existing) = cells.get(cell).filter(|c| c.info == info) {
                return Ok(existing.conn.clone());
            }
            cells.insert(
                cell.to_string(),
                CellConn {
                    info,
                    conn: conn.clone(),
                },
            )
        };
        if let Some(old) = stale {
            tracing::info!(cell, "cell topology moved; closing the old connection");
            old.conn.close().await;
        }
        Ok(conn)
    }

    fn cached(&self, cell: &str, info: &CellInfo) -> Option<Arc<dyn Conn>> {
        let cells = self.inner.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .get(cell)
            .filter(|c| c.info.server_address == info.server_address && c.info.root == info.root)
            .map(|c| c.conn.clone())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        let cells: Vec<Arc<dyn Conn>> = self
            .inner
            .cells
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, c)| c.conn)
            .collect();
        for c in cells {
            c.close().await;
        }
        if !Arc::ptr_eq(&self.inner.global, &self.inner.global_read_only) {
            self.inner.global_read_only.close().await;
        }
        self.inner.global.close().await;
    }
}
