//! The conformance and typed-layer suites on a real database file.

use std::sync::Arc;
use topo_core::ConnExt;

use async_trait::async_trait;
use topo_core::conformance::ConnFactory;
use topo_core::{Conn, Factory, Result};
use topo_local::{LocalConn, LocalFactory, LocalOptions};
use toposphere::suite::SuiteBackend;

/// Each suite run gets its own file; every `open` is an independent connection (its own
/// poller), as another process's would be.
struct LocalSuite {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl LocalSuite {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("topo.db");
        LocalSuite { _dir: dir, path }
    }
}

#[async_trait]
impl ConnFactory for LocalSuite {
    async fn open(&self, root: &str) -> Result<Arc<dyn Conn>> {
        Ok(Arc::new(LocalConn::open(
            &self.path,
            root,
            LocalOptions::default(),
        )?))
    }
}

async fn factory() -> Option<LocalSuite> {
    Some(LocalSuite::new())
}

struct LocalBackend {
    suite: LocalSuite,
    factory: Arc<LocalFactory>,
}

impl SuiteBackend for LocalBackend {
    fn factory(&self) -> Arc<dyn Factory> {
        self.factory.clone()
    }
    fn address(&self) -> String {
        self.suite.path.display().to_string()
    }
}

async fn backend() -> Option<LocalBackend> {
    Some(LocalBackend {
        suite: LocalSuite::new(),
        factory: Arc::new(LocalFactory::new(LocalOptions::default())),
    })
}

mod local {
    topo_core::conformance_tests!(local, crate::factory);
    toposphere::typed_suite!(local, crate::backend);
}

/// A lock future dropped while its SQLite write is in flight, on a current-thread runtime
/// (where the write runs on the blocking pool and commits after the drop): no entry is
/// left, so another connection's `try_lock` succeeds at once rather than after the TTL.
#[tokio::test]
async fn dropped_acquisition_on_current_thread_leaves_nothing() {
    use std::time::{Duration, Instant};
    use topo_core::ErrorKind;

    let suite = LocalSuite::new();
    let conn = suite.open("/r").await.unwrap();
    let other = suite.open("/r").await.unwrap();
    conn.create("/ks/Keyspace", b"").await.unwrap();
    // Another writer holds the database, so the acquisitions' writes wait in the blocking
    // pool while their futures are dropped; they commit once it lets go.
    let blocker = rusqlite::Connection::open(&suite.path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_millis(100), conn.lock("/ks", "dropped")).await;
        assert!(
            r.is_err(),
            "the acquisition must still be in flight when dropped"
        );
    }
    blocker.execute_batch("COMMIT").unwrap();
    // Let the abandoned writes commit before probing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match other.try_lock("/ks", "probe").await {
            Ok(g) => {
                g.unlock().await.unwrap();
                break;
            }
            Err(e) if e.is(ErrorKind::NodeExists) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("a dropped acquisition left its entry behind: {e}"),
        }
    }
    assert!(
        conn.list_dir("/ks/locks", false)
            .await
            .is_err_and(|e| e.is_no_node()),
        "no lock entry may remain"
    );
}

/// A recursive watcher whose poller falls behind a trim of the change log (another
/// connection writes more changes than the log keeps between two of its polls) still ends
/// at the final state: the deletion and the update whose log rows were trimmed arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_watch_converges_after_a_log_trim() {
    use futures::{FutureExt, StreamExt};
    use std::time::Duration;

    let suite = LocalSuite::new();
    let writer = suite.open("/r").await.unwrap();
    writer.create("/watched/a", b"a1").await.unwrap();
    writer.create("/watched/b", b"b1").await.unwrap();
    let slow_poll = Duration::from_secs(10);
    let slow = LocalConn::open(
        &suite.path,
        "/r",
        LocalOptions {
            poll_interval: slow_poll,
            file_notifications: false,
            ..Default::default()
        },
    )
    .unwrap();
    let (initial, mut changes) = slow.watch_recursive("/watched").await.unwrap();
    assert_eq!(initial.len(), 2);
    // Let the slow poller make its first read, so the next one comes a whole interval later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.delete("/watched/a", None).await.unwrap();
    writer.update("/watched/b", b"b2", None).await.unwrap();
    // More changes than the log keeps (10,000), elsewhere.
    for i in 0..11_000u32 {
        writer
            .update("/elsewhere", i.to_string().as_bytes(), None)
            .await
            .unwrap();
    }
    assert!(
        changes.next().now_or_never().is_none(),
        "test precondition: the slow poller must not have read the log during the writes"
    );
    let (mut a_deleted, mut b_final) = (false, false);
    while !(a_deleted && b_final) {
        let item = tokio::time::timeout(slow_poll * 2, changes.next())
            .await
            .unwrap_or_else(|_| {
                panic!("missed after the trim: a deleted {a_deleted}, b final {b_final}")
            })
            .expect("stream")
            .expect("change");
        match (item.path.as_str(), item.data) {
            ("/watched/a", None) => a_deleted = true,
            ("/watched/b", Some(d)) => b_final = d.contents == b"b2",
            other => panic!("unexpected change {other:?}"),
        }
    }
}

