//! A run of a workload (register, lock, election) against a connection that acknowledges
//! writes it drops must be reported; the same run against the honest connection must not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use topo_chaos::broken::DropWrites;
use topo_chaos::check::{check, Report};
use topo_chaos::history::{merge, now_ns, Recorder};
use topo_chaos::workload::{final_reads, setup, Bounds, Client, Workload};
use topo_core::memory::MemoryStore;
use topo_core::Conn;

async fn run(workload: Workload, drop_every: Option<u64>) -> Report {
    let store = MemoryStore::new();
    let honest = store.conn("/chaos");
    let rec = Recorder::new();
    setup(honest.as_ref(), workload, &rec, Duration::from_secs(5))
        .await
        .expect("setup");
    let bounds = Bounds {
        deadline: Instant::now() + Duration::from_millis(500),
        op_timeout: Duration::from_secs(2),
        max_ops: 300,
        settle: Duration::from_millis(200),
    };
    let clients = 4;
    let mut tasks = Vec::new();
    for p in 0..clients {
        let conn: Arc<dyn Conn> = match drop_every {
            Some(n) => Arc::new(DropWrites::new(store.conn("/chaos"), n)),
            None => store.conn("/chaos"),
        };
        let client = Client::new(conn, p, clients, 7, rec.clone(), bounds);
        tasks.push(tokio::spawn(client.run(workload)));
    }
    for t in tasks {
        t.await.expect("client");
    }
    final_reads(honest.as_ref(), workload, &rec, Duration::from_secs(5))
        .await
        .expect("final reads");
    check(&merge(rec.events(), now_ns()))
}

#[tokio::test]
async fn honest_register_run_is_linearizable() {
    let r = run(Workload::Register, None).await;
    assert!(r.is_valid(), "{r:?}");
    assert!(r.counts.values().sum::<u64>() > 50, "{r:?}");
}

#[tokio::test]
async fn dropped_writes_are_reported() {
    let r = run(Workload::Register, Some(5)).await;
    assert!(
        r.anomalies.iter().any(|a| a.kind == "non-linearizable"),
        "{r:?}"
    );
}

#[tokio::test]
async fn honest_lock_run_passes() {
    let r = run(Workload::Lock, None).await;
    assert!(r.is_valid(), "{r:?}");
    assert!(
        r.counts.keys().any(|(f, o)| f == "incr" && o == "ok"),
        "{r:?}"
    );
}

#[tokio::test]
async fn dropped_fenced_writes_are_reported() {
    let r = run(Workload::Lock, Some(5)).await;
    assert!(
        r.anomalies
            .iter()
            .any(|a| a.kind == "lost-increment" || a.kind == "double-increment"),
        "{r:?}"
    );
}

#[tokio::test]
async fn honest_election_run_passes() {
    let r = run(Workload::Election, None).await;
    assert!(r.is_valid(), "{r:?}");
    for f in ["lead", "incr", "resign"] {
        assert!(
            r.counts.keys().any(|(g, o)| g == f && o == "ok"),
            "no {f} succeeded: {r:?}"
        );
    }
}

#[tokio::test]
async fn dropped_leader_writes_are_reported() {
    let r = run(Workload::Election, Some(5)).await;
    assert!(
        r.anomalies
            .iter()
            .any(|a| a.kind == "lost-increment" || a.kind == "double-increment"),
        "{r:?}"
    );
}
