//! The ZooKeeper backend against real ZooKeeper: both suites standalone and on a
//! three-node ensemble reached as `a,b|c` (observer path), the conformance suite over
//! mutual TLS, fault tests, ACLs, TLS misconfigurations, and lock compatibility with
//! Vitess's layout.

mod faults;
mod safety;
mod tls;

use std::sync::{Arc, OnceLock};
use std::time::Duration;
use topo_core::ConnExt;

use async_trait::async_trait;
use topo_core::conformance::ConnFactory;
use topo_core::{Conn, Result};
use topo_testkit::zk::ZkCluster;
use topo_zk::{ZkConn, ZkFactory, ZkOptions};
use toposphere::suite::FactoryBackend;

/// Servers shared by the tests of this binary (each test uses its own root).
fn shared(ensemble: bool) -> Option<String> {
    static ONE: OnceLock<Option<ZkCluster>> = OnceLock::new();
    static THREE: OnceLock<Option<ZkCluster>> = OnceLock::new();
    let cell = if ensemble { &THREE } else { &ONE };
    cell.get_or_init(|| {
        if !topo_testkit::zk::require() {
            return None;
        }
        let c = if ensemble {
            ZkCluster::ensemble_with_observer()
        } else {
            ZkCluster::standalone()
        };
        Some(c.unwrap_or_else(|e| panic!("starting ZooKeeper: {e}")))
    })
    .as_ref()
    .map(|c| {
        let n = c.nodes();
        if ensemble {
            // The two voters for the global connection, the observer for the read-only one.
            format!("{},{}|{}", n[0].addr(), n[1].addr(), n[2].addr())
        } else {
            c.addrs()
        }
    })
}

pub(crate) fn options() -> ZkOptions {
    ZkOptions {
        session_timeout: Duration::from_secs(10),
        remote_operation_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

struct Suite {
    addr: String,
}

#[async_trait]
impl ConnFactory for Suite {
    async fn open(&self, root: &str) -> Result<Arc<dyn Conn>> {
        let main = topo_zk::split_observers(&self.addr).0;
        Ok(Arc::new(ZkConn::connect(main, root, options()).await?))
    }
}

async fn one() -> Option<Suite> {
    shared(false).map(|addr| Suite { addr })
}

async fn three() -> Option<Suite> {
    shared(true).map(|addr| Suite { addr })
}

fn backend(address: String) -> FactoryBackend {
    FactoryBackend {
        factory: Arc::new(ZkFactory::new(options())),
        address,
    }
}

async fn one_backend() -> Option<FactoryBackend> {
    shared(false).map(backend)
}

async fn three_backend() -> Option<FactoryBackend> {
    shared(true).map(backend)
}

mod zk {
    topo_core::conformance_tests!(zk, crate::one);
    toposphere::typed_suite!(zk, crate::one_backend);
}

mod zk_tls {
    topo_core::conformance_tests!(zk_tls, crate::tls::mutual_suite);
}

mod zk_ensemble {
    topo_core::conformance_tests!(zk_ensemble, crate::three);
    toposphere::typed_suite!(zk_ensemble, crate::three_backend);
}

/// The read-only global connection of `a,b|c` goes to the observer and sees the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_serve_the_read_only_global_conn() {
    let Some(addr) = shared(true) else { return };
    let root = topo_core::conformance::fresh_root("observers");
    let ts = toposphere::Server::open_with_factory(
        Arc::new(ZkFactory::new(options())),
        &addr,
        &root,
        Default::default(),
    )
    .await
    .unwrap();
    assert!(!Arc::ptr_eq(ts.global(), ts.global_read_only()));
    // The server after `|` is an observer (ZooKeeper's `srvr` says so).
    let observer = topo_zk::split_observers(&addr).1.unwrap();
    let mut srvr = std::net::TcpStream::connect(observer).unwrap();
    std::io::Write::write_all(&mut srvr, b"srvr").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut srvr, &mut answer).unwrap();
    assert!(answer.contains("Mode: observer"), "{answer}");
    ts.global()
        .create("/cells/zone1/CellInfo", b"")
        .await
        .unwrap();
    // The observer learns of commits after the voters; the read-only connection syncs
    // before reading, so the write just made is there at once, and so is its update.
    assert_eq!(
        ts.global_read_only()
            .get("/cells/zone1/CellInfo")
            .await
            .unwrap()
            .0,
        b""
    );
    ts.global()
        .update("/cells/zone1/CellInfo", b"changed", None)
        .await
        .unwrap();
    assert_eq!(
        ts.global_read_only()
            .get("/cells/zone1/CellInfo")
            .await
            .unwrap()
            .0,
        b"changed"
    );
}

