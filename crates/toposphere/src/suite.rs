//! The typed-layer suite: Vitess's typed checks (keyspace, shard, tablet, replication,
//! serving graph, VSchema, routing rules) and its server-level tests, as a library that
//! every backend runs.
//!
//! ```text
//! async fn backend() -> Option<MyBackend> { Some(MyBackend::new()) }
//! mod mybackend {
//!     toposphere::typed_suite!(mybackend, crate::backend);
//! }
//! ```
//!
//! expands to a module `typed` with one `#[tokio::test]` per check, so the tests are
//! named `mybackend::typed::<check>`. Each check
//! gets a fresh [`Server`] whose global topology is at `<root>/global` and which has one
//! cell, `test`, at `<root>/test` on the same backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use topo_core::conformance::fresh_root;
use topo_core::{ErrorKind, Factory, TopoError};
use topo_proto::names::{parse_alias, parse_key_range};
use topo_proto::topodata::{
    shard_replication, srv_keyspace, CellInfo, CellsAlias, Keyspace, ShardReference, SrvKeyspace,
    Tablet, TabletAlias, TabletType,
};
use topo_proto::vschema::{self, RoutingRule, RoutingRules, SrvVSchema};
use topo_proto::Stored;

use crate::copy::{compare, copy, CopyOptions, RecordKind};
use crate::records::no_update_needed;
use crate::{Server, ServerConfig};

/// The cell every check has.
pub const CELL: &str = "test";

/// What the suite needs from a backend.
pub trait SuiteBackend: Send + Sync + 'static {
    /// The backend's factory.
    fn factory(&self) -> Arc<dyn Factory>;
    /// The server address the global topology and the `test` cell use.
    fn address(&self) -> String;
}

/// A backend given by its factory and server address: what most backends' tests need.
#[derive(Debug)]
pub struct FactoryBackend {
    /// The factory.
    pub factory: Arc<dyn Factory>,
    /// The server address of the global topology and the `test` cell.
    pub address: String,
}

impl SuiteBackend for FactoryBackend {
    fn factory(&self) -> Arc<dyn Factory> {
        self.factory.clone()
    }
    fn address(&self) -> String {
        self.address.clone()
    }
}

/// A fresh server under `root` with the `test` cell.
pub async fn server<B: SuiteBackend>(backend: &B, root: &str) -> Server {
    let config = ServerConfig {
        lock_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let ts = Server::open_with_factory(
        backend.factory(),
        &backend.address(),
        &format!("{root}/global"),
        config,
    )
    .await
    .expect("open server");
    ts.create_cell_info(
        CELL,
        &CellInfo {
            server_address: backend.address(),
            root: format!("{root}/test"),
        },
    )
    .await
    .expect("create the test cell");
    ts
}

fn kind<T: std::fmt::Debug>(r: Result<T, TopoError>, k: ErrorKind, what: &str) {
    match r {
        Err(e) if e.is(k) => {}
        other => panic!("{what}: expected {k:?}, got {other:?}"),
    }
}

fn alias(cell: &str, uid: u32) -> TabletAlias {
    TabletAlias {
        cell: cell.into(),
        uid,
    }
}

fn tablet(uid: u32, ks: &str, shard: &str, t: TabletType) -> Tablet {
    Tablet {
        alias: Some(alias(CELL, uid)),
        hostname: "localhost".into(),
        mysql_hostname: "localhost".into(),
        port_map: BTreeMap::from([("vt".to_string(), 3333)]),
        tags: BTreeMap::from([("tag".to_string(), "value".to_string())]),
        keyspace: ks.into(),
        shard: shard.into(),
        r#type: t as i32,
        mysql_port: 3334,
        ..Default::default()
    }
}

macro_rules! define_typed_checks {
    ($($variant:ident => $f:ident),* $(,)?) => {
        /// One check of the typed suite.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum TypedCheck {
            $(
                #[doc = concat!("The `", stringify!($f), "` check.")]
                $variant,
            )*
        }

        impl TypedCheck {
            /// The check's name.
            pub fn name(self) -> &'static str {
                match self { $(TypedCheck::$variant => stringify!($f),)* }
            }

            /// Runs the check on a fresh server.
            pub async fn run<B: SuiteBackend>(self, backend: &B) {
                let root = fresh_root(self.name());
                let ts = server(backend, &root).await;
                match self { $(TypedCheck::$variant => $f(&ts).await,)* }
                ts.close().await;
            }
        }
    };
}

define_typed_checks! {
    Keyspace => check_keyspace,
    Shard => check_shard,
    ShardWithLock => check_shard_with_lock,
    Tablet => check_tablet,
    ShardReplication => check_shard_replication,
    SrvKeyspace => check_srv_keyspace,
    SrvVSchema => check_srv_vschema,
    VSchema => check_vschema,
    RoutingRules => check_routing_rules,
    CellInfo => check_cell_info,
    CellsAliases => check_cells_aliases,
    ExpandCells => check_expand_cells,
    DeleteCellInfo => check_delete_cell_info,
    FixShardReplication => check_fix_shard_replication,
    WatchShard => check_watch_shard,
    WatchSrvKeyspace => check_watch_srv_keyspace,
    RebuildVSchema => check_rebuild_vschema,
    RebuildKeyspace => check_rebuild_keyspace,
    FindAllShardsIgnoresLocks => check_find_all_shards_ignores_locks,
    KeyspaceLock => check_keyspace_lock,
    LockedUpdateIsFenced => check_locked_update_is_fenced,
    DeleteKeyspaceRecursive => check_delete_keyspace_recursive,
    UnknownFieldsSurvive => check_unknown_fields_survive,
    InitTablet => check_init_tablet,
    TabletsByCell => check_tablets_by_cell,
    NameValidation => check_name_validation,
    CopyCompare => check_copy_compare,
    RemoveShardCell => check_remove_shard_cell,
}

