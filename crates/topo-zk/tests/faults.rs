//! Fault tests on real ZooKeeper: servers killed under a held lock, session expiry, ACLs.

use std::time::Duration;

use topo_core::{Conn, ConnExt, ErrorKind};
use topo_testkit::zk::ZkCluster;
use topo_zk::{ZkConn, ZkOptions};

use crate::options;

/// (a) Killing the server a session is connected to keeps the session and the lock: the
/// client moves to another server. Each server is killed in turn, so the session's own is
/// one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_keeps_session_and_lock() {
    if !topo_testkit::zk::require() {
        return;
    }
    let mut zk = ZkCluster::ensemble().expect("start ensemble");
    // A session that outlives a leader election on a busy machine; reads retried while
    // the client moves, for up to the default remote-operation timeout.
    let opts = ZkOptions {
        session_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let conn = ZkConn::connect(&zk.addrs(), "/fault-a", opts)
        .await
        .unwrap();
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let guard = conn.lock("/keyspaces/ks", "holder").await.unwrap();
    for i in 0..3 {
        zk.node_mut(i).kill();
        // A read right after the kill rides over the move to another server (and, when
        // the leader died, the election) without an error.
        conn.get("/keyspaces/ks/Keyspace")
            .await
            .unwrap_or_else(|e| panic!("read right after killing server {i}: {e}"));
        // Calls may time out while the client moves and the ensemble elects a leader; the
        // lock must never be reported lost.
        let what = format!("after killing server {i}");
        topo_core::conformance::await_lock_held(guard.as_ref(), Duration::from_secs(30), &what)
            .await;
        conn.update_fenced(
            &guard.fence(),
            "/keyspaces/ks/Keyspace",
            format!("{i}").as_bytes(),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("fenced write after killing server {i}: {e}"));
        zk.node_mut(i).restart().unwrap();
        zk.wait_ready(Duration::from_secs(30)).unwrap();
    }
    guard.unlock().await.unwrap();
}

/// (b) A session that expires loses its lock: `check()` says so, and another contender
/// takes the lock with a larger fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_loses_the_lock() {
    if !topo_testkit::zk::require() {
        return;
    }
    let zk = ZkCluster::standalone_with_tick(500).expect("start server");
    let short = ZkOptions {
        session_timeout: Duration::from_secs(2),
        remote_operation_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let holder = ZkConn::connect(&zk.addrs(), "/fault-b", short)
        .await
        .unwrap();
    holder.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let guard = holder.lock("/keyspaces/ks", "holder").await.unwrap();
    let token = guard.fencing_token();
    let (_, mut watch) = holder.watch("/keyspaces/ks/Keyspace").await.unwrap();
    let (_, mut tree) = holder.watch_recursive("/keyspaces").await.unwrap();
    let election = holder
        .new_leader_participation("primary", "holder")
        .await
        .unwrap();
    let leading = election.wait_for_leadership().await.unwrap();
    zk.nodes()[0].pause().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    zk.nodes()[0].resume().unwrap();
    // The server expires the silent session once it runs again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match guard.check().await {
            Err(e) if e.is(ErrorKind::LockLost) => break,
            _ if tokio::time::Instant::now() > deadline => {
                panic!("the expired session's lock was not reported lost")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // Watches end with an error and leadership ends: nothing carries over silently into
    // the next session.
    let ended = |item: Option<topo_core::Result<_>>| match item {
        Some(Err(e)) => assert!(e.is(ErrorKind::Interrupted), "{e}"),
        other => panic!(
            "expected the session's end, got {:?}",
            other.map(|r| r.map(|_| ()))
        ),
    };
    ended(watch_end(&mut watch).await);
    ended(watch_end(&mut tree).await);
    tokio::time::timeout(Duration::from_secs(10), leading.cancelled())
        .await
        .expect("leadership ends with the session");
    let other = ZkConn::connect(&zk.addrs(), "/fault-b", options())
        .await
        .unwrap();
    let next = other
        .lock_timeout("/keyspaces/ks", "next", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        next.fencing_token() > token,
        "{} after {token}",
        next.fencing_token()
    );
    let refused = other
        .update_fenced(&guard.fence(), "/keyspaces/ks/Keyspace", b"stale", None)
        .await
        .unwrap_err();
    assert!(refused.is(ErrorKind::LockLost), "{refused}");
    next.unlock().await.unwrap();
    // The old connection makes a new session for its next call.
    holder
        .get("/keyspaces/ks/Keyspace")
        .await
        .expect("a new session after expiry");
}

/// The stream's first item that is not a value (an error, or its end), within 10 s.
async fn watch_end<T, S>(stream: &mut S) -> Option<topo_core::Result<()>>
where
    S: futures::Stream<Item = topo_core::Result<T>> + Unpin,
{
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(Err(e)),
                None => return None,
            }
        }
    })
    .await
    .expect("the watch ends within 10 s after the session expired")
}

/// (c) A node created with the restrictive ACL cannot be read without the credentials; a
/// bad auth file fails at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restrictive_acl_and_auth_file() {
    let Some(addr) = crate::shared(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    std::fs::write(&auth, "digest:vitess:secret\n").unwrap();
    let root = topo_core::conformance::fresh_root("acl");
    let private = ZkOptions {
        auth_file: Some(auth.clone()),
        restrictive_acl: true,
        ..options()
    };
    let owner = ZkConn::connect(&addr, &root, private.clone())
        .await
        .unwrap();
    owner.create("/secret/Keyspace", b"mine").await.unwrap();
    assert_eq!(owner.get("/secret/Keyspace").await.unwrap().0, b"mine");
    let stranger = ZkConn::connect(&addr, &root, options()).await.unwrap();
    let err = stranger.get("/secret/Keyspace").await.unwrap_err();
    assert!(err.to_string().contains("not authorized"), "{err}");
    let friend = ZkConn::connect(
        &addr,
        &root,
        ZkOptions {
            restrictive_acl: false,
            ..private
        },
    )
    .await
    .unwrap();
    assert_eq!(friend.get("/secret/Keyspace").await.unwrap().0, b"mine");

    let bad = dir.path().join("bad");
    std::fs::write(&bad, "no-scheme-here").unwrap();
    let err = ZkConn::connect(
        &addr,
        &root,
        ZkOptions {
            auth_file: Some(bad),
            ..options()
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("expected <scheme>:<auth>"),
        "{err}"
    );
    let err = ZkConn::connect(
        &addr,
        &root,
        ZkOptions {
            auth_file: Some(dir.path().join("missing")),
            ..options()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}
