//! Fault tests on real three-member clusters: members killed and paused while locks are
//! held, and a watcher that falls behind a compaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use topo_core::{Conn, ConnExt, ErrorKind, Version};
use topo_etcd::EtcdConn;
use topo_testkit::etcd::EtcdCluster;

use crate::options;

/// True for the errors after which a careful writer reads before writing again: the
/// write's reply was lost during the election, so it may or may not have applied, or no
/// member could be connected to (a killed member refuses connections).
fn unsettled(e: &topo_core::TopoError) -> bool {
    e.is(ErrorKind::OutcomeUnknown) || e.is(ErrorKind::Timeout) || e.is(ErrorKind::Backend)
}

/// Sets `path` to `contents` the way a careful writer does through a leader election:
/// after an unknown outcome, read back, and write again only if it did not apply.
async fn settled_update(conn: &EtcdConn, path: &str, contents: &[u8]) -> Version {
    settled_put(conn, path, contents, false).await
}

/// Creates `path` as [`settled_update`] sets it.
async fn settled_create(conn: &EtcdConn, path: &str, contents: &[u8]) -> Version {
    settled_put(conn, path, contents, true).await
}

async fn settled_put(conn: &EtcdConn, path: &str, contents: &[u8], create: bool) -> Version {
    for _ in 0..10 {
        let written = if create {
            conn.create(path, contents).await
        } else {
            conn.update(path, contents, None).await
        };
        match written {
            Ok(v) => return v,
            Err(e) if unsettled(&e) => {
                if let Ok((c, v)) = conn.get(path).await {
                    if c == contents {
                        return v;
                    }
                }
            }
            Err(e) => panic!("updating {path}: {e}"),
        }
    }
    panic!("updating {path}: no settled outcome in 10 attempts");
}

/// Deletes `path` as [`settled_update`] sets it.
async fn settled_delete(conn: &EtcdConn, path: &str) {
    for _ in 0..10 {
        match conn.delete(path, None).await {
            Ok(()) => return,
            Err(e) if unsettled(&e) => {
                if matches!(conn.get(path).await, Err(e) if e.is_no_node()) {
                    return;
                }
            }
            Err(e) => panic!("deleting {path}: {e}"),
        }
    }
    panic!("deleting {path}: no settled outcome in 10 attempts");
}

fn cluster() -> Option<EtcdCluster> {
    if !topo_testkit::require_binary("etcd", "etcd fault tests") {
        return None;
    }
    Some(EtcdCluster::three().expect("start etcd cluster"))
}

/// (a) The leader dies while a lock is held and another client waits: there are never two
/// holders (a shared flag and fencing tokens check it), and the waiter gets the lock once
/// the holder releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_while_locked() {
    let Some(mut cluster) = cluster() else { return };
    let endpoints = cluster.endpoints();
    let holder = EtcdConn::connect(&endpoints, "/fault-a", options())
        .await
        .unwrap();
    let waiter = EtcdConn::connect(&endpoints, "/fault-a", options())
        .await
        .unwrap();
    holder.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    holder.create("/keyspaces/ks/counter", b"0").await.unwrap();
    let held = Arc::new(AtomicBool::new(false));
    let guard = holder.lock("/keyspaces/ks", "holder").await.unwrap();
    held.store(true, Ordering::SeqCst);
    let first_token = guard.fencing_token();
    let w = {
        let held = held.clone();
        tokio::spawn(async move {
            let g = waiter
                .lock_timeout("/keyspaces/ks", "waiter", Duration::from_secs(30))
                .await
                .unwrap();
            assert!(!held.load(Ordering::SeqCst), "two holders at once");
            let (v, ver) = waiter.get("/keyspaces/ks/counter").await.unwrap();
            assert_eq!(v, b"1", "the holder's write is there");
            waiter
                .update_fenced(&g.fence(), "/keyspaces/ks/counter", b"2", Some(&ver))
                .await
                .unwrap();
            let token = g.fencing_token();
            g.unlock().await.unwrap();
            token
        })
    };
    let leader = cluster.leader().expect("a leader");
    cluster.member_mut(leader).kill();
    // The holder keeps its lock through the election (calls may time out meanwhile; the
    // lock must never be reported lost) and can still write under it.
    topo_core::conformance::await_lock_held(
        guard.as_ref(),
        Duration::from_secs(30),
        "after the leader died",
    )
    .await;
    let (_, ver) = holder.get("/keyspaces/ks/counter").await.unwrap();
    holder
        .update_fenced(&guard.fence(), "/keyspaces/ks/counter", b"1", Some(&ver))
        .await
        .unwrap();
    held.store(false, Ordering::SeqCst);
    guard.unlock().await.unwrap();
    let second_token = tokio::time::timeout(Duration::from_secs(40), w)
        .await
        .expect("waiter done")
        .unwrap();
    assert!(
        second_token > first_token,
        "{second_token} after {first_token}"
    );
    assert_eq!(holder.get("/keyspaces/ks/counter").await.unwrap().0, b"2");
}