/// Runs one typed check, or prints why it is skipped.
pub async fn run<B: SuiteBackend>(
    backend: &str,
    b: Option<B>,
    check: TypedCheck,
    skips: &[(TypedCheck, &str)],
) {
    if let Some((_, reason)) = skips.iter().find(|(c, _)| *c == check) {
        eprintln!("skipping {backend}::typed::{}: {reason}", check.name());
        return;
    }
    match b {
        Some(b) => check.run(&b).await,
        None => eprintln!(
            "skipping {backend}::typed::{}: backend not available",
            check.name()
        ),
    }
}

/// Expands the typed suite into one `#[tokio::test]` per check for a backend:
/// `typed_suite!(name, crate::backend_fn)` or with `skip = [Check => "reason"]`, where
/// `backend_fn` is `async fn() -> Option<impl SuiteBackend>`.
#[macro_export]
macro_rules! typed_suite {
    ($backend:ident, $factory:path) => {
        $crate::typed_suite!($backend, $factory, skip = []);
    };
    ($backend:ident, $factory:path, skip = [$($skip:ident => $reason:expr),* $(,)?]) => {
        $crate::__typed_each!($backend, $factory, [$(($crate::suite::TypedCheck::$skip, $reason)),*];
            keyspace Keyspace, shard Shard, shard_with_lock ShardWithLock, tablet Tablet,
            shard_replication ShardReplication, srv_keyspace SrvKeyspace, srv_vschema SrvVSchema,
            vschema VSchema, routing_rules RoutingRules, cell_info CellInfo,
            cells_aliases CellsAliases, expand_cells ExpandCells, delete_cell_info DeleteCellInfo,
            fix_shard_replication FixShardReplication, watch_shard WatchShard,
            watch_srv_keyspace WatchSrvKeyspace, rebuild_vschema RebuildVSchema,
            rebuild_keyspace RebuildKeyspace, find_all_shards_ignores_locks FindAllShardsIgnoresLocks,
            keyspace_lock KeyspaceLock, locked_update_is_fenced LockedUpdateIsFenced,
            delete_keyspace_recursive DeleteKeyspaceRecursive, unknown_fields_survive UnknownFieldsSurvive,
            init_tablet InitTablet, tablets_by_cell TabletsByCell, name_validation NameValidation,
            copy_compare CopyCompare, remove_shard_cell RemoveShardCell
        );
    };
}

/// Internal: one test per typed check (used by [`typed_suite!`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __typed_each {
    ($backend:ident, $factory:path, $skips:tt; $($f:ident $variant:ident),* $(,)?) => {
        mod typed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $f() {
                    let skips: &[($crate::suite::TypedCheck, &str)] = &$skips;
                    $crate::suite::run(stringify!($backend), $factory().await, $crate::suite::TypedCheck::$variant, skips).await;
                }
            )*
        }
    };
}

async fn check_keyspace(ts: &Server) {
    assert!(ts.get_keyspaces().await.unwrap().is_empty());
    ts.create_keyspace("test_keyspace", &Keyspace::default())
        .await
        .unwrap();
    kind(
        ts.create_keyspace("test_keyspace", &Keyspace::default())
            .await,
        ErrorKind::NodeExists,
        "second create",
    );
    ts.delete_keyspace("test_keyspace").await.unwrap();
    kind(
        ts.delete_keyspace("test_keyspace").await,
        ErrorKind::NoNode,
        "second delete",
    );
    ts.create_keyspace("test_keyspace", &Keyspace::default())
        .await
        .unwrap();
    assert_eq!(ts.get_keyspaces().await.unwrap(), ["test_keyspace"]);
    ts.create_keyspace("test_keyspace2", &Keyspace::default())
        .await
        .unwrap();
    assert_eq!(
        ts.get_keyspaces().await.unwrap(),
        ["test_keyspace", "test_keyspace2"]
    );
    let lock = ts.lock_keyspace("test_keyspace2", "test").await.unwrap();
    let mut ki = ts.get_keyspace("test_keyspace2").await.unwrap();
    ki.keyspace.durability_policy = "semi_sync".into();
    ts.update_keyspace(&lock, &mut ki).await.unwrap();
    lock.unlock().await.unwrap();
    let again = ts.get_keyspace("test_keyspace2").await.unwrap();
    assert_eq!(again.keyspace.durability_policy, "semi_sync");
    assert_eq!(again.version, ki.version);
    assert_eq!(
        ts.get_keyspace_durability("test_keyspace2").await.unwrap(),
        "semi_sync"
    );
    assert_eq!(
        ts.get_sidecar_db_name("test_keyspace").await.unwrap(),
        "_vt"
    );
}

async fn check_shard(ts: &Server) {
    ts.create_keyspace("test_keyspace", &Keyspace::default())
        .await
        .unwrap();
    assert!(ts
        .get_shard_names("test_keyspace")
        .await
        .unwrap()
        .is_empty());
    ts.create_shard("test_keyspace", "b0-c0").await.unwrap();
    kind(
        ts.create_shard("test_keyspace", "b0-c0").await,
        ErrorKind::NodeExists,
        "second create",
    );
    ts.delete_shard("test_keyspace", "b0-c0").await.unwrap();
    kind(
        ts.delete_shard("test_keyspace", "b0-c0").await,
        ErrorKind::NoNode,
        "second delete",
    );
    let created = ts.create_shard("test_keyspace", "b0-c0").await.unwrap();
    assert!(created.shard.is_primary_serving);
    assert_eq!(
        created.shard.key_range,
        Some(parse_key_range("b0-c0").unwrap())
    );
    kind(
        ts.get_shard("test_keyspace", "666").await,
        ErrorKind::NoNode,
        "missing shard",
    );
    let primary = alias("ny", 82873);
    let updated = ts
        .update_shard_fields("test_keyspace", "b0-c0", None, |si| {
            si.shard.primary_alias = Some(primary.clone());
            Ok(())
        })
        .await
        .unwrap()
        .unwrap();
    let read = ts.get_shard("test_keyspace", "b0-c0").await.unwrap();
    assert_eq!(read.shard.primary_alias, Some(primary));
    assert_eq!(read.version, updated.version);
    let skipped = ts
        .update_shard_fields("test_keyspace", "b0-c0", None, |_| {
            Err(no_update_needed("x"))
        })
        .await
        .unwrap();
    assert!(skipped.is_none());
    assert_eq!(
        ts.get_shard("test_keyspace", "b0-c0")
            .await
            .unwrap()
            .version,
        read.version
    );
    ts.find_all_shards_in_keyspace("test_keyspace")
        .await
        .unwrap();
    ts.get_serving_shards("test_keyspace").await.unwrap();
    assert_eq!(
        ts.get_shard_names("test_keyspace").await.unwrap(),
        ["b0-c0"]
    );
    kind(
        ts.get_shard_names("test_keyspace666").await,
        ErrorKind::NoNode,
        "missing keyspace",
    );
    // An overlapping shard does not serve; a disjoint one does.
    assert!(
        !ts.create_shard("test_keyspace", "80-")
            .await
            .unwrap()
            .shard
            .is_primary_serving
    );
    ts.create_keyspace("other", &Keyspace::default())
        .await
        .unwrap();
    assert!(
        ts.create_shard("other", "-80")
            .await
            .unwrap()
            .shard
            .is_primary_serving
    );
    assert!(
        ts.create_shard("other", "80-")
            .await
            .unwrap()
            .shard
            .is_primary_serving
    );
    assert!(
        !ts.create_shard("other", "0")
            .await
            .unwrap()
            .shard
            .is_primary_serving
    );
}

