//! ZkConn next to the raw zookeeper-client on the same standalone ZooKeeper, interleaved:
//! each iteration runs both (alternating which goes first), so JVM warm-up, garbage
//! collection and load from other processes fall on both alike.
//!
//! `cargo bench -p topo-zk --bench zk [-- <iterations>]` (default 2000); prints p50 / p99
//! in microseconds and the ratio of the p50s.

use std::future::Future;
use std::time::{Duration, Instant};
use topo_core::ConnExt;

use topo_core::Conn;
use topo_zk::{ZkConn, ZkOptions};
use zookeeper_client::{Acls, Client, CreateMode};

/// Latency samples of one side.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn at(&mut self, q: f64) -> f64 {
        self.0.sort();
        let i = ((self.0.len() as f64 - 1.0) * q) as usize;
        self.0[i].as_secs_f64() * 1e6
    }
}

async fn time<F: Future<Output = ()>>(samples: &mut Samples, op: F) {
    let start = Instant::now();
    op.await;
    samples.0.push(start.elapsed());
}

/// Runs `topo(i)` and `raw(i)` `n` times each, interleaved, after a warm-up of `n / 10`,
/// and prints one row.
async fn row<T, TF, R, RF>(name: &str, n: usize, mut topo: T, mut raw: R)
where
    T: FnMut(usize) -> TF,
    TF: Future<Output = ()>,
    R: FnMut(usize) -> RF,
    RF: Future<Output = ()>,
{
    let (mut t, mut r) = (Samples::default(), Samples::default());
    let warm = n / 10;
    for i in 0..warm + n {
        if i % 2 == 0 {
            time(&mut t, topo(i)).await;
            time(&mut r, raw(i)).await;
        } else {
            time(&mut r, raw(i)).await;
            time(&mut t, topo(i)).await;
        }
        if i + 1 == warm {
            t.0.clear();
            r.0.clear();
        }
    }
    let (tp50, rp50) = (t.at(0.5), r.at(0.5));
    println!(
        "{name:<34} {tp50:>11.1} {rp50:>11.1} {:>11.1} {:>11.1} {:>7.2}",
        t.at(0.99),
        r.at(0.99),
        tp50 / rp50
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    if !topo_testkit::zk::available() {
        println!("zk bench skipped: java or the zookeeper package is missing");
        return;
    }
    let server = topo_testkit::zk::ZkCluster::standalone().expect("start ZooKeeper");
    let addr = server.addrs();
    let conn = ZkConn::connect(&addr, "/bench", ZkOptions::default())
        .await
        .expect("connect");
    let raw = Client::connect(&addr).await.expect("raw connect");
    let value = vec![7u8; 200];
    let dir = CreateMode::Persistent.with_acls(Acls::anyone_all());
    conn.update("/get", &value, None).await.expect("seed");
    conn.update("/raw/get", &value, None).await.expect("seed");
    conn.update("/raw/set", &value, None).await.expect("seed");
    conn.create("/keyspaces/ks/Keyspace", b"")
        .await
        .expect("seed");
    raw.mkdir("/bench/raw/create/x", &dir).await.expect("seed");
    raw.mkdir("/bench/raw/lock/locks/x", &dir)
        .await
        .expect("seed");
    println!("ZooKeeper 3.8 standalone on loopback, n = {n}, interleaved (µs)");
    println!(
        "{:<34} {:>11} {:>11} {:>11} {:>11} {:>7}",
        "operation", "topo p50", "raw p50", "topo p99", "raw p99", "ratio"
    );
    row(
        "get",
        n,
        |_| async {
            conn.get("/get").await.expect("get");
        },
        |_| async {
            raw.get_data("/bench/raw/get").await.expect("raw get");
        },
    )
    .await;
    row(
        "set (unconditional)",
        n,
        |_| async {
            conn.update("/set", &value, None).await.expect("set");
        },
        |_| async {
            raw.set_data("/bench/raw/set", &value, None)
                .await
                .expect("raw set");
        },
    )
    .await;
    let file = CreateMode::Persistent.with_acls(Acls::anyone_all());
    row(
        "create",
        n,
        |i| {
            let (conn, value) = (&conn, &value);
            async move {
                conn.create(&format!("/create/{i}"), value)
                    .await
                    .expect("create");
            }
        },
        |i| {
            let (raw, value, file) = (&raw, &value, &file);
            async move {
                let p = format!("/bench/raw/create/{i}");
                raw.create(&p, value, file).await.expect("raw create");
            }
        },
    )
    .await;
    // The raw floor of a queue lock: create an ephemeral sequential node, list the queue,
    // delete the node. Toposphere also checks the directory exists, makes the `locks`
    // directory and removes it when emptied, as Vitess does.
    let seq = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
    row(
        "lock+unlock (vs create+list+delete)",
        n / 4,
        |_| async {
            let g = conn.lock("/keyspaces/ks", "bench").await.expect("lock");
            g.unlock().await.expect("unlock");
        },
        |_| {
            let (raw, seq) = (&raw, &seq);
            async move {
                let (_, s) = raw
                    .create("/bench/raw/lock/locks/", b"bench", seq)
                    .await
                    .expect("raw lock");
                raw.list_children("/bench/raw/lock/locks")
                    .await
                    .expect("raw list");
                raw.delete(&format!("/bench/raw/lock/locks/{s}"), None)
                    .await
                    .expect("raw unlock");
            }
        },
    )
    .await;
}