/// A lock node created the Vitess way (ephemeral sequential under `<dir>/locks/`) blocks
/// ours, and ours comes next once it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitess_lock_layout_excludes_both_ways() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("vitess_compat");
    let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let raw = zookeeper_client::Client::connect(&addr).await.unwrap();
    // Vitess makes the parents it needs, then its ephemeral sequential node.
    let dir_opts =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    raw.mkdir(&format!("{root}/keyspaces/ks/locks"), &dir_opts)
        .await
        .unwrap();
    let (_, seq) = raw
        .create(
            &format!("{root}/keyspaces/ks/locks/"),
            b"vitess holds it",
            &zookeeper_client::CreateMode::EphemeralSequential
                .with_acls(zookeeper_client::Acls::anyone_all()),
        )
        .await
        .unwrap();
    let err = conn.try_lock("/keyspaces/ks", "ours").await.unwrap_err();
    assert!(err.is(topo_core::ErrorKind::NodeExists), "{err}");
    let blocked = tokio::time::timeout(
        Duration::from_millis(500),
        conn.lock("/keyspaces/ks", "ours"),
    )
    .await;
    assert!(blocked.is_err(), "our lock must wait for Vitess's");
    raw.delete(&format!("{root}/keyspaces/ks/locks/{seq}"), None)
        .await
        .unwrap();
    let ours = tokio::time::timeout(Duration::from_secs(10), conn.lock("/keyspaces/ks", "ours"))
        .await
        .unwrap()
        .unwrap();
    let children = raw
        .list_children(&format!("{root}/keyspaces/ks/locks"))
        .await
        .unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(
        children[0].len(),
        10,
        "sequence names are ten digits, as Vitess expects"
    );
    let our_node = format!("{root}/keyspaces/ks/locks/{}", children[0]);
    let (data, stat) = raw.get_data(&our_node).await.unwrap();
    assert_eq!(data, b"ours", "the lock node holds the contents");
    assert_ne!(stat.ephemeral_owner, 0, "the lock node is ephemeral");
    // A Vitess contender queues behind ours: its node sorts after ours, and Vitess waits
    // for every lower node.
    let (_, theirs) = raw
        .create(
            &format!("{root}/keyspaces/ks/locks/"),
            b"vitess waits",
            &zookeeper_client::CreateMode::EphemeralSequential
                .with_acls(zookeeper_client::Acls::anyone_all()),
        )
        .await
        .unwrap();
    assert!(
        format!("{theirs}") > children[0],
        "{theirs} after {}",
        children[0]
    );
    ours.unlock().await.unwrap();
    // Vitess's node is the lowest now: it holds the lock, and ours must wait.
    let err = conn.try_lock("/keyspaces/ks", "ours").await.unwrap_err();
    assert!(err.is(topo_core::ErrorKind::NodeExists), "{err}");
}

/// The next change of a recursive watch: path and contents.
async fn next_change(
    changes: &mut topo_core::WatchStream<topo_core::RecursiveChange>,
) -> (String, Option<Vec<u8>>) {
    use futures::StreamExt;
    let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("a change within 10 s")
        .expect("the stream goes on")
        .expect("no error");
    (change.path, change.data.map(|d| d.contents))
}