async fn check_shard_with_lock(ts: &Server) {
    ts.create_keyspace("test_keyspace", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("test_keyspace", "b0-c0").await.unwrap();
    let lock = ts
        .lock_shard("test_keyspace", "b0-c0", "holder")
        .await
        .unwrap();
    kind(
        ts.try_lock_shard("test_keyspace", "b0-c0", "try").await,
        ErrorKind::NodeExists,
        "try_lock while held",
    );
    lock.unlock().await.unwrap();
    let again = ts
        .try_lock_shard("test_keyspace", "b0-c0", "try")
        .await
        .unwrap();
    again.unlock().await.unwrap();
}

async fn check_tablet(ts: &Server) {
    ts.create_keyspace("test_keyspace", &Keyspace::default())
        .await
        .unwrap();
    let mut t = tablet(1, "test_keyspace", "-10", TabletType::Primary);
    t.key_range = Some(parse_key_range("-10").unwrap());
    ts.create_tablet(&t).await.unwrap();
    kind(
        ts.create_tablet(&t).await,
        ErrorKind::NodeExists,
        "second create",
    );
    kind(
        ts.get_tablet(&alias(CELL, 666)).await,
        ErrorKind::NoNode,
        "missing tablet",
    );
    let a = alias(CELL, 1);
    let mut ti = ts.get_tablet(&a).await.unwrap();
    assert_eq!(ti.tablet.msg, t);
    kind(
        ts.get_tablet_aliases_by_cell("666").await,
        ErrorKind::NoNode,
        "unknown cell",
    );
    assert_eq!(
        ts.get_tablet_aliases_by_cell(CELL).await.unwrap(),
        vec![a.clone()]
    );
    ti.tablet.hostname = "remotehost".into();
    ts.update_tablet(&mut ti).await.unwrap();
    assert_eq!(
        ts.get_tablet(&a).await.unwrap().tablet.hostname,
        "remotehost"
    );
    let updated = ts
        .update_tablet_fields(&a, |t| {
            t.hostname = "anotherhost".into();
            Ok(())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.tablet.hostname, "anotherhost");
    let before = ts.get_tablet(&a).await.unwrap();
    assert_eq!(before.tablet.hostname, "anotherhost");
    assert!(ts
        .update_tablet_fields(&a, |_| Err(no_update_needed("x")))
        .await
        .unwrap()
        .is_none());
    assert_eq!(ts.get_tablet(&a).await.unwrap().version, before.version);
    // The replication graph got the tablet too.
    let sr = ts
        .get_shard_replication(CELL, "test_keyspace", "-10")
        .await
        .unwrap();
    assert_eq!(sr.value.nodes.len(), 1);
    ts.delete_tablet(&a).await.unwrap();
    kind(
        ts.delete_tablet(&a).await,
        ErrorKind::NoNode,
        "second delete",
    );
    kind(ts.get_tablet(&a).await, ErrorKind::NoNode, "deleted tablet");
}

async fn check_shard_replication(ts: &Server) {
    kind(
        ts.get_shard_replication(CELL, "test_keyspace", "-10").await,
        ErrorKind::NoNode,
        "empty",
    );
    let none = ts
        .update_shard_replication_fields(CELL, "test_keyspace", "-10", |_| {
            Err(no_update_needed("x"))
        })
        .await
        .unwrap();
    assert!(none.is_none());
    kind(
        ts.get_shard_replication(CELL, "test_keyspace", "-10").await,
        ErrorKind::NoNode,
        "nothing created",
    );
    let node = |c: &str, uid| shard_replication::Node {
        tablet_alias: Some(alias(c, uid)),
    };
    ts.update_shard_replication_fields(CELL, "test_keyspace", "-10", |sr| {
        sr.nodes = vec![node("c1", 1)];
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        ts.get_shard_replication(CELL, "test_keyspace", "-10")
            .await
            .unwrap()
            .value
            .nodes,
        [node("c1", 1)]
    );
    ts.update_shard_replication_fields(CELL, "test_keyspace", "-10", |sr| {
        sr.nodes.push(node("c3", 3));
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        ts.get_shard_replication(CELL, "test_keyspace", "-10")
            .await
            .unwrap()
            .value
            .nodes,
        [node("c1", 1), node("c3", 3)]
    );
    ts.delete_shard_replication(CELL, "test_keyspace", "-10")
        .await
        .unwrap();
    kind(
        ts.delete_shard_replication(CELL, "test_keyspace", "-10")
            .await,
        ErrorKind::NoNode,
        "second delete",
    );
    match ts.delete_keyspace_replication(CELL, "test_keyspace").await {
        Ok(()) => {}
        Err(e) if e.is_no_node() => {}
        Err(e) => panic!("delete_keyspace_replication: {e}"),
    }
    kind(
        ts.delete_keyspace_replication(CELL, "test_keyspace").await,
        ErrorKind::NoNode,
        "second keyspace replication delete",
    );
}

fn one_partition(name: &str, end: u8) -> SrvKeyspace {
    SrvKeyspace {
        partitions: vec![srv_keyspace::KeyspacePartition {
            served_type: TabletType::Primary as i32,
            shard_references: vec![ShardReference {
                name: name.into(),
                key_range: Some(topo_proto::topodata::KeyRange {
                    start: vec![],
                    end: vec![end],
                }),
            }],
            shard_tablet_controls: vec![],
        }],
        ..Default::default()
    }
}

async fn check_srv_keyspace(ts: &Server) {
    assert!(ts.get_srv_keyspace_names(CELL).await.unwrap().is_empty());
    let srv = one_partition("-80", 0x80);
    ts.update_srv_keyspace(CELL, "test_keyspace", &srv)
        .await
        .unwrap();
    kind(
        ts.get_srv_keyspace(CELL, "test_keyspace666").await,
        ErrorKind::NoNode,
        "missing",
    );
    assert_eq!(
        ts.get_srv_keyspace(CELL, "test_keyspace").await.unwrap(),
        srv
    );
    assert_eq!(
        ts.get_srv_keyspace_names(CELL).await.unwrap(),
        ["test_keyspace"]
    );
    ts.update_srv_keyspace(CELL, "unknown_keyspace_so_far", &srv)
        .await
        .unwrap();
    assert_eq!(
        ts.get_srv_keyspace(CELL, "unknown_keyspace_so_far")
            .await
            .unwrap(),
        srv
    );
    ts.delete_srv_keyspace(CELL, "unknown_keyspace_so_far")
        .await
        .unwrap();
    kind(
        ts.get_srv_keyspace(CELL, "unknown_keyspace_so_far").await,
        ErrorKind::NoNode,
        "deleted",
    );
}

async fn check_srv_vschema(ts: &Server) {
    kind(ts.get_srv_vschema(CELL).await, ErrorKind::NoNode, "empty");
    let srv = SrvVSchema {
        keyspaces: BTreeMap::from([(
            "test_keyspace".to_string(),
            vschema::Keyspace {
                sharded: true,
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    ts.update_srv_vschema(CELL, &srv).await.unwrap();
    assert_eq!(ts.get_srv_vschema(CELL).await.unwrap(), srv);
}

async fn check_vschema(ts: &Server) {
    ts.create_keyspace("test_keyspace", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("test_keyspace", "b0-c0").await.unwrap();
    kind(
        ts.get_vschema("test_keyspace").await,
        ErrorKind::NoNode,
        "no vschema",
    );
    let v1 = vschema::Keyspace {
        tables: BTreeMap::from([("unsharded".to_string(), vschema::Table::default())]),
        ..Default::default()
    };
    ts.save_vschema("test_keyspace", &Stored::new(v1.clone()), None)
        .await
        .unwrap();
    assert_eq!(ts.get_vschema("test_keyspace").await.unwrap().value.msg, v1);
    let v2 = vschema::Keyspace {
        sharded: true,
        ..Default::default()
    };
    ts.save_vschema("test_keyspace", &Stored::new(v2.clone()), None)
        .await
        .unwrap();
    assert_eq!(ts.get_vschema("test_keyspace").await.unwrap().value.msg, v2);
    assert_eq!(
        ts.get_shard_names("test_keyspace").await.unwrap(),
        ["b0-c0"]
    );
}

async fn check_routing_rules(ts: &Server) {
    assert_eq!(
        ts.get_routing_rules().await.unwrap(),
        RoutingRules::default()
    );
    let rules = RoutingRules {
        rules: vec![RoutingRule {
            from_table: "t1".into(),
            to_tables: vec!["t2".into(), "t3".into()],
        }],
    };
    ts.save_routing_rules(&rules).await.unwrap();
    assert_eq!(ts.get_routing_rules().await.unwrap(), rules);
    // Empty rules delete the file.
    ts.save_routing_rules(&RoutingRules::default())
        .await
        .unwrap();
    kind(
        ts.global().get("RoutingRules").await,
        ErrorKind::NoNode,
        "empty rules are not stored",
    );
}

async fn check_cell_info(ts: &Server) {
    let info = ts.get_cell_info(CELL, true).await.unwrap();
    let updated = ts
        .update_cell_info_fields(CELL, |ci| {
            ci.server_address = "new_address".into();
            Ok(())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.server_address, "new_address");
    assert_eq!(ts.get_cell_info(CELL, true).await.unwrap().root, info.root);
    assert!(ts
        .update_cell_info_fields(CELL, |_| Err(no_update_needed("x")))
        .await
        .unwrap()
        .is_none());
    kind(
        ts.update_cell_info_fields(CELL, |_| Err(TopoError::invalid("boom")))
            .await,
        ErrorKind::InvalidArgument,
        "failing update",
    );
    // Update creates a missing cell.
    ts.update_cell_info_fields("new_cell", |ci| {
        ci.root = "/new".into();
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        ts.get_cell_info("new_cell", true).await.unwrap().root,
        "/new"
    );
    assert_eq!(ts.get_cell_info_names().await.unwrap(), ["new_cell", CELL]);
}

async fn check_cells_aliases(ts: &Server) {
    for (name, cells) in [("a1", vec!["c1", "c2"]), ("a2", vec!["c3"])] {
        ts.create_cells_alias(
            name,
            &CellsAlias {
                cells: cells.into_iter().map(String::from).collect(),
            },
        )
        .await
        .unwrap();
    }
    let all = ts.get_cells_aliases().await.unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["a1", "a2"]);
    kind(
        ts.create_cells_alias(
            "a3",
            &CellsAlias {
                cells: vec!["c2".into()],
            },
        )
        .await,
        ErrorKind::InvalidArgument,
        "overlapping alias",
    );
    kind(
        ts.create_cells_alias("a4", &CellsAlias { cells: vec![] })
            .await,
        ErrorKind::InvalidArgument,
        "empty alias overlaps",
    );
    ts.update_cells_alias("a2", |ca| {
        ca.cells.push("c4".into());
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(ts.get_cells_alias("a2").await.unwrap().cells, ["c3", "c4"]);
    kind(
        ts.update_cells_alias("a2", |ca| {
            ca.cells.push("c1".into());
            Ok(())
        })
        .await,
        ErrorKind::InvalidArgument,
        "update into an overlap",
    );
    assert_eq!(ts.get_alias_by_cell("c1").await, "a1");
    assert_eq!(ts.get_alias_by_cell("c9").await, "c9");
    ts.delete_cells_alias("a1").await.unwrap();
    kind(
        ts.get_cells_alias("a1").await,
        ErrorKind::NoNode,
        "deleted alias",
    );
}

async fn check_expand_cells(ts: &Server) {
    for c in ["c1", "c2", "c3"] {
        ts.create_cell_info(c, &CellInfo::default()).await.unwrap();
    }
    ts.create_cells_alias(
        "region",
        &CellsAlias {
            cells: vec!["c1".into(), "c2".into()],
        },
    )
    .await
    .unwrap();
    assert_eq!(ts.expand_cells("").await.unwrap(), ["c1", "c2", "c3", CELL]);
    assert_eq!(
        ts.expand_cells("c3, region,c1").await.unwrap(),
        ["c1", "c2", "c3"]
    );
    kind(
        ts.expand_cells("c1,nowhere").await,
        ErrorKind::NoNode,
        "unknown cell",
    );
}

async fn check_delete_cell_info(ts: &Server) {
    ts.update_srv_keyspace(CELL, "ks", &SrvKeyspace::default())
        .await
        .unwrap();
    kind(
        ts.delete_cell_info(CELL, false).await,
        ErrorKind::FailedPrecondition,
        "cell with serving keyspaces",
    );
    ts.delete_cell_info(CELL, true).await.unwrap();
    kind(
        ts.get_cell_info(CELL, true).await,
        ErrorKind::NoNode,
        "deleted cell",
    );
    kind(
        ts.conn_for_cell(CELL).await,
        ErrorKind::NoNode,
        "conn of a deleted cell",
    );
}

async fn check_fix_shard_replication(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.create_tablet(&tablet(1, "ks", "0", TabletType::Replica))
        .await
        .unwrap();
    ts.create_tablet(&tablet(2, "ks", "0", TabletType::Replica))
        .await
        .unwrap();
    // Tablet 2 moves to another shard; tablet 3 never existed.
    ts.update_tablet_fields(&alias(CELL, 2), |t| {
        t.shard = "1".into();
        Ok(())
    })
    .await
    .unwrap();
    ts.update_shard_replication_record(CELL, "ks", "0", &alias(CELL, 3))
        .await
        .unwrap();
    let mut fixed = Vec::new();
    while let Some(e) = ts.fix_shard_replication(CELL, "ks", "0").await.unwrap() {
        fixed.push((e.r#type, e.tablet_alias.unwrap().uid));
        assert!(fixed.len() <= 2, "fixes must stop: {fixed:?}");
    }
    use topo_proto::topodata::shard_replication_error::Type;
    assert_eq!(
        fixed,
        [
            (Type::TopologyMismatch as i32, 2),
            (Type::NotFound as i32, 3)
        ]
    );
    let nodes = ts
        .get_shard_replication(CELL, "ks", "0")
        .await
        .unwrap()
        .value
        .msg
        .nodes;
    assert_eq!(nodes.len(), 1);
    ts.validate_tablet(&alias(CELL, 1)).await.unwrap();
    kind(
        ts.validate_tablet(&alias(CELL, 2)).await,
        ErrorKind::FailedPrecondition,
        "tablet 2 left the graph",
    );
}

async fn next<T>(
    s: &mut futures::stream::BoxStream<'static, topo_core::Result<T>>,
) -> Option<topo_core::Result<T>> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("watch item in time")
}

async fn check_watch_shard(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    kind(
        ts.watch_shard("ks", "-80").await.map(|_| ()),
        ErrorKind::NoNode,
        "watch of a missing shard",
    );
    ts.create_shard("ks", "-80").await.unwrap();
    let (first, mut changes) = ts.watch_shard("ks", "-80").await.unwrap();
    assert!(first.primary_alias.is_none());
    ts.update_shard_fields("ks", "-80", None, |si| {
        si.shard.primary_alias = Some(alias(CELL, 5));
        Ok(())
    })
    .await
    .unwrap();
    loop {
        match next(&mut changes).await {
            Some(Ok(s)) if s.primary_alias.is_none() => continue,
            Some(Ok(s)) => {
                assert_eq!(s.primary_alias, Some(alias(CELL, 5)));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // Bad bytes end the typed watch with a decode error.
    ts.global()
        .update("keyspaces/ks/shards/-80/Shard", &[0x0a, 0xff], None)
        .await
        .unwrap();
    loop {
        match next(&mut changes).await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                assert!(e.is(ErrorKind::Corrupt), "{e}");
                break;
            }
            None => panic!("stream ended without the decode error"),
        }
    }
    assert!(next(&mut changes).await.is_none());
}

async fn check_watch_srv_keyspace(ts: &Server) {
    kind(
        ts.watch_srv_keyspace(CELL, "ks").await.map(|_| ()),
        ErrorKind::NoNode,
        "missing",
    );
    ts.update_srv_keyspace(CELL, "ks", &one_partition("-80", 0x80))
        .await
        .unwrap();
    let (first, mut changes) = ts.watch_srv_keyspace(CELL, "ks").await.unwrap();
    assert_eq!(first, one_partition("-80", 0x80));
    ts.update_srv_keyspace(CELL, "ks", &one_partition("-40", 0x40))
        .await
        .unwrap();
    loop {
        match next(&mut changes).await {
            Some(Ok(s)) if s == one_partition("-80", 0x80) => continue,
            Some(Ok(s)) => {
                assert_eq!(s, one_partition("-40", 0x40));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    ts.delete_srv_keyspace(CELL, "ks").await.unwrap();
    loop {
        match next(&mut changes).await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                assert!(e.is_no_node(), "{e}");
                break;
            }
            None => panic!("ended without NoNode"),
        }
    }
}

async fn check_rebuild_vschema(ts: &Server) {
    ts.rebuild_srv_vschema(&[]).await.unwrap();
    assert!(ts.get_srv_vschema(CELL).await.unwrap().keyspaces.is_empty());
    ts.create_keyspace("ks1", &Keyspace::default())
        .await
        .unwrap();
    ts.save_vschema(
        "ks1",
        &Stored::new(vschema::Keyspace {
            sharded: true,
            ..Default::default()
        }),
        None,
    )
    .await
    .unwrap();
    ts.create_keyspace("ks2", &Keyspace::default())
        .await
        .unwrap();
    let rules = RoutingRules {
        rules: vec![RoutingRule {
            from_table: "a".into(),
            to_tables: vec!["ks1.a".into()],
        }],
    };
    ts.save_routing_rules(&rules).await.unwrap();
    ts.rebuild_srv_vschema(&[CELL.to_string()]).await.unwrap();
    let srv = ts.get_srv_vschema(CELL).await.unwrap();
    assert!(srv.keyspaces["ks1"].sharded);
    assert_eq!(srv.keyspaces["ks2"], vschema::Keyspace::default());
    assert_eq!(srv.routing_rules, Some(rules));
    ts.delete_keyspace("ks2").await.unwrap();
    ts.rebuild_srv_vschema(&[]).await.unwrap();
    assert!(!ts
        .get_srv_vschema(CELL)
        .await
        .unwrap()
        .keyspaces
        .contains_key("ks2"));
}

async fn check_rebuild_keyspace(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("ks", "-80").await.unwrap();
    ts.create_shard("ks", "80-").await.unwrap();
    ts.rebuild_keyspace("ks", &[], false).await.unwrap();
    let srv = ts.get_srv_keyspace(CELL, "ks").await.unwrap();
    let types: Vec<i32> = srv.partitions.iter().map(|p| p.served_type).collect();
    assert_eq!(
        types,
        [
            TabletType::Primary as i32,
            TabletType::Replica as i32,
            TabletType::Rdonly as i32
        ]
    );
    let names: Vec<&str> = srv.partitions[0]
        .shard_references
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["-80", "80-"]);
    // A gap in the serving shards fails the rebuild and leaves the serving graph alone.
    ts.update_shard_fields("ks", "80-", None, |si| {
        si.shard.is_primary_serving = false;
        Ok(())
    })
    .await
    .unwrap();
    kind(
        ts.rebuild_keyspace("ks", &[], false).await,
        ErrorKind::FailedPrecondition,
        "rebuild with a gap",
    );
    assert_eq!(ts.get_srv_keyspace(CELL, "ks").await.unwrap(), srv);
    kind(
        ts.rebuild_keyspace("nope", &[], false).await,
        ErrorKind::NoNode,
        "missing keyspace",
    );
}

async fn check_find_all_shards_ignores_locks(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("ks", "-80").await.unwrap();
    ts.create_shard("ks", "80-").await.unwrap();
    // Lock entries under the shard directories must not look like shards (Vitess #15118).
    let lock = ts.lock_shard("ks", "-80", "hold").await.unwrap();
    let klock = ts.lock_keyspace("ks", "hold").await.unwrap();
    let shards = ts.find_all_shards_in_keyspace("ks").await.unwrap();
    assert_eq!(shards.keys().collect::<Vec<_>>(), ["-80", "80-"]);
    assert_eq!(
        ts.find_all_shards_in_keyspace("`ks`").await.unwrap().len(),
        2
    );
    klock.unlock().await.unwrap();
    lock.unlock().await.unwrap();
    kind(
        ts.find_all_shards_in_keyspace("missing").await,
        ErrorKind::NoNode,
        "missing keyspace",
    );
}

async fn check_keyspace_lock(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    let lock = ts.lock_keyspace("ks", "first").await.unwrap();
    let contents = ts.global().list("keyspaces/ks/").await.unwrap();
    let entry = contents
        .iter()
        .find(|kv| !kv.key.ends_with("/Keyspace"))
        .expect("a lock entry");
    let descriptor: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
    assert_eq!(descriptor["Action"], "first");
    let quick =
        tokio::time::timeout(Duration::from_millis(300), ts.lock_keyspace("ks", "second")).await;
    assert!(quick.is_err(), "a second keyspace lock must wait");
    kind(
        lock.require_shard("ks", "0").await,
        ErrorKind::InvalidArgument,
        "wrong lock",
    );
    lock.require_keyspace("ks").await.unwrap();
    lock.unlock().await.unwrap();
    let named = ts.lock_name("my_lock", "named").await.unwrap();
    named.unlock().await.unwrap();
    kind(
        ts.lock_keyspace("missing", "x").await,
        ErrorKind::NoNode,
        "lock of a missing keyspace",
    );
}

async fn check_locked_update_is_fenced(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("ks", "0").await.unwrap();
    let lock = ts.lock_keyspace("ks", "update").await.unwrap();
    let mut ki = ts.get_keyspace("ks").await.unwrap();
    ts.update_shard_fields("ks", "0", Some(&lock), |si| {
        si.shard.is_primary_serving = false;
        Ok(())
    })
    .await
    .unwrap();
    // Another process removes our lock entry behind our back (as an expired lease would).
    let entries = ts
        .global()
        .list_dir("keyspaces/ks/locks", false)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "one lock entry: {entries:?}");
    ts.global()
        .delete(&format!("keyspaces/ks/locks/{}", entries[0].name), None)
        .await
        .unwrap();
    ki.keyspace.durability_policy = "semi_sync".into();
    kind(
        ts.update_keyspace(&lock, &mut ki).await,
        ErrorKind::LockLost,
        "update after the lock was lost",
    );
    kind(
        ts.update_shard_fields("ks", "0", Some(&lock), |si| {
            si.shard.is_primary_serving = true;
            Ok(())
        })
        .await,
        ErrorKind::LockLost,
        "shard update after the lock was lost",
    );
    assert!(
        !ts.get_shard("ks", "0")
            .await
            .unwrap()
            .shard
            .is_primary_serving
    );
    assert_eq!(
        ts.get_keyspace("ks")
            .await
            .unwrap()
            .keyspace
            .durability_policy,
        ""
    );
    drop(lock);
}

async fn check_delete_keyspace_recursive(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("ks", "-80").await.unwrap();
    ts.create_shard("ks", "80-").await.unwrap();
    ts.create_tablet(&tablet(1, "ks", "-80", TabletType::Replica))
        .await
        .unwrap();
    ts.rebuild_keyspace("ks", &[], false).await.unwrap();
    kind(
        ts.delete_keyspace_recursive("ks", false, false).await,
        ErrorKind::FailedPrecondition,
        "shards present",
    );
    ts.delete_keyspace_recursive("ks", true, false)
        .await
        .unwrap();
    kind(
        ts.get_keyspace("ks").await,
        ErrorKind::NoNode,
        "keyspace gone",
    );
    kind(
        ts.get_tablet(&alias(CELL, 1)).await,
        ErrorKind::NoNode,
        "tablet gone",
    );
    kind(
        ts.get_srv_keyspace(CELL, "ks").await,
        ErrorKind::NoNode,
        "serving graph gone",
    );
    assert!(ts.get_keyspaces().await.unwrap().is_empty());
}

async fn check_unknown_fields_survive(ts: &Server) {
    // A Shard written by a newer Vitess: field 40 (string) that we do not know.
    let mut bytes = Stored::new(topo_proto::topodata::Shard {
        is_primary_serving: true,
        ..Default::default()
    })
    .encode();
    bytes.extend_from_slice(&[0xc2, 0x02, 0x03, b'n', b'e', b'w']);
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.global()
        .create("keyspaces/ks/shards/0/Shard", &bytes)
        .await
        .unwrap();
    ts.update_shard_fields("ks", "0", None, |si| {
        si.shard.primary_alias = Some(alias(CELL, 1));
        Ok(())
    })
    .await
    .unwrap();
    let (after, _) = ts
        .global()
        .get("keyspaces/ks/shards/0/Shard")
        .await
        .unwrap();
    assert!(
        after.ends_with(&[0xc2, 0x02, 0x03, b'n', b'e', b'w']),
        "unknown field lost: {after:02x?}"
    );
    // Same for a tablet and a keyspace.
    let mut tb = Stored::new(tablet(7, "ks", "0", TabletType::Replica)).encode();
    tb.extend_from_slice(&[0xa8, 0x03, 0x01]);
    ts.conn_for_cell(CELL)
        .await
        .unwrap()
        .create("tablets/test-0000000007/Tablet", &tb)
        .await
        .unwrap();
    ts.update_tablet_fields(&alias(CELL, 7), |t| {
        t.hostname = "h2".into();
        Ok(())
    })
    .await
    .unwrap();
    let (t_after, _) = ts
        .conn_for_cell(CELL)
        .await
        .unwrap()
        .get("tablets/test-0000000007/Tablet")
        .await
        .unwrap();
    assert!(t_after.ends_with(&[0xa8, 0x03, 0x01]));
    let mut kb = Vec::new();
    kb.extend_from_slice(&[0xa8, 0x03, 0x02]);
    ts.global()
        .update("keyspaces/ks/Keyspace", &kb, None)
        .await
        .unwrap();
    let lock = ts.lock_keyspace("ks", "x").await.unwrap();
    let mut ki = ts.get_keyspace("ks").await.unwrap();
    ki.keyspace.durability_policy = "semi_sync".into();
    ts.update_keyspace(&lock, &mut ki).await.unwrap();
    lock.unlock().await.unwrap();
    let (k_after, _) = ts.global().get("keyspaces/ks/Keyspace").await.unwrap();
    assert!(k_after.ends_with(&[0xa8, 0x03, 0x02]));
}

async fn check_init_tablet(ts: &Server) {
    let mut primary = tablet(10, "ks", "80-C0", TabletType::Primary);
    primary.key_range = None;
    ts.init_tablet(primary.clone(), false, true, false)
        .await
        .unwrap();
    let ti = ts.get_tablet(&alias(CELL, 10)).await.unwrap();
    assert_eq!(ti.tablet.shard, "80-c0");
    assert!(ti.tablet.primary_term_start_time.is_some());
    assert!(ts.get_shard("ks", "80-c0").await.is_ok());
    assert!(ts.get_vschema("ks").await.is_ok());
    // The shard's primary is not this tablet, and another primary would displace it.
    ts.update_shard_fields("ks", "80-c0", None, |si| {
        si.shard.primary_alias = Some(alias(CELL, 10));
        Ok(())
    })
    .await
    .unwrap();
    let other = tablet(11, "ks", "80-c0", TabletType::Primary);
    kind(
        ts.init_tablet(other.clone(), false, false, false).await,
        ErrorKind::FailedPrecondition,
        "second primary",
    );
    ts.init_tablet(other, true, false, false).await.unwrap();
    kind(
        ts.init_tablet(primary.clone(), true, false, false).await,
        ErrorKind::NodeExists,
        "existing tablet",
    );
    let mut moved = primary.clone();
    moved.hostname = "moved".into();
    ts.init_tablet(moved, true, false, true).await.unwrap();
    assert_eq!(
        ts.get_tablet(&alias(CELL, 10))
            .await
            .unwrap()
            .tablet
            .hostname,
        "moved"
    );
    let mut wrong = tablet(12, "ks", "0", TabletType::Replica);
    wrong.shard = "80-c0".into();
    wrong.keyspace = "other".into();
    kind(
        ts.init_tablet(wrong, false, false, false).await,
        ErrorKind::NoNode,
        "missing shard without create",
    );
}

async fn check_tablets_by_cell(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("ks", "-80").await.unwrap();
    ts.create_shard("ks", "80-").await.unwrap();
    for (uid, shard) in [(1, "-80"), (2, "-80"), (3, "80-")] {
        ts.create_tablet(&tablet(uid, "ks", shard, TabletType::Replica))
            .await
            .unwrap();
    }
    assert_eq!(
        ts.get_tablets_by_cell(CELL, None, None)
            .await
            .unwrap()
            .len(),
        3
    );
    let shard = ts
        .get_tablets_by_cell(CELL, Some("ks"), Some("-80"))
        .await
        .unwrap();
    let uids: Vec<u32> = shard
        .iter()
        .map(|t| t.tablet.alias.as_ref().unwrap().uid)
        .collect();
    assert_eq!(uids, [1, 2]);
    let map = ts
        .get_tablet_map(&[alias(CELL, 1), alias(CELL, 9)])
        .await
        .unwrap();
    assert_eq!(map.value.len(), 1, "missing tablets are left out");
    assert!(map.error().is_none());
    let aliases = ts
        .find_all_tablet_aliases_in_shard_by_cell("ks", "-80", &[])
        .await
        .unwrap();
    assert_eq!(aliases.value, [alias(CELL, 1), alias(CELL, 2)]);
    kind(
        ts.get_tablets_by_cell("nowhere", None, None).await,
        ErrorKind::NoNode,
        "unknown cell",
    );
}

async fn check_name_validation(ts: &Server) {
    for bad in ["../global", "a/b", "ks\0", "", &"x".repeat(65)] {
        kind(
            ts.create_keyspace(bad, &Keyspace::default()).await,
            ErrorKind::InvalidArgument,
            bad,
        );
        kind(ts.get_keyspace(bad).await, ErrorKind::InvalidArgument, bad);
        kind(
            ts.get_shard("ks", bad).await,
            ErrorKind::InvalidArgument,
            bad,
        );
    }
    kind(
        ts.create_shard("ks", "foo-bar").await,
        ErrorKind::InvalidArgument,
        "bad shard range",
    );
    kind(
        ts.get_cell_info("../x", true).await,
        ErrorKind::InvalidArgument,
        "bad cell",
    );
    kind(
        ts.conn_for_cell("a/../../b").await,
        ErrorKind::InvalidArgument,
        "bad cell conn",
    );
    kind(
        parse_alias("../x-1").map(|_| ()),
        ErrorKind::InvalidArgument,
        "bad alias",
    );
    kind(
        ts.upsert_metadata("../k", "v").await,
        ErrorKind::InvalidArgument,
        "bad metadata key",
    );
    assert!(
        ts.get_keyspaces().await.unwrap().is_empty(),
        "nothing may be written"
    );
}

async fn check_copy_compare(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("ks", "0").await.unwrap();
    ts.create_tablet(&tablet(1, "ks", "0", TabletType::Primary))
        .await
        .unwrap();
    ts.save_routing_rules(&RoutingRules {
        rules: vec![RoutingRule {
            from_table: "a".into(),
            to_tables: vec!["b".into()],
        }],
    })
    .await
    .unwrap();
    ts.rebuild_keyspace("ks", &[], false).await.unwrap();
    ts.rebuild_srv_vschema(&[]).await.unwrap();
    // The destination: a fresh root on a memory backend, with the same cell.
    let dest = Server::open_with_factory(
        Arc::new(topo_core::memory::MemoryFactory::new()),
        "dest",
        "/dest/global",
        ServerConfig::default(),
    )
    .await
    .unwrap();
    dest.create_cell_info(
        CELL,
        &CellInfo {
            server_address: "dest".into(),
            root: "/dest/test".into(),
        },
    )
    .await
    .unwrap();
    let kinds: Vec<RecordKind> = RecordKind::ALL
        .iter()
        .copied()
        .filter(|k| *k != RecordKind::CellInfo)
        .collect();
    kind(
        compare(ts, &dest, &kinds).await,
        ErrorKind::FailedPrecondition,
        "compare before copy",
    );
    let dry = copy(
        ts,
        &dest,
        &kinds,
        CopyOptions {
            dry_run: true,
            ..Default::default()
        },
        &|_| {},
    )
    .await
    .unwrap();
    assert!(dry.copied > 0);
    assert!(
        dest.get_keyspaces().await.unwrap().is_empty(),
        "a dry run writes nothing"
    );
    let summary = copy(ts, &dest, &kinds, CopyOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(summary.copied, dry.copied);
    let compared = compare(ts, &dest, &kinds).await.unwrap();
    assert_eq!(compared, summary.copied);
    assert_eq!(
        copy(ts, &dest, &kinds, CopyOptions::default(), &|_| {})
            .await
            .unwrap()
            .unchanged,
        summary.copied
    );
    dest.update_tablet_fields(&alias(CELL, 1), |t| {
        t.hostname = "changed".into();
        Ok(())
    })
    .await
    .unwrap();
    let err = compare(ts, &dest, &kinds).await.unwrap_err();
    assert!(
        err.to_string().contains("tablets/test-0000000001/Tablet"),
        "{err}"
    );
}

async fn check_remove_shard_cell(ts: &Server) {
    ts.create_keyspace("ks", &Keyspace::default())
        .await
        .unwrap();
    ts.create_shard("ks", "0").await.unwrap();
    ts.create_tablet(&tablet(5, "ks", "0", TabletType::Replica))
        .await
        .unwrap();
    ts.rebuild_keyspace("ks", &[], false).await.unwrap();
    kind(
        ts.remove_shard_cell("ks", "0", CELL, false, false).await,
        ErrorKind::FailedPrecondition,
        "tablets present",
    );
    ts.remove_keyspace_cell("ks", CELL, true, false)
        .await
        .unwrap();
    kind(
        ts.get_tablet(&alias(CELL, 5)).await,
        ErrorKind::NoNode,
        "tablet removed",
    );
    kind(
        ts.get_srv_keyspace(CELL, "ks").await,
        ErrorKind::NoNode,
        "serving graph removed",
    );
    kind(
        ts.get_shard_replication(CELL, "ks", "0").await,
        ErrorKind::NoNode,
        "replication removed",
    );
}
