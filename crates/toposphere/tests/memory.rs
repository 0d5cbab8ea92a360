//! The typed-layer suite over the memory backend.

use std::sync::Arc;

use topo_core::memory::MemoryFactory;
use topo_core::Factory;
use toposphere::suite::SuiteBackend;

/// One memory factory per check: every server of a check shares its stores.
struct Memory(Arc<MemoryFactory>);

impl SuiteBackend for Memory {
    fn factory(&self) -> Arc<dyn Factory> {
        self.0.clone()
    }
    fn address(&self) -> String {
        "mem".into()
    }
}

async fn backend() -> Option<Memory> {
    Some(Memory(Arc::new(MemoryFactory::new())))
}

mod memory {
    toposphere::typed_suite!(memory, crate::backend);
}

/// A cell whose topology stops answering: reads of it fail with `Timeout` after the
/// remote-operation timeout instead of hanging, and multi-cell reads return what they
/// could read plus a partial-result error naming the cell.
#[tokio::test]
async fn unreachable_cell_gives_partial_results() {
    use std::time::Duration;
    use topo_core::memory::UNREACHABLE_ADDRESS;
    use topo_proto::topodata::{CellInfo, Tablet, TabletAlias};
    use toposphere::{Server, ServerConfig};

    let config = ServerConfig {
        remote_operation_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let ts = Server::open_with_factory(Arc::new(MemoryFactory::new()), "mem", "/global", config)
        .await
        .unwrap();
    ts.create_cell_info(
        "good",
        &CellInfo {
            server_address: "mem".into(),
            root: "/good".into(),
        },
    )
    .await
    .unwrap();
    ts.create_cell_info(
        "down",
        &CellInfo {
            server_address: UNREACHABLE_ADDRESS.into(),
            root: "/down".into(),
        },
    )
    .await
    .unwrap();
    ts.create_tablet(&Tablet {
        alias: Some(TabletAlias {
            cell: "good".into(),
            uid: 1,
        }),
        keyspace: "ks".into(),
        shard: "0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = ts
        .get_tablets_by_cell("down", None, None)
        .await
        .unwrap_err();
    assert!(err.is(topo_core::ErrorKind::Timeout), "{err}");
    let aliases = [
        TabletAlias {
            cell: "good".into(),
            uid: 1,
        },
        TabletAlias {
            cell: "down".into(),
            uid: 2,
        },
    ];
    let map = ts.get_tablet_map(&aliases).await.unwrap();
    assert_eq!(map.value.len(), 1);
    assert_eq!(map.failed_cells, ["down"]);
    assert!(map.error().unwrap().to_string().contains("down"));
    assert!(map.complete().is_err());
    // Deleting the unreachable cell needs --force.
    assert!(ts.delete_cell_info("down", false).await.is_err());
    ts.delete_cell_info("down", true).await.unwrap();
}

/// The serving cache answers from memory, follows changes, keeps its value while the
/// topology fails, recovers a record it could not read at first, and drops a deleted one.
#[tokio::test]
async fn serving_cache_is_resilient() {
    use std::time::Duration;
    use topo_proto::topodata::{srv_keyspace, CellInfo, SrvKeyspace, TabletType};
    use toposphere::srv_cache::SrvCache;
    use toposphere::{Server, ServerConfig};

    let factory = Arc::new(MemoryFactory::new());
    let config = ServerConfig {
        remote_operation_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let ts = Server::open_with_factory(factory.clone(), "mem", "/global", config)
        .await
        .unwrap();
    ts.create_cell_info(
        "c1",
        &CellInfo {
            server_address: "mem".into(),
            root: "/c1".into(),
        },
    )
    .await
    .unwrap();
    let srv = |n: usize| SrvKeyspace {
        partitions: (0..n)
            .map(|_| srv_keyspace::KeyspacePartition {
                served_type: TabletType::Primary as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ts.update_srv_keyspace("c1", "ks", &srv(1)).await.unwrap();
    let cache = SrvCache::new(ts.clone());
    assert_eq!(
        cache
            .get_srv_keyspace("c1", "ks")
            .await
            .unwrap()
            .partitions
            .len(),
        1
    );

    ts.update_srv_keyspace("c1", "ks", &srv(2)).await.unwrap();
    let eventually = |want: usize| {
        let cache = cache.clone();
        async move {
            for _ in 0..100 {
                if cache
                    .get_srv_keyspace("c1", "ks")
                    .await
                    .map(|s| s.partitions.len())
                    .ok()
                    == Some(want)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("the cache never showed {want} partitions");
        }
    };
    eventually(2).await;

    // The topology fails: cached values are still served; a record never read fails.
    factory
        .faults()
        .set_error(Some(topo_core::TopoError::Timeout("down".into())));
    assert_eq!(
        cache
            .get_srv_keyspace("c1", "ks")
            .await
            .unwrap()
            .partitions
            .len(),
        2
    );
    assert!(cache.get_srv_keyspace("c1", "other").await.is_err());
    factory.faults().set_error(None);
    ts.update_srv_keyspace("c1", "other", &srv(3))
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if cache
            .get_srv_keyspace("c1", "other")
            .await
            .is_ok_and(|s| s.partitions.len() == 3)
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "the cache re-watches a record it could not read at first"
    );

    ts.delete_srv_keyspace("c1", "ks").await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if cache
            .get_srv_keyspace("c1", "ks")
            .await
            .is_err_and(|e| e.is_no_node())
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "a deleted record is no longer served");
}
