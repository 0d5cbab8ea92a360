//! Safety tests (issue 11) on real etcd, with faults injected by the test kit's proxy
//! between a client and its member: writes whose reply is lost.

use std::time::Duration;

use topo_core::{Conn, ErrorKind};
use topo_etcd::{EtcdConn, EtcdOptions};
use topo_testkit::proxy::FaultProxy;

use crate::{options, shared};

/// The shared single member's address, or `None` when etcd is missing.
fn member() -> Option<String> {
    shared(false)
}

/// A direct etcd client, for looking behind the backend's back.
async fn raw(endpoint: &str) -> etcd_client::Client {
    etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap()
}

/// Options for a connection behind a proxy: calls give up after `timeout`.
fn proxied_options(timeout: Duration) -> EtcdOptions {
    EtcdOptions {
        remote_operation_timeout: timeout,
        dial_timeout: timeout,
        ..options()
    }
}

async fn connect(address: &str, root: &str) -> EtcdConn {
    EtcdConn::connect(address, root, options()).await.unwrap()
}

/// A connection through a fresh proxy to the shared member, warmed up (so the proxy's
/// next client chunk is a request), and a direct one; both under `root`.
async fn lost_reply_setup(endpoint: &str, root: &str) -> (FaultProxy, EtcdConn, EtcdConn) {
    let direct = connect(endpoint, root).await;
    direct.create("/SrvVSchema", b"v0").await.unwrap();
    let proxy = FaultProxy::start(endpoint).await.unwrap();
    let conn = EtcdConn::connect(
        &proxy.addr().to_string(),
        root,
        proxied_options(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    conn.get("/SrvVSchema").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    (proxy, conn, direct)
}

/// Passes a success, or the one error that admits not knowing; fails on a wrong answer.
fn right_or_unknown<T>(result: topo_core::Result<T>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(e.is(ErrorKind::OutcomeUnknown), "a wrong answer: {e}");
            None
        }
    }
}

/// Item 2: a create whose reply is lost is not reported as `NodeExists` (its own retry
/// finding the key it created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_lost_reply_is_not_node_exists() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("lost_create");
    let (proxy, conn, direct) = lost_reply_setup(&endpoint, &root).await;
    proxy.reset_after_next_chunk();
    let created = conn.create("/keyspaces/ks/Keyspace", b"mine").await;
    let (contents, version) = direct.get("/keyspaces/ks/Keyspace").await.unwrap();
    assert_eq!(contents, b"mine", "the request reached etcd");
    if let Some(v) = right_or_unknown(created) {
        assert_eq!(v, version);
    }
}

/// Item 2: a compare-and-set whose reply is lost is not reported as `BadVersion`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_with_lost_reply_is_not_bad_version() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("lost_cas");
    let (proxy, conn, direct) = lost_reply_setup(&endpoint, &root).await;
    let (_, v0) = direct.get("/SrvVSchema").await.unwrap();
    proxy.reset_after_next_chunk();
    let updated = conn.update("/SrvVSchema", b"mine", Some(&v0)).await;
    let (contents, version) = direct.get("/SrvVSchema").await.unwrap();
    assert_eq!(contents, b"mine", "the request reached etcd");
    if let Some(v) = right_or_unknown(updated) {
        assert_eq!(v, version);
    }
}

/// Item 2: a delete whose reply is lost is not reported as `NoNode` (its own retry finding
/// the key gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_lost_reply_is_not_no_node() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("lost_delete");
    let (proxy, conn, direct) = lost_reply_setup(&endpoint, &root).await;
    proxy.reset_after_next_chunk();
    let deleted = conn.delete("/SrvVSchema", None).await;
    let gone = direct.get("/SrvVSchema").await.unwrap_err();
    assert!(gone.is_no_node(), "the request reached etcd: {gone}");
    right_or_unknown(deleted);
}

/// Item 2: an unconditional update whose reply is lost is not sent again blindly (it could
/// overwrite a compare-and-set made after it applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_lost_reply_is_not_resent() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("lost_update");
    let mut client = raw(&endpoint).await;
    let key = format!("{root}/SrvVSchema");
    let (proxy, conn, direct) = lost_reply_setup(&endpoint, &root).await;
    let (_, v0) = direct.get("/SrvVSchema").await.unwrap();
    let start = etcd_client::WatchOptions::new().with_start_revision(v0.raw() + 1);
    let mut events = client.watch(key.as_str(), Some(start)).await.unwrap();
    proxy.reset_after_next_chunk();
    let updated = conn.update("/SrvVSchema", b"mine", None).await;
    // A marker write: every put of ours comes before it.
    let last = direct.update("/SrvVSchema", b"end", None).await.unwrap();
    let mut puts = 0;
    'outer: while let Some(msg) = events.message().await.unwrap() {
        for ev in msg.events() {
            let kv = ev.kv().unwrap();
            if kv.mod_revision() == last.raw() {
                break 'outer;
            }
            assert_eq!(kv.value(), b"mine");
            puts += 1;
        }
    }
    assert_eq!(puts, 1, "the update was applied {puts} times");
    right_or_unknown(updated);
}