/// A watcher that never reads while thousands of changes happen holds one unread item
/// (the latest), and still ends at the final value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_watch_stays_bounded() {
    use futures::StreamExt;
    use std::time::Duration;

    let suite = LocalSuite::new();
    let writer = suite.open("/r").await.unwrap();
    let watcher = suite.open("/r").await.unwrap();
    writer.create("/f", b"0").await.unwrap();
    let (_, mut changes) = watcher.watch("/f").await.unwrap();
    for i in 1..=3000u32 {
        writer
            .update("/f", i.to_string().as_bytes(), None)
            .await
            .unwrap();
    }
    // Wait until the poller delivered the last write, without reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(changes.queued(), Some(1));
    let last = changes.next().await.unwrap().unwrap();
    assert_eq!(last.contents, b"3000");
}

/// Only a commit rewrites the wake-up file that wakes every process's change-log reader:
/// a write that is refused (and rolled back) wakes nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_commits_touch_the_wake_file() {
    use std::time::Duration;
    use topo_core::{ErrorKind, Version};

    let suite = LocalSuite::new();
    let conn = suite.open("/r").await.unwrap();
    conn.create("/f", b"1").await.unwrap();
    let wake = std::path::PathBuf::from(format!("{}-wake", suite.path.display()));
    let mtime = || std::fs::metadata(&wake).unwrap().modified().unwrap();
    let before = mtime();
    // Past the file system's timestamp granularity.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(conn
        .create("/f", b"2")
        .await
        .unwrap_err()
        .is(ErrorKind::NodeExists));
    assert!(conn
        .update("/f", b"2", Some(&Version::new(999)))
        .await
        .unwrap_err()
        .is(ErrorKind::BadVersion));
    assert_eq!(mtime(), before, "a refused write rewrote the wake-up file");
    conn.update("/f", b"2", None).await.unwrap();
    assert!(mtime() > before, "a commit must rewrite the wake-up file");
}

/// File notifications wake another opener's change-log reader: a change reaches its
/// watcher far sooner than the fallback timer (500 ms) would bring it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_openers_watch_is_woken_by_file_notifications() {
    use futures::StreamExt;
    use std::time::{Duration, Instant};

    let suite = LocalSuite::new();
    let writer = suite.open("/r").await.unwrap();
    let watcher = suite.open("/r").await.unwrap();
    writer.create("/f", b"0").await.unwrap();
    let (_, mut changes) = watcher.watch("/f").await.unwrap();
    let mut delays = Vec::new();
    for i in 1..=20u32 {
        let value = i.to_string();
        let start = Instant::now();
        writer.update("/f", value.as_bytes(), None).await.unwrap();
        loop {
            let d = tokio::time::timeout(Duration::from_secs(5), changes.next())
                .await
                .expect("the change must arrive")
                .unwrap()
                .unwrap();
            if d.contents == value.as_bytes() {
                break;
            }
        }
        delays.push(start.elapsed());
    }
    delays.sort();
    assert!(
        delays[10] < Duration::from_millis(150),
        "median write-to-watch delay {:?}: the reader was not woken by notifications",
        delays[10]
    );
}

/// An unlock whose caller gave up waiting (its write waits behind another writer) still
/// counts as a pending clean-up: close() returns only once the entry is gone, so the lock
/// is free at once afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_an_abandoned_unlock() {
    use std::time::Duration;

    let suite = LocalSuite::new();
    let conn = suite.open("/r").await.unwrap();
    let other = suite.open("/r").await.unwrap();
    conn.create("/ks/Keyspace", b"").await.unwrap();
    let guard = conn.lock("/ks", "holder").await.unwrap();
    let blocker = rusqlite::Connection::open(&suite.path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), guard.unlock())
            .await
            .is_err(),
        "the unlock must still be waiting for the database when given up"
    );
    let closing = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.close().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !closing.is_finished(),
        "close() returned while the abandoned unlock had not removed the entry"
    );
    blocker.execute_batch("COMMIT").unwrap();
    tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .expect("close() must return once the unlock finished")
        .unwrap();
    other
        .try_lock("/ks", "after")
        .await
        .expect("the lock must be free once close() returned")
        .unlock()
        .await
        .unwrap();
}
