//! Safety of locks, writes, elections and watches on real ZooKeeper, some through the fault
//! proxy: abandoned lock nodes, lost write answers, suspended leaders, racing tries,
//! watches across reconnects, re-created lock nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use topo_core::{Conn, ConnExt, ErrorKind, Version};
use topo_testkit::proxy::FaultProxy;
use topo_testkit::zk::ZkCluster;
use topo_zk::{ZkConn, ZkOptions};
use zookeeper_client::{Acls, Client, CreateMode};

use crate::{options, shared};

/// A plain client to look at (and tamper with) the tree behind the backend's back.
async fn raw(addr: &str) -> Client {
    Client::connect(addr).await.unwrap()
}

/// The children of `path`, sorted (none when it is missing).
async fn children(raw: &Client, path: &str) -> Vec<String> {
    let mut c = match raw.list_children(path).await {
        Ok(c) => c,
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(e) => panic!("listing {path}: {e}"),
    };
    c.sort();
    c
}

/// Waits (up to 10 s) until `path` has `n` children.
async fn await_children(raw: &Client, path: &str, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while children(raw, path).await.len() != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{path} never had {n} children"));
}

/// (item 1) A lock call that gives up leaves no node once its connection's `close()` has
/// returned, even when nothing of the process runs afterwards (its runtime is dropped at
/// once, as in a process that exits): the next locker does not queue behind an orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_up_lock_leaves_no_node_once_closed() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("given_up");
    let holder = ZkConn::connect(&addr, &root, options()).await.unwrap();
    holder.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let held = holder.lock("/keyspaces/ks", "holder").await.unwrap();
    let raw = raw(&addr).await;
    let locks = format!("{root}/keyspaces/ks/locks");
    let contender = {
        let (addr, root) = (addr.clone(), root.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let err = rt.block_on(async {
                let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
                let err = conn
                    .lock_timeout("/keyspaces/ks", "contender", Duration::from_secs(2))
                    .await
                    .unwrap_err();
                conn.close().await;
                err
            });
            // The process "exits": none of its tasks runs again.
            drop(rt);
            err
        })
    };
    // The contender queued behind the holder before it gave up.
    await_children(&raw, &locks, 2).await;
    let err = tokio::task::spawn_blocking(move || contender.join().unwrap())
        .await
        .unwrap();
    assert!(err.is(ErrorKind::Timeout), "{err}");
    assert_eq!(
        children(&raw, &locks).await.len(),
        1,
        "only the holder's node is left"
    );
    held.unlock().await.unwrap();
    let next = holder
        .lock_timeout("/keyspaces/ks", "next", Duration::from_secs(2))
        .await
        .expect("the next lock is not blocked by an orphan");
    next.unlock().await.unwrap();
}

/// (item 1) A timed-out lock call in a live process: its node goes, and once the holder
/// unlocks a third locker gets the lock promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_lock_does_not_block_the_next() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("timed_out");
    let holder = ZkConn::connect(&addr, &root, options()).await.unwrap();
    let contender = ZkConn::connect(&addr, &root, options()).await.unwrap();
    holder.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let held = holder.lock("/keyspaces/ks", "holder").await.unwrap();
    let err = contender
        .lock_timeout("/keyspaces/ks", "contender", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.is(ErrorKind::Timeout), "{err}");
    held.unlock().await.unwrap();
    let third = ZkConn::connect(&addr, &root, options()).await.unwrap();
    let next = third
        .lock_timeout("/keyspaces/ks", "third", Duration::from_secs(2))
        .await
        .expect("the third lock comes promptly");
    let raw = raw(&addr).await;
    assert_eq!(
        children(&raw, &format!("{root}/keyspaces/ks/locks"))
            .await
            .len(),
        1
    );
    next.unlock().await.unwrap();
}