/// A recursive watch reports a file created with empty contents (an all-default record
/// encodes to no bytes) but not the directory znodes made on the way to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_watch_tells_empty_files_from_directories() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("empty_files");
    let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
    conn.create("/keyspaces/seed", b"x").await.unwrap();
    let (initial, mut changes) = conn.watch_recursive("/keyspaces").await.unwrap();
    assert_eq!(initial.len(), 1);
    let shard = "/keyspaces/ks/shards/0/Shard".to_string();
    conn.create(&shard, b"").await.unwrap();
    // The first change is the file, not one of the three directories made before it.
    assert_eq!(
        next_change(&mut changes).await,
        (shard.clone(), Some(b"".to_vec()))
    );
    conn.update(&shard, b"set", None).await.unwrap();
    assert_eq!(
        next_change(&mut changes).await,
        (shard, Some(b"set".to_vec()))
    );
}

/// A lock call dropped while its node is being created leaves no node behind: the session
/// lives on, so a stray node would block the lock for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_dropped_during_creation_leaves_no_node() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("dropped_creation");
    let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
    // Give up on lock calls after 0, 0.1, … 3 ms: some are dropped before, some while,
    // some after their node is created (those return a guard, dropped at once).
    for step in 0..30u64 {
        let call = conn.lock_name("/named", "dropped");
        let _ = tokio::time::timeout(Duration::from_micros(step * 100), call).await;
    }
    let held = tokio::time::timeout(Duration::from_secs(10), conn.lock_name("/named", "next"))
        .await
        .expect("no stray node blocks the lock")
        .unwrap();
    let raw = zookeeper_client::Client::connect(&addr).await.unwrap();
    let children = raw
        .list_children(&format!("{root}/named/locks"))
        .await
        .unwrap();
    assert_eq!(children.len(), 1, "only the holder's node: {children:?}");
    held.unlock().await.unwrap();
}

/// Unlocking removes the emptied `locks` directory as Vitess does (a named lock's whole
/// directory), but keeps it while others queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_removes_the_emptied_queue() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("emptied_queue");
    let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
    let raw = zookeeper_client::Client::connect(&addr).await.unwrap();
    let exists = |p: String| {
        let raw = raw.clone();
        async move { raw.check_stat(&p).await.unwrap().is_some() }
    };
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let first = conn.lock("/keyspaces/ks", "first").await.unwrap();
    let waiter = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.lock("/keyspaces/ks", "second").await })
    };
    // The waiter's node is queued once the queue has two entries.
    let locks = format!("{root}/keyspaces/ks/locks");
    tokio::time::timeout(Duration::from_secs(10), async {
        while raw.list_children(&locks).await.unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the waiter queues");
    first.unlock().await.unwrap();
    assert!(exists(locks.clone()).await, "kept for the waiter");
    let second = waiter.await.unwrap().unwrap();
    second.unlock().await.unwrap();
    assert!(!exists(locks).await, "removed once empty");
    assert!(exists(format!("{root}/keyspaces/ks/Keyspace")).await);

    let named = conn.lock_name("/named/thing", "n").await.unwrap();
    named.unlock().await.unwrap();
    assert!(
        !exists(format!("{root}/named")).await,
        "nothing left of a named lock"
    );
}

/// `close()` ends the session: its lock goes at once (another connection takes it), its
/// watches end with `Interrupted`, and later calls fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_locks_and_ends_watches() {
    use futures::StreamExt;
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("close");
    let first = ZkConn::connect(&addr, &root, options()).await.unwrap();
    let second = ZkConn::connect(&addr, &root, options()).await.unwrap();
    first.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let held = first.lock("/keyspaces/ks", "first").await.unwrap();
    let (_, mut watch) = first.watch("/keyspaces/ks/Keyspace").await.unwrap();
    first.close().await;
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        second.lock("/keyspaces/ks", "second"),
    )
    .await
    .expect("the closed connection's lock is released")
    .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch ends");
    match end {
        Some(Err(e)) => assert!(e.is(topo_core::ErrorKind::Interrupted), "{e}"),
        other => panic!("expected Interrupted, got {other:?}"),
    }
    let err = held.check().await.unwrap_err();
    assert!(err.is(topo_core::ErrorKind::LockLost), "{err}");
    let err = held.unlock().await.unwrap_err();
    assert!(err.is(topo_core::ErrorKind::LockLost), "{err}");
    let err = first.get("/keyspaces/ks/Keyspace").await.unwrap_err();
    assert!(err.is(topo_core::ErrorKind::Interrupted), "{err}");
    next.unlock().await.unwrap();
}

