//! The etcd backend against real etcd: both suites on one member and on three, fault
//! tests, TLS, and lock compatibility with Vitess's layout.

mod faults;
mod safety;
mod tls;

use std::sync::{Arc, OnceLock};
use std::time::Duration;
use topo_core::ConnExt;

use async_trait::async_trait;
use topo_core::conformance::ConnFactory;
use topo_core::{Conn, Result};
use topo_etcd::{EtcdConn, EtcdFactory, EtcdOptions};
use topo_testkit::etcd::EtcdCluster;
use toposphere::suite::FactoryBackend;

/// A server shared by every test of this binary that needs one (each test uses its own
/// root), started on first use; `None` when etcd is missing and skipping is allowed.
pub(crate) fn shared(three: bool) -> Option<String> {
    static ONE: OnceLock<Option<EtcdCluster>> = OnceLock::new();
    static THREE: OnceLock<Option<EtcdCluster>> = OnceLock::new();
    let cell = if three { &THREE } else { &ONE };
    cell.get_or_init(|| {
        if !topo_testkit::require_binary("etcd", "etcd backend tests") {
            return None;
        }
        let c = if three {
            EtcdCluster::three()
        } else {
            EtcdCluster::single()
        };
        Some(c.unwrap_or_else(|e| panic!("starting etcd: {e}")))
    })
    .as_ref()
    .map(EtcdCluster::endpoints)
}

/// Test settings: locks with a short default lease so expiry tests stay quick.
pub(crate) fn options() -> EtcdOptions {
    EtcdOptions {
        remote_operation_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

struct Suite {
    endpoints: String,
}

#[async_trait]
impl ConnFactory for Suite {
    async fn open(&self, root: &str) -> Result<Arc<dyn Conn>> {
        Ok(Arc::new(
            EtcdConn::connect(&self.endpoints, root, options()).await?,
        ))
    }
}

async fn one() -> Option<Suite> {
    shared(false).map(|endpoints| Suite { endpoints })
}

async fn three() -> Option<Suite> {
    shared(true).map(|endpoints| Suite { endpoints })
}

fn backend(address: String) -> FactoryBackend {
    FactoryBackend {
        factory: Arc::new(EtcdFactory::new(options())),
        address,
    }
}

async fn one_backend() -> Option<FactoryBackend> {
    shared(false).map(backend)
}

async fn three_backend() -> Option<FactoryBackend> {
    shared(true).map(backend)
}

mod etcd {
    topo_core::conformance_tests!(etcd, crate::one);
    toposphere::typed_suite!(etcd, crate::one_backend);
}

mod etcd_cluster {
    topo_core::conformance_tests!(etcd_cluster, crate::three);
    toposphere::typed_suite!(etcd_cluster, crate::three_backend);
}

/// A lock taken the way Vitess takes it (a lease-bound key under `<dir>/locks/`) blocks
/// ours, and ours blocks the next one queued the Vitess way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitess_lock_layout_excludes_both_ways() {
    let Some(endpoints) = shared(false) else {
        return;
    };
    let root = topo_core::conformance::fresh_root("vitess_compat");
    let conn = EtcdConn::connect(&endpoints, &root, options())
        .await
        .unwrap();
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let mut raw = etcd_client::Client::connect([endpoints.split(',').next().unwrap()], None)
        .await
        .unwrap();
    let lease = raw.lease_grant(30, None).await.unwrap().id();
    let vitess_key = format!("{root}/keyspaces/ks/locks/{lease}");
    raw.put(
        vitess_key.as_str(),
        "vitess holds it",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
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
    raw.lease_revoke(lease).await.unwrap();
    let ours = tokio::time::timeout(Duration::from_secs(10), conn.lock("/keyspaces/ks", "ours"))
        .await
        .expect("ours after Vitess released")
        .unwrap();
    // A Vitess locker queues behind us: the key with the highest revision below its own is ours.
    let lease2 = raw.lease_grant(30, None).await.unwrap().id();
    let resp = raw
        .put(
            format!("{root}/keyspaces/ks/locks/{lease2}"),
            "vitess waits",
            Some(etcd_client::PutOptions::new().with_lease(lease2)),
        )
        .await
        .unwrap();
    let rev = resp.header().unwrap().revision();
    let before = raw
        .get(
            format!("{root}/keyspaces/ks/locks/"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_max_mod_revision(rev - 1)
                    .with_sort(
                        etcd_client::SortTarget::Mod,
                        etcd_client::SortOrder::Descend,
                    )
                    .with_limit(1),
            ),
        )
        .await
        .unwrap();
    assert_eq!(before.kvs().len(), 1, "Vitess sees our key ahead of it");
    assert_eq!(
        before.kvs()[0].create_revision() as u64,
        ours.fencing_token()
    );
    assert_eq!(String::from_utf8_lossy(before.kvs()[0].value()), "ours");
    ours.unlock().await.unwrap();
    raw.lease_revoke(lease2).await.unwrap();
}

/// Prefix reads come back whole even when they are larger than one page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lists_are_paged() {
    let Some(endpoints) = shared(false) else {
        return;
    };
    let root = topo_core::conformance::fresh_root("paging");
    let conn = EtcdConn::connect(&endpoints, &root, options())
        .await
        .unwrap();
    let value = vec![b'x'; 4096];
    for i in 0..1500 {
        conn.create(&format!("/tablets/zone1-{i:010}/Tablet"), &value)
            .await
            .unwrap();
    }
    let all = conn.list("/tablets/").await.unwrap();
    assert_eq!(all.len(), 1500);
    assert_eq!(conn.list_dir("/tablets", false).await.unwrap().len(), 1500);
    // Together far over the client's 4 MiB message limit; one of them fits in a page.
    let big = vec![b'y'; 1 << 20];
    for i in 0..6 {
        conn.create(&format!("/big/{i}"), &big).await.unwrap();
    }
    let all = conn.list("/big/").await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|kv| kv.value == big));
    let (initial, _changes) = conn.watch_recursive("/big").await.unwrap();
    assert_eq!(initial.len(), 6);
}