/// (b) The member a holder talks to is paused past the lease TTL: the holder's `check()`
/// (called while the member hangs) reports the loss, and a client of another member takes
/// the lock with a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_member_loses_the_lock() {
    let Some(cluster) = cluster() else { return };
    let members = cluster.members();
    let holder = EtcdConn::connect(&members[0].client_addr(), "/fault-b", options())
        .await
        .unwrap();
    let other = EtcdConn::connect(
        &format!("{},{}", members[1].client_addr(), members[2].client_addr()),
        "/fault-b",
        options(),
    )
    .await
    .unwrap();
    holder.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let guard = holder
        .lock_with_ttl("/keyspaces/ks", "holder", Duration::from_secs(2))
        .await
        .unwrap();
    let fence = guard.fence();
    members[0].pause().unwrap();
    // The read hangs on the paused member; the lease running out ends it.
    let check = tokio::time::timeout(Duration::from_secs(30), guard.check())
        .await
        .expect("check answers");
    assert!(check.unwrap_err().is(topo_core::ErrorKind::LockLost));
    let next = other
        .lock_timeout("/keyspaces/ks", "next", Duration::from_secs(30))
        .await
        .expect("lock after expiry");
    assert!(next.fencing_token() > fence.token());
    // The old holder's fenced writes are refused.
    members[0].resume().unwrap();
    let refused = other
        .update_fenced(&fence, "/keyspaces/ks/Keyspace", b"stale", None)
        .await
        .unwrap_err();
    assert!(refused.is(topo_core::ErrorKind::LockLost), "{refused}");
    next.unlock().await.unwrap();
    drop(guard);
}

/// (c) A watcher cut off from the cluster while the history it needs is compacted away
/// converges to the final value once it reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_converges_after_compaction() {
    let Some(mut cluster) = cluster() else { return };
    let members = cluster.members();
    let watcher = EtcdConn::connect(&members[0].client_addr(), "/fault-c", options())
        .await
        .unwrap();
    let writer_addr = format!("{},{}", members[1].client_addr(), members[2].client_addr());
    let writer = EtcdConn::connect(&writer_addr, "/fault-c", options())
        .await
        .unwrap();
    writer.create("/SrvVSchema", b"v0").await.unwrap();
    let (_, mut changes) = watcher.watch("/SrvVSchema").await.unwrap();
    cluster.member_mut(0).kill();
    let mut last = None;
    for i in 1..=20 {
        last = Some(settled_update(&writer, "/SrvVSchema", format!("v{i}").as_bytes()).await);
    }
    let mut raw = etcd_client::Client::connect(writer_addr.split(',').collect::<Vec<_>>(), None)
        .await
        .unwrap();
    raw.compact(
        last.unwrap().raw(),
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    cluster.member_mut(0).restart().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let item = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut changes))
            .await
            .expect("the watch converges in time");
        match item {
            Some(Ok(d)) if d.contents == b"v20" => break,
            Some(Ok(_)) => continue,
            other => panic!("watch ended: {other:?}"),
        }
    }
}

