//! `topo-bench`: latency of Toposphere's backends next to the raw client doing the same
//! operation against the same server in the same run, printed as tables with ratios.
//!
//! Run with `cargo run --release -p topo-bench [-- <iterations>]`. It starts its own etcd
//! and ZooKeeper on loopback ports (skipping a backend whose server is not installed) and
//! uses a temporary SQLite file for `local`.

use std::future::Future;
use std::time::{Duration, Instant};
use topo_core::ConnExt;

use topo_core::Conn;
use topo_etcd::{EtcdConn, EtcdOptions};
use topo_local::{LocalConn, LocalOptions};
use topo_zk::{ZkConn, ZkOptions};

/// Percentiles of one measurement, in microseconds.
struct Stats {
    p50: f64,
    p99: f64,
}

async fn measure<F, Fut>(n: usize, mut op: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    // Warm up connections and caches first.
    for i in 0..n / 10 + 1 {
        op(i).await;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        op(n + i).await;
        samples.push(start.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    Stats {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "operation", "topo p50 µs", "raw p50 µs", "topo p99 µs", "raw p99 µs", "ratio"
    );
}

fn row(name: &str, topo: &Stats, raw: &Stats) {
    println!(
        "{name:<28} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>8.2}",
        topo.p50,
        raw.p50,
        topo.p99,
        raw.p99,
        topo.p50 / raw.p50
    );
}

fn single(name: &str, s: &Stats) {
    println!(
        "{name:<28} {:>12.1} {:>12} {:>12.1} {:>12} {:>8}",
        s.p50, "-", s.p99, "-", "-"
    );
}

async fn etcd(n: usize) {
    if topo_testkit::find_binary("etcd").is_none() {
        println!("\netcd: skipped (etcd not installed)");
        return;
    }
    let server = topo_testkit::etcd::EtcdCluster::single().expect("start etcd");
    let ep = server.endpoints();
    let conn = EtcdConn::connect(&ep, "/bench", EtcdOptions::default())
        .await
        .expect("connect");
    let mut raw = etcd_client::Client::connect([ep.as_str()], None)
        .await
        .expect("raw connect");
    conn.create("/keyspaces/ks/Keyspace", b"")
        .await
        .expect("seed");
    let value = vec![7u8; 200];
    conn.update("/get", &value, None).await.expect("seed");
    header(&format!("etcd 3.4 (one member, loopback, n = {n})"));
    let t = measure(n, |_| async {
        conn.get("/get").await.expect("get");
    })
    .await;
    let r = measure(n, |_| {
        let mut raw = raw.clone();
        async move {
            raw.get("/bench/get", None).await.expect("raw get");
        }
    })
    .await;
    row("get", &t, &r);
    let t = measure(n, |_| async {
        conn.update("/update", &value, None).await.expect("update");
    })
    .await;
    let r = measure(n, |_| {
        let (mut raw, value) = (raw.clone(), value.clone());
        async move {
            raw.put("/bench/update-raw", value, None)
                .await
                .expect("raw put");
        }
    })
    .await;
    row("update (unconditional)", &t, &r);
    let t = measure(n, |i| {
        let value = value.clone();
        let conn = &conn;
        async move {
            conn.create(&format!("/create/{i}"), &value)
                .await
                .expect("create");
        }
    })
    .await;
    let r = measure(n, |i| {
        let (mut raw, value) = (raw.clone(), value.clone());
        async move {
            let key = format!("/bench/create-raw/{i}");
            let txn = etcd_client::Txn::new()
                .when([etcd_client::Compare::version(
                    key.as_str(),
                    etcd_client::CompareOp::Equal,
                    0,
                )])
                .and_then([etcd_client::TxnOp::put(key.as_str(), value, None)]);
            raw.txn(txn).await.expect("raw create");
        }
    })
    .await;
    row("create (txn)", &t, &r);
    let t = measure(n / 4, |_| async {
        let g = conn.lock("/keyspaces/ks", "bench").await.expect("lock");
        g.unlock().await.expect("unlock");
    })
    .await;
    let r = measure(n / 4, |_| {
        let mut raw = raw.clone();
        async move {
            // The raw floor of a lock: grant a lease, one transaction, revoke.
            let lease = raw.lease_grant(30, None).await.expect("grant").id();
            raw.put(
                format!("/bench/rawlock/{lease}"),
                "x",
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )
            .await
            .expect("put");
            raw.lease_revoke(lease).await.expect("revoke");
        }
    })
    .await;
    row("lock+unlock (vs grant+put+revoke)", &t, &r);
    let _ = &mut raw;
}

async fn zk(n: usize) {
    if !topo_testkit::zk::available() {
        println!("\nZooKeeper: skipped (java or the zookeeper package is missing)");
        return;
    }
    let server = topo_testkit::zk::ZkCluster::standalone().expect("start ZooKeeper");
    let addr = server.addrs();
    let conn = ZkConn::connect(&addr, "/bench", ZkOptions::default())
        .await
        .expect("connect");
    let raw = zookeeper_client::Client::connect(&addr)
        .await
        .expect("raw connect");
    let value = vec![7u8; 200];
    conn.update("/get", &value, None).await.expect("seed");
    conn.update("/raw/set", &value, None).await.expect("seed");
    conn.create("/keyspaces/ks/Keyspace", b"")
        .await
        .expect("seed");
    conn.create("/raw/create/x", b"").await.expect("seed");
    header(&format!("ZooKeeper 3.8 (standalone, loopback, n = {n})"));
    let t = measure(n, |_| async {
        conn.get("/get").await.expect("get");
    })
    .await;
    let r = measure(n, |_| async {
        raw.get_data("/bench/get").await.expect("raw get");
    })
    .await;
    row("get", &t, &r);
    let t = measure(n, |_| async {
        conn.update("/set", &value, None).await.expect("set");
    })
    .await;
    let r = measure(n, |_| async {
        raw.set_data("/bench/raw/set", &value, None)
            .await
            .expect("raw set");
    })
    .await;
    row("set (unconditional)", &t, &r);
    let opts =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    let t = measure(n, |i| {
        let (conn, value) = (&conn, &value);
        async move {
            conn.create(&format!("/create/{i}"), value)
                .await
                .expect("create");
        }
    })
    .await;
    let r = measure(n, |i| {
        let (raw, value, opts) = (&raw, &value, &opts);
        async move {
            raw.create(&format!("/bench/raw/create/{i}"), value, opts)
                .await
                .expect("raw create");
        }
    })
    .await;
    row("create", &t, &r);
    let t = measure(n / 4, |_| async {
        let g = conn.lock("/keyspaces/ks", "bench").await.expect("lock");
        g.unlock().await.expect("unlock");
    })
    .await;
    single("lock+unlock", &t);
}

async fn local(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let conn = LocalConn::open(&db, "/bench", LocalOptions::default()).expect("open");
    let value = vec![7u8; 200];
    conn.update("/get", &value, None).await.expect("seed");
    let raw = rusqlite::Connection::open(&db).expect("raw open");
    // The same settings the local backend's connections use.
    raw.busy_timeout(Duration::from_secs(5)).expect("busy");
    raw.pragma_update(None, "journal_mode", "WAL").expect("wal");
    raw.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    header(&format!("local (SQLite WAL, n = {n})"));
    let t = measure(n, |_| async {
        conn.get("/get").await.expect("get");
    })
    .await;
    let r = measure(n, |_| async {
        let _: (Vec<u8>, i64) = raw
            .prepare_cached("SELECT value, version FROM kv WHERE key = ?1")
            .expect("prepare")
            .query_row(["/bench/get"], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("raw get");
    })
    .await;
    row("get", &t, &r);
    let t = measure(n, |_| async {
        conn.update("/update", &value, None).await.expect("update");
    })
    .await;
    let r = measure(n, |_| async {
        // The same statements an update runs, in one IMMEDIATE transaction.
        let tx = rusqlite::Transaction::new_unchecked(&raw, rusqlite::TransactionBehavior::Immediate).expect("begin");
        let v: i64 = tx
            .query_row("UPDATE counters SET value = value + 1 WHERE name = 'version' RETURNING value", [], |r| r.get(0))
            .expect("counter");
        tx.execute(
            "INSERT INTO kv (key, value, version, lease) VALUES (?1, ?2, ?3, NULL) ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version",
            rusqlite::params!["/bench/update-raw", &value, v],
        )
        .expect("upsert");
        tx.execute("INSERT INTO changes (key, version, value) VALUES (?1, ?2, ?3)", rusqlite::params!["/bench/update-raw", v, &value])
            .expect("log");
        tx.commit().expect("commit");
    })
    .await;
    row("update (unconditional)", &t, &r);
    // Watch delay between two independent openers of the file (as two processes).
    let other = LocalConn::open(&db, "/bench", LocalOptions::default()).expect("open");
    let (_, changes) = conn.watch("/get").await.expect("watch");
    let changes = tokio::sync::Mutex::new(changes);
    let t = measure(200, |i| {
        let (other, changes) = (&other, &changes);
        async move {
            let v = i.to_string();
            let mut changes = changes.lock().await;
            other
                .update("/get", v.as_bytes(), None)
                .await
                .expect("update");
            while let Some(Ok(d)) = futures::StreamExt::next(&mut *changes).await {
                if d.contents == v.as_bytes() {
                    break;
                }
            }
        }
    })
    .await;
    single("write→watch (two openers)", &t);
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    println!("topo-bench: p50 and p99 latency, Toposphere next to the raw client (ratio = topo p50 / raw p50)");
    local(n).await;
    etcd(n).await;
    zk(n).await;
}
