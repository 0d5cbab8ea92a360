//! S8 (the memory of a full SrvCache) and S9 (reads from it).

use std::time::Instant;

use futures::StreamExt;
use toposphere::srv_cache::SrvCache;

use super::reads::total_calls;
use super::watch::srv_keyspace;
use crate::backend::{Backend, CELLS};
use crate::harness::{latencies, Ctx, Goal, Table, Unit};

/// This process's resident size in MiB (Linux).
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// S8: resident memory of a SrvCache holding `k` keyspaces in every cell.
pub async fn s8(ctx: &Ctx, backends: &[Backend]) -> Table {
    let k = ctx.size(1000, 50);
    let mut t = Table::new(
        "S8",
        &format!(
            "memory: a SrvCache holding {k} keyspaces in {} cells",
            CELLS.len()
        ),
        "reported (the issue sets no number)",
    );
    for b in backends {
        let names: Vec<(&str, String)> = CELLS
            .iter()
            .flat_map(|c| (0..k).map(move |i| (*c, format!("s8ks{i}"))))
            .collect();
        let value = &srv_keyspace(0);
        let mut writes = futures::stream::iter(&names)
            .map(|(c, ks)| b.server.update_srv_keyspace(c, ks, value))
            .buffer_unordered(32);
        while let Some(r) = writes.next().await {
            r.expect("write SrvKeyspace");
        }
        let before = rss_mib();
        let cache = SrvCache::new(b.server.clone());
        futures::stream::iter(&names)
            .map(|(c, ks)| cache.get_srv_keyspace(c, ks))
            .buffer_unordered(32)
            .for_each(|r| async move {
                r.expect("cached read");
            })
            .await;
        let after = rss_mib();
        if let (Some(before), Some(after)) = (before, after) {
            t.row(b.name, "process RSS", Unit::MiB, &[after], &[], Goal::None);
            t.row(
                b.name,
                "RSS growth while filling the cache",
                Unit::MiB,
                &[after - before],
                &[],
                Goal::None,
            );
        }
        drop(cache);
    }
    t.note(format!(
        "{} records per backend, each with its watch; RSS from /proc/self/status of the bench \
         process itself (which also holds the other backends' state).",
        k * CELLS.len()
    ));
    t
}

/// S9: SrvCache reads in steady state, and how fast a change reaches the cache.
pub async fn s9(ctx: &Ctx, backends: &[Backend]) -> Table {
    let mut t = Table::new(
        "S9",
        "SrvCache reads: latency, topology calls in steady state, change→cache",
        "read p50 ≤ 1 µs; zero topology calls in steady state",
    );
    let n = ctx.size(200_000, 10_000);
    let changes = ctx.size(20, 3);
    for b in backends {
        let server = &b.server;
        for cell in CELLS {
            server
                .update_srv_keyspace(cell, "s9", &srv_keyspace(0))
                .await
                .expect("seed");
        }
        let cache = &SrvCache::new(server.clone());
        for cell in CELLS {
            cache.get_srv_keyspace(cell, "s9").await.expect("warm");
        }
        let (mut reads, mut calls, mut delays) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ctx.rounds {
            let before = total_calls(b);
            reads.extend(
                latencies(n, 1, |i| async move {
                    let cell = CELLS[i % CELLS.len()];
                    cache.get_srv_keyspace(cell, "s9").await.expect("read");
                })
                .await,
            );
            calls.push((total_calls(b) - before) as f64);
            for c in 0..changes {
                let want = srv_keyspace(round * changes + c + 1);
                let start = Instant::now();
                server
                    .update_srv_keyspace("zone1", "s9", &want)
                    .await
                    .expect("write");
                while *cache.get_srv_keyspace("zone1", "s9").await.expect("read") != want {
                    tokio::task::yield_now().await;
                }
                delays.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        t.row(
            b.name,
            "get_srv_keyspace",
            Unit::Micros,
            &reads,
            &[],
            Goal::AtMost(1.0),
        );
        let what = format!("topology calls during {n} reads");
        t.row(b.name, &what, Unit::Count, &calls, &[], Goal::AtMost(0.0));
        t.row(
            b.name,
            "write→cache (write included)",
            Unit::Micros,
            &delays,
            &[],
            Goal::None,
        );
    }
    t.note(format!(
        "{n} reads per round over 3 cells; calls counted by the statistics wrapper; {changes} \
         changes per round, each timed from the start of the write until the cache returns it."
    ));
    t
}
