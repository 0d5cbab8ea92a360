//! S1 (single-key reads and writes) and S2 (locks).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use topo_core::ConnExt;

use crate::backend::{key, Backend, Raw};
use crate::harness::{latencies, Ctx, Goal, Table, Unit};

/// S1: get, unconditional update and create, one and 32 in flight.
pub async fn s1(ctx: &Ctx, backends: &[Backend]) -> Table {
    let mut t = Table::new(
        "S1",
        "get / update / create, 1 and 32 in flight (per-call latency)",
        "Toposphere p50 ≤ 1.05 × the raw client's (≤ 1.3 × for local)",
    );
    let n = ctx.size(2000, 100);
    let value = &[7u8; 200];
    for b in backends {
        let goal = Goal::RatioAtMost(if b.name == "local" { 1.3 } else { 1.05 });
        let (conn, raw) = (b.server.global(), &b.raw);
        for rel in ["s1/get", "s1/rawget", "s1/update", "s1/rawupdate"] {
            conn.update(rel, value, None).await.expect("seed");
        }
        let (rget, rupdate) = (
            &key("/global", "s1/rawget"),
            &key("/global", "s1/rawupdate"),
        );
        for in_flight in [1, 32] {
            let mut s: [Vec<f64>; 6] = Default::default();
            for round in 0..ctx.rounds {
                s[0].extend(
                    latencies(n, in_flight, |_| async {
                        conn.get("s1/get").await.expect("get");
                    })
                    .await,
                );
                s[1].extend(latencies(n, in_flight, |_| raw.get(rget)).await);
                s[2].extend(
                    latencies(n, in_flight, |_| async {
                        conn.update("s1/update", value, None).await.expect("update");
                    })
                    .await,
                );
                s[3].extend(latencies(n, in_flight, |_| raw.put(rupdate, value)).await);
                let dir = format!("s1/create{in_flight}-{round}");
                s[4].extend(
                    latencies(n, in_flight, |i| {
                        let path = format!("{dir}/k{i}");
                        async move {
                            conn.create(&path, value).await.expect("create");
                        }
                    })
                    .await,
                );
                let raw_dir = key("/global", &format!("s1/rawcreate{in_flight}-{round}"));
                raw.mkdir(&raw_dir).await;
                s[5].extend(
                    latencies(n, in_flight, |i| {
                        let k = format!("{raw_dir}/k{i}");
                        async move { raw.create(&k, value).await }
                    })
                    .await,
                );
            }
            for (i, op) in ["get", "update", "create"].iter().enumerate() {
                let what = format!("{op}, {in_flight} in flight");
                t.row(b.name, &what, Unit::Micros, &s[2 * i], &s[2 * i + 1], goal);
            }
        }
    }
    t.note(format!(
        "{n} calls per round, {} rounds, 200-byte values; raw update on etcd is a put, on ZooKeeper a \
         setData, on SQLite the backend's own statements in one transaction; raw create on etcd is a \
         version-0 txn. The SQLite raw client is one synchronous connection, so its \"32 in flight\" \
         runs one at a time.",
        ctx.rounds
    ));
    t
}

/// The raw floor of one uncontended lock and unlock (None when there is no raw analogue).
async fn raw_lock_unlock(raw: &Raw, dir: &str) -> Option<()> {
    match raw {
        Raw::Etcd(c) => {
            // A lease, one put under it, and its revocation.
            let mut c = c.clone();
            let lease = c.lease_grant(30, None).await.expect("grant").id();
            let opts = etcd_client::PutOptions::new().with_lease(lease);
            c.put(format!("{dir}/{lease:x}"), "x", Some(opts))
                .await
                .expect("put");
            c.lease_revoke(lease).await.expect("revoke");
        }
        Raw::Zk(c) => {
            // One ephemeral sequential node, then its deletion.
            let opts = zookeeper_client::CreateMode::EphemeralSequential
                .with_acls(zookeeper_client::Acls::anyone_all());
            let prefix = format!("{dir}/lock-");
            let (_, seq) = c.create(&prefix, b"x", &opts).await.expect("create");
            c.delete(&format!("{prefix}{seq}"), None)
                .await
                .expect("delete");
        }
        Raw::Local(_) => return None,
    }
    Some(())
}

/// S2: uncontended lock and unlock, round trips on etcd, and a contended hand-off rate.
pub async fn s2(ctx: &Ctx, backends: &[Backend]) -> Table {
    let mut t = Table::new(
        "S2",
        "locks: uncontended lock+unlock, and a 16-way contended hand-off",
        "≤ 2 round trips to acquire on etcd; the rest is reported (no ratio goal)",
    );
    let n = ctx.size(300, 20);
    for b in backends {
        let (conn, raw) = (b.server.global(), &b.raw);
        conn.create("s2/ks/Keyspace", b"").await.expect("seed");
        let raw_dir = key("/global", "s2/rawlock");
        raw.mkdir(&raw_dir).await;
        let (mut topo, mut rawt) = (Vec::new(), Vec::new());
        for _ in 0..ctx.rounds {
            topo.extend(
                latencies(n, 1, |_| async {
                    let g = conn.lock("s2/ks", "bench").await.expect("lock");
                    g.unlock().await.expect("unlock");
                })
                .await,
            );
            if let Raw::Local(_) = raw {
                continue;
            }
            rawt.extend(
                latencies(n, 1, |_| async {
                    raw_lock_unlock(raw, &raw_dir).await;
                })
                .await,
            );
        }
        let what = "lock+unlock, uncontended (raw: lease+put+revoke / ephemeral+delete)";
        t.row(b.name, what, Unit::Micros, &topo, &rawt, Goal::None);

        if let Some(before) = b.etcd_requests().await {
            let k = ctx.size(20, 5);
            let (mut guards, mut rts) = (Vec::new(), Vec::new());
            for i in 0..k {
                let dir = format!("s2/rt{i}");
                conn.create(&format!("{dir}/Keyspace"), b"")
                    .await
                    .expect("seed");
                let mid = b.etcd_requests().await.unwrap_or(before);
                guards.push(conn.lock(&dir, "bench").await.expect("lock"));
                let after = b.etcd_requests().await.unwrap_or(mid);
                // Each metrics read is an HTTP request, not gRPC: it does not count.
                rts.push(after - mid);
            }
            for g in guards {
                g.unlock().await.expect("unlock");
            }
            t.row(
                b.name,
                "etcd gRPC requests to acquire a lock",
                Unit::Count,
                &rts,
                &[],
                Goal::AtMost(2.0),
            );
        }

        let tasks = 16;
        let secs = if ctx.quick { 1.0 } else { 5.0 };
        let mut rates = Vec::new();
        for _ in 0..ctx.rounds {
            let count = AtomicUsize::new(0);
            let start = Instant::now();
            let deadline = start + Duration::from_secs_f64(secs);
            futures::future::join_all((0..tasks).map(|_| async {
                while Instant::now() < deadline {
                    let g = conn.lock("s2/ks", "contended").await.expect("lock");
                    g.unlock().await.expect("unlock");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }))
            .await;
            rates.push(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64());
        }
        t.row(
            b.name,
            "16-way contended hand-offs",
            Unit::PerSec,
            &rates,
            &[],
            Goal::None,
        );
    }
    t.note(format!(
        "{n} uncontended lock+unlock per round; etcd's request count is read from its own /metrics \
         (grpc_server_started_total) before and after each acquisition; the contended rate counts \
         lock+unlock cycles of 16 tasks on one keyspace lock over {secs_label} per round.",
        secs_label = if ctx.quick { "1 s" } else { "5 s" }
    ));
    t
}
