//! Safety of locks, writes, elections and watches on real ZooKeeper, some through the fault
//! proxy: abandoned lock nodes, lost write answers, suspended leaders, racing tries,
//! watches across reconnects, re-created lock nodes.

use std::time::Duration;

use topo_core::{Conn, ErrorKind, Version};
use topo_testkit::proxy::FaultProxy;
use topo_zk::{ZkConn, ZkOptions};

use crate::{options, shared};

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
