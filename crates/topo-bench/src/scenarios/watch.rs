//! S5: one SrvKeyspace watched many times, write→delivery latency.

use std::time::Instant;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use topo_proto::topodata::srv_keyspace::KeyspacePartition;
use topo_proto::topodata::{ShardReference, SrvKeyspace};

use crate::backend::{key, Backend, Raw};
use crate::harness::{Ctx, Goal, Table, Unit};

/// A SrvKeyspace that differs for each `n`.
pub fn srv_keyspace(n: usize) -> SrvKeyspace {
    let refs = |prefix: &str| {
        ["-80", "80-"]
            .iter()
            .map(|s| ShardReference {
                name: format!("{prefix}{s}"),
                key_range: None,
            })
            .collect()
    };
    SrvKeyspace {
        partitions: vec![
            KeyspacePartition {
                served_type: 1,
                shard_references: refs(""),
                ..Default::default()
            },
            KeyspacePartition {
                served_type: 2,
                shard_references: refs(&format!("v{n}")),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// Raw watchers of `path`, each sending the time it saw a change; None without a raw watch.
async fn raw_watchers(
    raw: &Raw,
    path: &str,
    count: usize,
    tx: &mpsc::UnboundedSender<Instant>,
) -> Option<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let tx = tx.clone();
        tasks.push(match raw {
            Raw::Etcd(c) => {
                let mut stream = c.watch_client().watch(path, None).await.expect("raw watch");
                tokio::spawn(async move {
                    while let Ok(Some(r)) = stream.message().await {
                        if !r.events().is_empty() && tx.send(Instant::now()).is_err() {
                            return;
                        }
                    }
                })
            }
            Raw::Zk(c) => {
                // ZooKeeper's events carry no data: a watcher has the value once it read it.
                let mut w = c
                    .watch(path, zookeeper_client::AddWatchMode::Persistent)
                    .await
                    .expect("raw watch");
                let (c, path) = (c.clone(), path.to_string());
                tokio::spawn(async move {
                    loop {
                        w.changed().await;
                        if c.get_data(&path).await.is_err() || tx.send(Instant::now()).is_err() {
                            return;
                        }
                    }
                })
            }
            Raw::Local(_) => return None,
        });
    }
    Some(tasks)
}

/// Writes `writes` times with `write(k)`, each time collecting `count` deliveries; returns
/// each delivery's delay after the write started, in µs.
async fn deliveries<F, Fut>(
    writes: usize,
    count: usize,
    rx: &mut mpsc::UnboundedReceiver<Instant>,
    write: F,
) -> Vec<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut out = Vec::new();
    for k in 0..writes {
        let start = Instant::now();
        write(k).await;
        for _ in 0..count {
            let seen = rx.recv().await.expect("watcher gone");
            out.push(seen.saturating_duration_since(start).as_secs_f64() * 1e6);
        }
    }
    out
}

/// S5: watch fan-out.
pub async fn s5(ctx: &Ctx, backends: &[Backend]) -> Table {
    let count = ctx.size(1000, 50);
    let writes = ctx.size(20, 5);
    let mut t = Table::new(
        "S5",
        &format!("watch fan-out: {count} watchers of one SrvKeyspace, write→delivery"),
        "Toposphere p50 ≤ 1.5 × raw watchers'",
    );
    for b in backends {
        let server = &b.server;
        server
            .update_srv_keyspace("zone1", "s5", &srv_keyspace(0))
            .await
            .expect("seed");
        let (ttx, mut trx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for _ in 0..count {
            let (_, mut changes) = server
                .watch_srv_keyspace("zone1", "s5")
                .await
                .expect("watch");
            let tx = ttx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(_)) = changes.next().await {
                    if tx.send(Instant::now()).is_err() {
                        return;
                    }
                }
            }));
        }
        let raw_path = key("/zone1", "keyspaces/s5raw/SrvKeyspace");
        b.raw.mkdir(&raw_path).await;
        let bytes = prost::Message::encode_to_vec(&srv_keyspace(0));
        b.raw.put(&raw_path, &bytes).await;
        let (rtx, mut rrx) = mpsc::unbounded_channel();
        let raw_tasks = raw_watchers(&b.raw, &raw_path, count, &rtx).await;
        let (mut topo, mut raw) = (Vec::new(), Vec::new());
        for round in 0..ctx.rounds {
            let base = (round + 1) * writes;
            topo.extend(
                deliveries(writes, count, &mut trx, |k| async move {
                    server
                        .update_srv_keyspace("zone1", "s5", &srv_keyspace(base + k))
                        .await
                        .expect("write");
                })
                .await,
            );
            if raw_tasks.is_some() {
                let raw_path = &raw_path;
                raw.extend(
                    deliveries(writes, count, &mut rrx, |k| async move {
                        let bytes = prost::Message::encode_to_vec(&srv_keyspace(base + k));
                        b.raw.put(raw_path, &bytes).await;
                    })
                    .await,
                );
            }
        }
        for task in tasks.iter().chain(raw_tasks.iter().flatten()) {
            task.abort();
        }
        let what = format!("{count} watchers");
        t.row(
            b.name,
            &what,
            Unit::Micros,
            &topo,
            &raw,
            Goal::RatioAtMost(1.5),
        );
    }
    t.note(format!(
        "{writes} writes per round, {} rounds; each sample is one watcher's delay from the start of \
         the write to its task seeing the change (Toposphere: a decoded SrvKeyspace; raw: the \
         backend's event, on ZooKeeper followed by the read of the value, as events carry none). The local store has no raw watch to compare with.",
        ctx.rounds
    ));
    t
}