/// `list` returns files, empty ones included, but not empty directories (an election's
/// directory stays after its proposals go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_returns_empty_files_not_empty_directories() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("list_empty");
    let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let election = conn
        .new_leader_participation("primary", "me")
        .await
        .unwrap();
    election.wait_for_leadership().await.unwrap();
    election.stop().await;
    let raw = zookeeper_client::Client::connect(&addr).await.unwrap();
    let dir = format!("{root}/elections/primary");
    assert!(raw.check_stat(&dir).await.unwrap().is_some());
    let keys: Vec<(String, Vec<u8>)> = conn
        .list("/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(keys, vec![("/keyspaces/ks/Keyspace".to_string(), vec![])]);
}

/// `--topo-zk-max-concurrency`: 0 is refused at open; with 1, concurrent calls all finish,
/// taking turns (a turn is given back whatever the call's outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_is_checked_and_calls_take_turns() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("max_concurrency");
    let zero = ZkOptions {
        max_concurrency: 0,
        ..options()
    };
    let err = ZkConn::connect(&addr, &root, zero).await.unwrap_err();
    assert!(err.is(topo_core::ErrorKind::InvalidArgument), "{err}");
    assert!(
        err.to_string().contains("--topo-zk-max-concurrency"),
        "{err}"
    );
    let one = ZkOptions {
        max_concurrency: 1,
        ..options()
    };
    let conn = ZkConn::connect(&addr, &root, one).await.unwrap();
    let calls = (0..16).map(|i| {
        let conn = conn.clone();
        async move {
            conn.create(&format!("/f{i}"), b"x").await.unwrap();
            // A failing call gives its turn back too.
            assert!(conn.get("/missing").await.unwrap_err().is_no_node());
            conn.get(&format!("/f{i}")).await.unwrap().0
        }
    });
    let got = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(calls))
        .await
        .expect("every call gets its turn");
    assert!(got.iter().all(|v| v == b"x"));
}

/// Watchers that never read while hundreds of changes happen hold at most one unread item
/// per file (the latest), and still converge to the final values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_watches_stay_bounded() {
    let Some(addr) = shared(false) else { return };
    let root = topo_core::conformance::fresh_root("unread_watch");
    let conn = ZkConn::connect(&addr, &root, options()).await.unwrap();
    unread_watches_stay_bounded_on(&conn).await;
}

/// The body of `unread_watches_stay_bounded`: three files changed 300 times in turn.
async fn unread_watches_stay_bounded_on(conn: &dyn Conn) {
    use futures::StreamExt;
    for f in 0..3 {
        conn.create(&format!("/d/{f}"), b"0").await.unwrap();
    }
    let (_, mut file) = conn.watch("/d/0").await.unwrap();
    let (_, mut tree) = conn.watch_recursive("/d").await.unwrap();
    for i in 0..300u32 {
        conn.update(&format!("/d/{}", i % 3), i.to_string().as_bytes(), None)
            .await
            .unwrap();
        assert!(file.queued().is_some_and(|n| n <= 1), "{:?}", file.queued());
        assert!(tree.queued().is_some_and(|n| n <= 3), "{:?}", tree.queued());
    }
    let file_final = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let d = file.next().await.unwrap().unwrap();
            if d.contents == b"297" {
                return;
            }
        }
    });
    file_final.await.expect("the file watch converges");
    let mut finals = std::collections::BTreeMap::new();
    let want: std::collections::BTreeMap<String, Vec<u8>> = (0..3u32)
        .map(|f| (format!("/d/{f}"), (297 + f).to_string().into_bytes()))
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while finals != want {
            let c = tree.next().await.unwrap().unwrap();
            finals.insert(c.path, c.data.unwrap().contents);
        }
    })
    .await
    .expect("the recursive watch converges");
}
