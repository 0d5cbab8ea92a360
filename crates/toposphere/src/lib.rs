//! # toposphere
//!
//! The typed Vitess topology server over any [`topo_core::Conn`] backend: cells and
//! aliases, keyspaces, shards, tablets, the replication graph, the serving graph
//! (SrvKeyspace, SrvVSchema) and its rebuilds, VSchema and routing rules, metadata, locks
//! with Vitess's lock descriptor and fenced writes, deletions and cell removals, InitTablet,
//! copy and compare between topologies, a tee connection for live migration, and a resilient
//! cache of the serving graph ([`srv_cache::SrvCache`]).
//!
//! Records keep unknown protobuf fields through every read-modify-write
//! ([`topo_proto::Stored`]), and update loops retry only on version conflicts.
//!
//! ```
//! # tokio_test_block_on(async {
//! use toposphere::{Registry, Server, ServerConfig};
//! use topo_proto::topodata::{CellInfo, Keyspace, Tablet, TabletAlias, TabletType};
//!
//! let ts = Server::open(&Registry::with_memory(), "memory", "mem", "/vitess/global", ServerConfig::default()).await?;
//! ts.create_cell_info("zone1", &CellInfo { server_address: "mem".into(), root: "/vitess/zone1".into() }).await?;
//! ts.create_keyspace("customer", &Keyspace::default()).await?;
//! ts.create_shard("customer", "-80").await?;
//! ts.create_shard("customer", "80-").await?;
//! for (uid, shard) in [(100, "-80"), (200, "80-")] {
//!     ts.init_tablet(Tablet {
//!         alias: Some(TabletAlias { cell: "zone1".into(), uid }),
//!         keyspace: "customer".into(),
//!         shard: shard.into(),
//!         r#type: TabletType::Primary as i32,
//!         ..Default::default()
//!     }, false, false, false).await?;
//! }
//! ts.rebuild_keyspace("customer", &[], false).await?;
//! let srv = ts.get_srv_keyspace("zone1", "customer").await?;
//! assert_eq!(srv.partitions.len(), 3); // PRIMARY, REPLICA, RDONLY
//! assert_eq!(srv.partitions[0].shard_references.len(), 2);
//! # Ok::<(), topo_core::TopoError>(()) }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Runtime::new().unwrap().block_on(f)
//! # }
//! ```

pub mod cells;
pub mod copy;
pub mod fencing;
pub mod keyspace;
pub mod locks;
pub mod names;
pub mod ops;
pub mod paths;
pub mod records;
pub mod server;
pub mod serving;
pub mod srv_cache;
pub mod tablet;
pub mod tee;
pub mod throttler;
pub mod validate;
pub mod vschema;

#[cfg(any(test, feature = "suite"))]
pub mod suite;

pub use keyspace::{KeyspaceInfo, ShardInfo};
pub use locks::{LockTarget, TopoLock};
pub use records::Versioned;
pub use server::{Registry, Server, ServerConfig, GLOBAL_CELL, GLOBAL_READ_ONLY_CELL};
pub use tablet::TabletInfo;

use topo_core::TopoError;

/// A result that may be missing the part held by some cells (Vitess's `PartialResult`).
#[derive(Clone, Debug, PartialEq)]
pub struct Partial<T> {
    /// What could be read.
    pub value: T,
    /// The cells that could not be read.
    pub failed_cells: Vec<String>,
}

impl<T> Partial<T> {
    /// A result with the cells that failed.
    pub fn new(value: T, failed_cells: Vec<String>) -> Self {
        Partial {
            value,
            failed_cells,
        }
    }

    /// The `PartialResult` error naming the failed cells, if any failed.
    pub fn error(&self) -> Option<TopoError> {
        (!self.failed_cells.is_empty())
            .then(|| TopoError::PartialResult(format!("cells {}", self.failed_cells.join(", "))))
    }

    /// The value when complete, else the `PartialResult` error.
    ///
    /// # Errors
    /// `PartialResult` naming the cells that failed.
    pub fn complete(self) -> Result<T, TopoError> {
        match self.error() {
            Some(e) => Err(e),
            None => Ok(self.value),
        }
    }
}
