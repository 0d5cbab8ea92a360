//! `demo`: an example toposphere.

use std::collections::BTreeMap;

use topo_core::{Result, TopoError};
use topo_proto::names::alias_string;
use topo_proto::topodata::{CellInfo, CellsAlias, Keyspace, Tablet, TabletAlias, TabletType};
use topo_proto::vschema::{self, ColumnVindex, RoutingRule, RoutingRules, Vindex};
use topo_proto::Stored;
use toposphere::tablet::now_vttime;
use toposphere::Server;

use crate::args::GlobalArgs;
use crate::cmd::raw::walk;
use crate::cmd::tablets::make_shard_primary;

const CELLS: [&str; 2] = ["zone1", "zone2"];

/// The root of a cell next to the global root (`/vitess/global` → `/vitess/zone1`).
fn cell_root(global_root: &str, cell: &str) -> String {
    match global_root.trim_end_matches('/').rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/{cell}"),
        None => format!("/{cell}"),
    }
}

/// Deletes every file of the global topology and of the demo cells.
async fn wipe(ts: &Server) -> Result<()> {
    for cell in ts.get_cell_info_names().await? {
        if let Ok(conn) = ts.conn_for_cell(&cell).await {
            for f in walk(conn.as_ref(), "/").await? {
                let _ = conn.delete(&f, None).await;
            }
        }
    }
    for f in walk(ts.global().as_ref(), "/").await? {
        let _ = ts.global().delete(&f, None).await;
    }
    Ok(())
}

fn customer_vschema() -> vschema::Keyspace {
    let hash = |column: &str| ColumnVindex {
        column: column.into(),
        name: "hash".into(),
        columns: vec![],
    };
    vschema::Keyspace {
        sharded: true,
        vindexes: BTreeMap::from([(
            "hash".into(),
            Vindex {
                r#type: "hash".into(),
                ..Default::default()
            },
        )]),
        tables: BTreeMap::from([
            (
                "customer".into(),
                vschema::Table {
                    column_vindexes: vec![hash("customer_id")],
                    ..Default::default()
                },
            ),
            (
                "corder".into(),
                vschema::Table {
                    column_vindexes: vec![hash("customer_id")],
                    ..Default::default()
                },
            ),
        ]),
        ..Default::default()
    }
}

