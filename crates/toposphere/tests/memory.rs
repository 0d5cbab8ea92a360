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
