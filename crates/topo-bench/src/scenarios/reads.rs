//! S3 (reading every tablet of a cell) and S4 (rebuilding a keyspace's serving graph).

use std::time::Instant;

use futures::StreamExt;
use topo_proto::topodata::{Keyspace, Tablet, TabletAlias, TabletType};
use topo_proto::Stored;
use toposphere::copy::{write_all, DEFAULT_CONCURRENCY};

use crate::backend::{key, Backend, CELLS};
use crate::harness::{Ctx, Goal, Table, Unit};

/// A tablet as a deployment would have it.
fn tablet(uid: u32) -> Tablet {
    Tablet {
        alias: Some(TabletAlias {
            cell: "zone1".into(),
            uid,
        }),
        hostname: format!("tablet-{uid}.zone1.example.internal"),
        port_map: [("vt".to_string(), 15000), ("grpc".to_string(), 16000)].into(),
        keyspace: "commerce".into(),
        shard: format!("{:02x}-{:02x}", uid % 128, uid % 128 + 1),
        r#type: TabletType::Replica as i32,
        mysql_hostname: format!("mysql-{uid}.zone1.example.internal"),
        mysql_port: 3306,
        ..Default::default()
    }
}

/// S3: GetTabletsByCell against one raw prefix read of the same keys.
pub async fn s3(ctx: &Ctx, backends: &[Backend]) -> Table {
    let n = ctx.size(10_000, 500);
    let mut t = Table::new(
        "S3",
        &format!("GetTabletsByCell with {n} tablets vs one raw prefix read"),
        "ratio ≤ 1.3, and every tablet read even when the answer exceeds 2 MiB",
    );
    let items: Vec<(String, Vec<u8>)> = (0..n as u32)
        .map(|uid| {
            let path = format!("tablets/zone1-{uid:010}/Tablet");
            (path, Stored::new(tablet(uid)).encode())
        })
        .collect();
    let bytes: usize = items.iter().map(|(_, v)| v.len()).sum();
    let reps = ctx.size(5, 2);
    for b in backends {
        let cell = b.server.conn_for_cell("zone1").await.expect("cell");
        write_all(cell.as_ref(), &items, DEFAULT_CONCURRENCY, &|_| {})
            .await
            .expect("seed tablets");
        let prefix = key("/zone1", "tablets/");
        let (mut topo, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..ctx.rounds {
            for _ in 0..reps {
                let start = Instant::now();
                let got = b
                    .server
                    .get_tablets_by_cell("zone1", None, None)
                    .await
                    .expect("GetTabletsByCell");
                topo.push(start.elapsed().as_secs_f64() * 1e3);
                assert_eq!(got.len(), n, "{}: GetTabletsByCell lost tablets", b.name);
                let start = Instant::now();
                let (count, _) = b.raw.read_prefix(&prefix, "Tablet").await;
                raw.push(start.elapsed().as_secs_f64() * 1e3);
                assert_eq!(count, n, "{}: the raw read lost tablets", b.name);
            }
        }
        let what = format!("{n} tablets");
        t.row(
            b.name,
            &what,
            Unit::Millis,
            &topo,
            &raw,
            Goal::RatioAtMost(1.3),
        );
    }
    t.note(format!(
        "The tablets' records total {bytes} bytes ({:.2} MiB); every read is checked to return all \
         {n}. ZooKeeper has no prefix read: its raw side lists the children and reads each, 32 in \
         flight.",
        bytes as f64 / (1024.0 * 1024.0)
    ));
    t
}

/// The names of `n` shards covering the key space (n ≤ 256).
fn shard_names(n: usize) -> Vec<String> {
    let bound = |i: usize| {
        if i == 0 || i == n {
            String::new()
        } else {
            format!("{:02x}", i * 256 / n)
        }
    };
    (0..n)
        .map(|i| format!("{}-{}", bound(i), bound(i + 1)))
        .collect()
}

/// S4: RebuildKeyspaceGraph: topology calls as shards and cells grow.
pub async fn s4(ctx: &Ctx, backends: &[Backend]) -> Table {
    let mut t = Table::new(
        "S4",
        "RebuildKeyspaceGraph: topology calls by shards and cells",
        "calls grow with cells, not with shards",
    );
    let sizes = if ctx.quick { [4, 16] } else { [16, 256] };
    for b in backends {
        for shards in sizes {
            let ks = format!("s4ks{shards}");
            b.server
                .create_keyspace(&ks, &Keyspace::default())
                .await
                .expect("create keyspace");
            let mut created = futures::stream::iter(shard_names(shards))
                .map(|s| {
                    let ks = &ks;
                    async move { b.server.create_shard(ks, &s).await }
                })
                .buffer_unordered(4);
            while let Some(r) = created.next().await {
                r.expect("create shard");
            }
            for cells in [1, 3] {
                let names: Vec<String> = CELLS[..cells].iter().map(|c| c.to_string()).collect();
                let (mut calls, mut times) = (Vec::new(), Vec::new());
                for _ in 0..ctx.rounds {
                    let before = total_calls(b);
                    let start = Instant::now();
                    b.server
                        .rebuild_keyspace(&ks, &names, false)
                        .await
                        .expect("rebuild");
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                    calls.push((total_calls(b) - before) as f64);
                }
                let what = format!("{shards} shards, {cells} cell(s)");
                t.row(
                    b.name,
                    &format!("{what}: calls"),
                    Unit::Count,
                    &calls,
                    &[],
                    Goal::None,
                );
                t.row(
                    b.name,
                    &format!("{what}: time"),
                    Unit::Millis,
                    &times,
                    &[],
                    Goal::None,
                );
            }
        }
    }
    t.note(
        "Calls are every topology operation of the rebuild (the lock, its reads and writes), \
         counted by the statistics wrapper."
            .into(),
    );
    t
}

/// Every call the server's statistics wrapper has counted so far.
pub fn total_calls(b: &Backend) -> u64 {
    b.server.stats().snapshot().values().map(|s| s.calls).sum()
}