pub(crate) async fn run(ts: &Server, g: &GlobalArgs, force: bool) -> Result<()> {
    let existing =
        !ts.get_keyspaces().await?.is_empty() || !ts.get_cell_info_names().await?.is_empty();
    if existing {
        if !force {
            return Err(TopoError::precondition(format!(
                "a toposphere already exists at {} (root {}); run `topo demo --force` to rebuild the demo in its place",
                g.server_address, g.root
            )));
        }
        wipe(ts).await?;
    }
    for cell in CELLS {
        ts.create_cell_info(
            cell,
            &CellInfo {
                server_address: g.server_address.clone(),
                root: cell_root(&g.root, cell),
            },
        )
        .await?;
    }
    ts.create_cells_alias(
        "demo_region",
        &CellsAlias {
            cells: CELLS.map(String::from).to_vec(),
        },
    )
    .await?;

    ts.create_keyspace(
        "commerce",
        &Keyspace {
            sidecar_db_name: "_vt".into(),
            durability_policy: "semi_sync".into(),
            ..Default::default()
        },
    )
    .await?;
    let commerce_vschema = vschema::Keyspace {
        tables: ["product", "customer", "corder"]
            .into_iter()
            .map(|t| (t.to_string(), vschema::Table::default()))
            .collect(),
        ..Default::default()
    };
    ts.save_vschema("commerce", &Stored::new(commerce_vschema), None)
        .await?;
    ts.create_keyspace(
        "customer",
        &Keyspace {
            sidecar_db_name: "_vt".into(),
            durability_policy: "semi_sync".into(),
            ..Default::default()
        },
    )
    .await?;
    ts.save_vschema("customer", &Stored::new(customer_vschema()), None)
        .await?;

    let shards = [("commerce", "0"), ("customer", "-80"), ("customer", "80-")];
    for (ks, shard) in shards {
        ts.create_shard(ks, shard).await?;
    }
    // zone1 holds each shard's primary and a replica; zone2 a replica and an rdonly (a
    // shard has exactly one primary in the whole cluster).
    let mut uid = 100;
    let mut tablets = Vec::new();
    for (ks, shard) in shards {
        for (cell, types) in [
            ("zone1", [TabletType::Primary, TabletType::Replica]),
            ("zone2", [TabletType::Replica, TabletType::Rdonly]),
        ] {
            for t in types {
                let alias = TabletAlias {
                    cell: cell.into(),
                    uid,
                };
                let port = 15000 + uid as i32;
                ts.init_tablet(
                    Tablet {
                        alias: Some(alias.clone()),
                        hostname: "localhost".into(),
                        mysql_hostname: "localhost".into(),
                        mysql_port: 17000 + uid as i32,
                        port_map: BTreeMap::from([
                            ("vt".to_string(), port),
                            ("grpc".to_string(), port + 1000),
                        ]),
                        keyspace: ks.into(),
                        shard: shard.into(),
                        r#type: t as i32,
                        tablet_start_time: Some(now_vttime()),
                        ..Default::default()
                    },
                    false,
                    false,
                    false,
                )
                .await?;
                if t == TabletType::Primary {
                    make_shard_primary(ts, ks, shard, &alias).await?;
                }
                tablets.push(format!(
                    "{} {}/{} {}",
                    alias_string(&alias),
                    ks,
                    shard,
                    t.as_str_name()
                ));
                uid += 1;
            }
        }
    }
    ts.save_routing_rules(&RoutingRules {
        rules: vec![RoutingRule {
            from_table: "commerce.customer".into(),
            to_tables: vec!["customer.customer".into()],
        }],
    })
    .await?;
    for ks in ["commerce", "customer"] {
        ts.rebuild_keyspace(ks, &[], false).await?;
    }
    ts.rebuild_srv_vschema(&[]).await?;

    crate::out!(
        "Built the demo toposphere in {} ({}):",
        g.server_address,
        g.implementation
    );
    crate::out!("  global root  {}", g.root);
    for cell in CELLS {
        crate::out!("  cell {cell}   root {}", cell_root(&g.root, cell));
    }
    crate::out!("  keyspaces    commerce (unsharded: 0), customer (sharded: -80, 80-)");
    crate::out!("  tablets      {}:", tablets.len());
    for t in &tablets {
        crate::out!("    {t}");
    }
    crate::out!(
        "  vschema, routing rules (commerce.customer -> customer.customer), serving graph rebuilt"
    );
    crate::out!();
    crate::out!("Look at it:");
    crate::out!("  topo GetKeyspaces");
    crate::out!("  topo GetTablets");
    crate::out!("  topo GetSrvKeyspaces customer zone1");
    crate::out!("  topo TopoLs -R /");
    crate::out!("  topo TopoCat --decode-proto-json /keyspaces/*/shards/*/Shard");
    crate::out!("  topo doctor");
    crate::out!();
    crate::out!("Browse it live (overview, tree, locks and elections; JSON API under /api):");
    // The same topology flags as this run, so the command serves this toposphere.
    let flags = if g.implementation == "local"
        && g.server_address == topo_local::DEFAULT_PATH
        && g.root == "/vitess/global"
    {
        String::new()
    } else {
        format!(
            " --topo-implementation {} --topo-global-server-address '{}' --topo-global-root {}",
            g.implementation, g.server_address, g.root
        )
    };
    crate::out!("  topo{flags} serve --listen 127.0.0.1:15000");
    crate::out!("  then open http://127.0.0.1:15000/");
    Ok(())
}