/// A killed member makes no later call fail: calls move to the live endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_member_does_not_fail_calls() {
    let Some(mut cluster) = cluster() else { return };
    let conn = EtcdConn::connect(&cluster.endpoints(), "/fault-d", options())
        .await
        .unwrap();
    conn.create("/k", b"0").await.unwrap();
    cluster.member_mut(2).kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..60 {
        conn.update("/k", i.to_string().as_bytes(), None)
            .await
            .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        conn.get("/k")
            .await
            .unwrap_or_else(|e| panic!("read {i} failed: {e}"));
    }
}

/// A watcher whose member dies and comes back resumes from the last revision it saw: every
/// change made meanwhile arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_reconnect() {
    let Some(mut cluster) = cluster() else { return };
    let members = cluster.members();
    let watcher = EtcdConn::connect(&members[0].client_addr(), "/fault-e", options())
        .await
        .unwrap();
    let writer_addr = format!("{},{}", members[1].client_addr(), members[2].client_addr());
    let writer = EtcdConn::connect(&writer_addr, "/fault-e", options())
        .await
        .unwrap();
    writer.create("/SrvVSchema", b"v0").await.unwrap();
    let (_, mut changes) = watcher.watch("/SrvVSchema").await.unwrap();
    cluster.member_mut(0).kill();
    let mut versions = Vec::new();
    for i in 1..=5 {
        versions.push(settled_update(&writer, "/SrvVSchema", format!("v{i}").as_bytes()).await);
    }
    cluster.member_mut(0).restart().unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let item = tokio::time::timeout(
            Duration::from_secs(30),
            futures::StreamExt::next(&mut changes),
        )
        .await
        .expect("the watch resumes in time");
        match item {
            Some(Ok(d)) => {
                // Repeats are allowed by the contract; gaps are not, without a compaction.
                if seen.last() != Some(&d.version) {
                    seen.push(d.version);
                }
            }
            other => panic!("watch ended: {other:?}"),
        }
    }
    assert_eq!(seen, versions);
}

/// A recursive watcher cut off while its history is compacted re-reads the prefix and
/// reports what changed meanwhile: the deleted file, the updated one and the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_watch_converges_after_compaction() {
    let Some(mut cluster) = cluster() else { return };
    let members = cluster.members();
    let watcher = EtcdConn::connect(&members[0].client_addr(), "/fault-f", options())
        .await
        .unwrap();
    let writer_addr = format!("{},{}", members[1].client_addr(), members[2].client_addr());
    let writer = EtcdConn::connect(&writer_addr, "/fault-f", options())
        .await
        .unwrap();
    writer.create("/cells/a/CellInfo", b"a0").await.unwrap();
    writer.create("/cells/b/CellInfo", b"b0").await.unwrap();
    let (initial, mut changes) = watcher.watch_recursive("/cells").await.unwrap();
    assert_eq!(initial.len(), 2);
    cluster.member_mut(0).kill();
    settled_delete(&writer, "/cells/a/CellInfo").await;
    settled_update(&writer, "/cells/b/CellInfo", b"b1").await;
    let last = settled_create(&writer, "/cells/c/CellInfo", b"c0").await;
    let mut raw = etcd_client::Client::connect(writer_addr.split(',').collect::<Vec<_>>(), None)
        .await
        .unwrap();
    raw.compact(
        last.raw(),
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    cluster.member_mut(0).restart().unwrap();
    let mut state = std::collections::BTreeMap::new();
    for c in initial {
        state.insert(c.path, c.data.map(|d| d.contents));
    }
    let want = std::collections::BTreeMap::from([
        ("/cells/a/CellInfo".to_string(), None),
        ("/cells/b/CellInfo".to_string(), Some(b"b1".to_vec())),
        ("/cells/c/CellInfo".to_string(), Some(b"c0".to_vec())),
    ]);
    while state != want {
        let item = tokio::time::timeout(
            Duration::from_secs(30),
            futures::StreamExt::next(&mut changes),
        )
        .await
        .unwrap_or_else(|_| panic!("the watch converges in time; at {state:?}"));
        match item {
            Some(Ok(c)) => {
                state.insert(c.path, c.data.map(|d| d.contents));
            }
            other => panic!("watch ended: {other:?}"),
        }
    }
}