/// A `try_lock` that finds the lock held writes nothing: no key of it ever stands in the
/// queue (where a Vitess locker would wait behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_try_lock_writes_no_key() {
    let Some(endpoints) = shared(false) else {
        return;
    };
    let root = topo_core::conformance::fresh_root("try_lock_no_key");
    let conn = EtcdConn::connect(&endpoints, &root, options())
        .await
        .unwrap();
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let held = conn.lock("/keyspaces/ks", "holder").await.unwrap();
    let mut raw = etcd_client::Client::connect([endpoints.split(',').next().unwrap()], None)
        .await
        .unwrap();
    let locks = format!("{root}/keyspaces/ks/locks/");
    let mut events = raw
        .watch(
            locks.as_str(),
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        let err = conn.try_lock("/keyspaces/ks", "try").await.unwrap_err();
        assert!(err.is(topo_core::ErrorKind::NodeExists), "{err}");
    }
    held.unlock().await.unwrap();
    // Events arrive in revision order: everything the tries wrote comes before the
    // holder's deletion.
    let mut puts = Vec::new();
    'outer: while let Some(msg) = events.message().await.unwrap() {
        for ev in msg.events() {
            let kv = ev.kv().unwrap();
            match ev.event_type() {
                etcd_client::EventType::Put => puts.push(kv.key_str().unwrap().to_string()),
                etcd_client::EventType::Delete => break 'outer,
            }
        }
    }
    assert!(puts.is_empty(), "failed tries wrote {puts:?}");
}

/// Closing a connection releases its locks, ends its watches and refuses later calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_locks_and_ends_watches() {
    let Some(endpoints) = shared(false) else {
        return;
    };
    let root = topo_core::conformance::fresh_root("close");
    let conn = EtcdConn::connect(&endpoints, &root, options())
        .await
        .unwrap();
    let other = EtcdConn::connect(&endpoints, &root, options())
        .await
        .unwrap();
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let held = conn.lock("/keyspaces/ks", "closing").await.unwrap();
    let (_, mut changes) = conn.watch("/keyspaces/ks/Keyspace").await.unwrap();
    conn.close().await;
    let next = tokio::time::timeout(Duration::from_secs(20), other.lock("/keyspaces/ks", "next"))
        .await
        .expect("the closed connection's lock is released")
        .unwrap();
    let end = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut changes),
    )
    .await
    .expect("the watch ends");
    assert!(
        matches!(&end, Some(Err(e)) if e.is(topo_core::ErrorKind::Interrupted)),
        "{end:?}"
    );
    let err = conn.get("/keyspaces/ks/Keyspace").await.unwrap_err();
    assert!(err.is(topo_core::ErrorKind::Interrupted), "{err}");
    assert!(held.check().await.is_err());
    next.unlock().await.unwrap();
}

/// A version compacted away reads as `NoNode`, like one that never existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_version_is_no_node() {
    if !topo_testkit::require_binary("etcd", "etcd compaction test") {
        return;
    }
    // Its own server: compacting the shared one would take versions from other tests.
    let server = EtcdCluster::single().unwrap();
    let endpoints = server.endpoints();
    let conn = EtcdConn::connect(&endpoints, "/compacted", options())
        .await
        .unwrap();
    let old = conn.create("/SrvVSchema", b"old").await.unwrap();
    let new = conn.update("/SrvVSchema", b"new", None).await.unwrap();
    assert_eq!(conn.get_version("/SrvVSchema", &old).await.unwrap(), b"old");
    let mut raw = etcd_client::Client::connect([endpoints.split(',').next().unwrap()], None)
        .await
        .unwrap();
    raw.compact(new.raw(), None).await.unwrap();
    let err = conn.get_version("/SrvVSchema", &old).await.unwrap_err();
    assert!(err.is_no_node(), "{err}");
    assert_eq!(conn.get_version("/SrvVSchema", &new).await.unwrap(), b"new");
}

/// A recursive watcher that never reads while hundreds of changes happen holds at most
/// one unread item per file (its latest state), and still converges to the final values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_recursive_watch_stays_bounded() {
    use futures::StreamExt;
    let Some(endpoints) = shared(false) else {
        return;
    };
    let root = topo_core::conformance::fresh_root("unread_watch");
    let conn = EtcdConn::connect(&endpoints, &root, options())
        .await
        .unwrap();
    for f in 0..3 {
        conn.create(&format!("/d/{f}"), b"0").await.unwrap();
    }
    let (_, mut tree) = conn.watch_recursive("/d").await.unwrap();
    for i in 0..300u32 {
        conn.update(&format!("/d/{}", i % 3), i.to_string().as_bytes(), None)
            .await
            .unwrap();
        assert!(tree.queued().is_some_and(|n| n <= 3), "{:?}", tree.queued());
    }
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