/// (item 5) Of 21 concurrent `try_lock` calls exactly one wins; the others answer
/// `NodeExists` within a second and leave no node behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_try_locks_never_wait() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("try_race");
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(ZkConn::connect(&addr, &root, options()).await.unwrap());
    }
    conns[0]
        .create("/keyspaces/ks/Keyspace", b"")
        .await
        .unwrap();
    let tries: Vec<_> = (0..21)
        .map(|i| {
            let conn = conns[i % 3].clone();
            tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    conn.try_lock("/keyspaces/ks", &format!("try {i}")),
                )
                .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tries {
        match t.await.unwrap().expect("a try_lock answers within 1 s") {
            Ok(guard) => winners.push(guard),
            Err(e) => {
                assert!(e.is(ErrorKind::NodeExists), "{e}");
                assert!(
                    e.to_string()
                        .contains("lock already exists at path /keyspaces/ks"),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one try wins");
    let raw = raw(&addr).await;
    assert_eq!(
        children(&raw, &format!("{root}/keyspaces/ks/locks"))
            .await
            .len(),
        1,
        "only the winner's node is left"
    );
    winners.pop().unwrap().unlock().await.unwrap();
}

/// (item 14) A lock node deleted and re-created under the same name (the queue directory
/// removed and made again restarts the sequence) is not ours: `check()` says LockLost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_a_recreated_lock_node() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("recreated");
    let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let held = conn.lock("/keyspaces/ks", "holder").await.unwrap();
    held.check().await.unwrap();
    let raw = raw(&addr).await;
    let locks = format!("{root}/keyspaces/ks/locks");
    let ours = children(&raw, &locks).await;
    assert_eq!(ours.len(), 1);
    raw.delete(&format!("{locks}/{}", ours[0]), None)
        .await
        .unwrap();
    raw.delete(&locks, None).await.unwrap();
    raw.mkdir(
        &locks,
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    let (_, seq) = raw
        .create(
            &format!("{locks}/"),
            b"impostor",
            &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    assert_eq!(seq.to_string(), ours[0], "the same name again");
    let err = held.check().await.unwrap_err();
    assert!(err.is(ErrorKind::LockLost), "{err}");
    // Unlocking must not delete the other owner's node.
    let err = held.unlock().await.unwrap_err();
    assert!(err.is(ErrorKind::LockLost), "{err}");
    assert_eq!(children(&raw, &locks).await, ours);
}

/// (item 14) `wait_for_new_leader` watches from the moment it returns: a change made right
/// after it returned, before its stream is first polled, is seen. (A single-threaded
/// runtime and one session order the calls: the leader's removal reaches the server
/// before anything the stream's task sends.)
#[tokio::test]
async fn wait_for_new_leader_sees_a_change_right_after_it_returns() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("new_leader");
    let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
    let a = conn.new_leader_participation("primary", "a").await.unwrap();
    a.wait_for_leadership().await.unwrap();
    let b = conn.new_leader_participation("primary", "b").await.unwrap();
    let b_leads = tokio::spawn(async move {
        b.wait_for_leadership().await.unwrap();
        b
    });
    let raw = raw(&addr).await;
    await_children(&raw, &format!("{root}/elections/primary"), 2).await;
    let mut leaders = conn
        .new_leader_participation("primary", "observer")
        .await
        .unwrap()
        .wait_for_new_leader()
        .await
        .unwrap();
    a.stop().await;
    let mut seen = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while seen.last().map(String::as_str) != Some("b") {
            seen.push(leaders.next().await.unwrap().unwrap());
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the new leader b was never reported: {seen:?}"
    );
    // Leader ids coalesce: a reader polled after both changes sees only the latest.
    assert!(seen == ["a", "b"] || seen == ["b"], "{seen:?}");
    b_leads.await.unwrap().stop().await;
}

/// A client through `proxy` to `addr` with a short session, and a direct one.
async fn proxied(addr: &str, root: &str, session: Duration) -> (FaultProxy, ZkConn, ZkConn) {
    let proxy = FaultProxy::start(addr).await.unwrap();
    let opts = ZkOptions {
        session_timeout: session,
        remote_operation_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let through = ZkConn::connect(&proxy.addr().to_string(), root, opts)
        .await
        .unwrap();
    let direct = ZkConn::connect(addr, root, options()).await.unwrap();
    (proxy, through, direct)
}

/// (item 2) An unconditional write whose answer is lost is not sent again over a
/// compare-and-set made meanwhile (a lost update); alone, it is found applied, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_write_answer_never_overwrites_a_later_write() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("lost_answer");
    let (proxy, writer, other) = proxied(&addr, &root, Duration::from_secs(10)).await;
    let file = "/keyspaces/ks/Keyspace";
    other.create(file, b"v0").await.unwrap();

    // Alone: the write is applied once and reported so.
    writer.get(file).await.unwrap(); // recent traffic: no ping is due next
    proxy.reset_after_next_chunk();
    let v = writer
        .update(file, b"alone", None)
        .await
        .expect("the lost answer is resolved");
    assert_eq!(v, Version::new(1));
    assert_eq!(other.get(file).await.unwrap(), (b"alone".to_vec(), v));

    // With a compare-and-set between the lost answer and any retry.
    writer.get(file).await.unwrap();
    proxy.refuse(true);
    proxy.reset_after_next_chunk();
    let write = {
        let writer = writer.clone();
        tokio::spawn(async move { writer.update(file, b"lost answer", None).await })
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while other.get(file).await.unwrap().0 != b"lost answer" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the write reached the server");
    other
        .update(file, b"later", Some(&Version::new(2)))
        .await
        .unwrap();
    proxy.heal();
    let r = write.await.unwrap();
    assert_eq!(
        other.get(file).await.unwrap().0,
        b"later",
        "the later write survives (the writer answered {r:?})"
    );
    let err = r.unwrap_err();
    assert!(err.is(ErrorKind::OutcomeUnknown), "{err}");

    // A compare-and-set whose answer is lost is resolved too.
    writer.get(file).await.unwrap();
    proxy.reset_after_next_chunk();
    let v = writer
        .update(file, b"cas", Some(&Version::new(3)))
        .await
        .expect("the lost answer of a compare-and-set is resolved");
    assert_eq!(v, Version::new(4));
}

/// A create and a delete whose answers are lost are read back, as on etcd: found applied,
/// they are reported so; a create is never sent again, so a file deleted by another
/// client meanwhile stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_create_and_delete_answers_are_read_back() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("lost_create");
    let (proxy, writer, other) = proxied(&addr, &root, Duration::from_secs(10)).await;
    other.create("/keyspaces/ks/Keyspace", b"v0").await.unwrap();
    let file = "/keyspaces/ks/SrvKeyspace";

    writer.get("/keyspaces/ks/Keyspace").await.unwrap(); // no ping is due next
    proxy.reset_after_next_chunk();
    let v = writer
        .create(file, b"mine")
        .await
        .expect("the lost answer of a create is resolved");
    assert_eq!(v, Version::new(0));
    assert_eq!(other.get(file).await.unwrap(), (b"mine".to_vec(), v));

    writer.get(file).await.unwrap();
    proxy.reset_after_next_chunk();
    writer
        .delete(file, None)
        .await
        .expect("the lost answer of a delete is resolved");
    assert!(other.get(file).await.unwrap_err().is_no_node());

    // Deleted by another client before the writer can look: not created again.
    writer.get("/keyspaces/ks/Keyspace").await.unwrap();
    proxy.refuse(true);
    proxy.reset_after_next_chunk();
    let create = {
        let writer = writer.clone();
        tokio::spawn(async move { writer.create(file, b"again").await })
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while other.get(file).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the create reached the server");
    other.delete(file, None).await.unwrap();
    proxy.heal();
    let r = create.await.unwrap();
    assert!(
        other.get(file).await.unwrap_err().is_no_node(),
        "the deletion survives (the writer answered {r:?})"
    );
    let err = r.unwrap_err();
    assert!(err.is(ErrorKind::OutcomeUnknown), "{err}");
}

/// (item 4) A leader whose connection goes silent gives up leadership, a lock holder's
/// `check()` reports LockLost, and a waiting lock call gives up, before the server expires
/// the session and another participant takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_leader_steps_down_before_another_leads() {
    if !topo_testkit::zk::require() {
        return;
    }
    let zk = ZkCluster::standalone_with_tick(500).expect("start server");
    let root = "/suspended";
    let (proxy, leader, other) = proxied(&zk.addrs(), root, Duration::from_secs(4)).await;
    leader.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let held = leader.lock("/keyspaces/ks", "leader").await.unwrap();
    other.create("/keyspaces/ks2/Keyspace", b"").await.unwrap();
    let other_holds = other.lock("/keyspaces/ks2", "other").await.unwrap();
    let waiting = {
        let leader = leader.clone();
        tokio::spawn(async move {
            let r = leader.lock("/keyspaces/ks2", "waiter").await;
            (tokio::time::Instant::now(), r.map(|_| ()))
        })
    };
    let mine = leader
        .new_leader_participation("primary", "leader")
        .await
        .unwrap();
    let leading = mine.wait_for_leadership().await.unwrap();
    let theirs = other
        .new_leader_participation("primary", "other")
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let took_over = tokio::spawn(async move {
        theirs.wait_for_leadership().await.unwrap();
        tokio::time::Instant::now()
    });
    let locked = {
        let other = other.clone();
        tokio::spawn(async move {
            let g = other
                .lock_timeout("/keyspaces/ks", "other", Duration::from_secs(30))
                .await
                .unwrap();
            (tokio::time::Instant::now(), g)
        })
    };
    let raw = raw(&zk.addrs()).await;
    await_children(&raw, &format!("{root}/elections/primary"), 2).await;
    await_children(&raw, &format!("{root}/keyspaces/ks/locks"), 2).await;
    await_children(&raw, &format!("{root}/keyspaces/ks2/locks"), 2).await;
    proxy.blackhole();
    tokio::time::timeout(Duration::from_secs(30), leading.cancelled())
        .await
        .expect("leadership ends");
    let stepped_down = tokio::time::Instant::now();
    let lock_lost = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match tokio::time::timeout(Duration::from_millis(300), held.check()).await {
                Ok(Err(e)) if e.is(ErrorKind::LockLost) => return tokio::time::Instant::now(),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the lock is reported lost");
    let took_over = took_over.await.unwrap();
    let (gave_up, waited) = waiting.await.unwrap();
    let err = waited.unwrap_err();
    assert!(err.is(ErrorKind::LockLost), "{err}");
    assert!(
        gave_up < took_over,
        "the waiter gave up after {:?}, the other led after {:?}",
        gave_up - start,
        took_over - start
    );
    let (locked, g) = locked.await.unwrap();
    assert!(
        stepped_down < took_over,
        "stepped down after {:?}, the other led after {:?}",
        stepped_down - start,
        took_over - start
    );
    assert!(
        lock_lost < locked,
        "lock lost after {:?}, the other locked after {:?}",
        lock_lost - start,
        locked - start
    );
    g.unlock().await.unwrap();
    other_holds.unlock().await.unwrap();
}

/// (item 8) A recursive watch whose connection was cut reports, once it is back, what
/// changed meanwhile: the final state of every file, deletions included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_watch_catches_up_after_a_reconnect() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("watch_reconnect");
    let (proxy, watcher, other) = proxied(&addr, &root, Duration::from_secs(10)).await;
    for f in ["kept", "changed", "deleted"] {
        other
            .create(&format!("/keyspaces/{f}"), f.as_bytes())
            .await
            .unwrap();
    }
    let (initial, mut changes) = watcher.watch_recursive("/keyspaces").await.unwrap();
    let mut state: BTreeMap<String, Vec<u8>> = initial
        .into_iter()
        .map(|c| (c.path, c.data.unwrap().contents))
        .collect();
    assert_eq!(state.len(), 3);
    proxy.refuse(true);
    proxy.reset_all();
    other
        .update("/keyspaces/changed", b"new", None)
        .await
        .unwrap();
    other.delete("/keyspaces/deleted", None).await.unwrap();
    other.create("/keyspaces/created", b"c").await.unwrap();
    proxy.heal();
    let want: BTreeMap<String, Vec<u8>> = [
        ("/keyspaces/changed", &b"new"[..]),
        ("/keyspaces/created", b"c"),
        ("/keyspaces/kept", b"kept"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_vec()))
    .collect();
    let caught_up = tokio::time::timeout(Duration::from_secs(10), async {
        while state != want {
            let change = changes.next().await.unwrap().unwrap();
            match change.data {
                Some(d) => state.insert(change.path, d.contents),
                None => state.remove(&change.path),
            };
        }
    })
    .await;
    assert!(caught_up.is_ok(), "the watcher saw {state:?}, not {want:?}");
}
