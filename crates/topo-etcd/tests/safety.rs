//! Safety tests (issue 11) on real etcd, with faults injected by the test kit's proxy
//! between a client and its member: abandoned lock attempts, writes whose reply is lost,
//! lease loss, failed unlocks and watches whose error is permanent.

use std::time::{Duration, Instant};
use topo_core::ConnExt;

use topo_core::{Conn, ErrorKind, LockDescriptor};
use topo_etcd::{EtcdConn, EtcdOptions};
use topo_testkit::etcd::EtcdCluster;
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

/// The lock keys under `<root><dir>/locks/`.
async fn lock_keys(endpoint: &str, root: &str, dir: &str) -> Vec<String> {
    let prefix = format!("{root}{dir}/locks/");
    raw(endpoint)
        .await
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
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

/// Item 1: a lock attempt given up while it waits removes its entry, so the next locker
/// does not queue behind an orphan for the 30 s lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_lock_attempt_leaves_no_orphan() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("abandoned_lock");
    let conn = connect(&endpoint, &root).await;
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let holder = conn.lock("/keyspaces/ks", "holder").await.unwrap();
    let quitter = connect(&endpoint, &root).await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(500),
        quitter.lock("/keyspaces/ks", "quitter"),
    )
    .await;
    assert!(gave_up.is_err(), "the lock is held, the attempt must wait");
    holder.unlock().await.unwrap();
    let third = tokio::time::timeout(Duration::from_secs(10), conn.lock("/keyspaces/ks", "third"))
        .await
        .expect("the third locker does not wait for the abandoned attempt's lease")
        .unwrap();
    third.unlock().await.unwrap();
}

/// Item 1: a connection closed right after giving up a lock attempt leaves no entry, even
/// when its process (here: its runtime) ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_cleanup_of_abandoned_attempt() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("abandoned_close");
    let conn = connect(&endpoint, &root).await;
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let holder = conn.lock("/keyspaces/ks", "holder").await.unwrap();
    let (e, r) = (endpoint.clone(), root.clone());
    // A runtime of its own, shut down right after close(): background tasks die with it,
    // as they would when the process exits.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let quitter = EtcdConn::connect(&e, &r, options()).await.unwrap();
            let gave_up = tokio::time::timeout(
                Duration::from_millis(500),
                quitter.lock("/keyspaces/ks", "quitter"),
            )
            .await;
            assert!(gave_up.is_err(), "the lock is held, the attempt must wait");
            quitter.close().await;
        });
        rt.shutdown_background();
    })
    .join()
    .unwrap();
    let keys = lock_keys(&endpoint, &root, "/keyspaces/ks").await;
    assert_eq!(keys.len(), 1, "only the holder's entry remains: {keys:?}");
    holder.unlock().await.unwrap();
}

/// Polls `check()` until it reports `LockLost`; returns when that happened.
async fn lost_at(guard: &dyn LockDescriptor) -> Instant {
    loop {
        match guard.check().await {
            Err(e) if e.is(ErrorKind::LockLost) => return Instant::now(),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Runs `call` with `delay` added to each chunk of its first round trip (a lease grant)
/// and none after.
async fn slow_first_round_trip<F: std::future::Future>(
    proxy: &FaultProxy,
    delay: Duration,
    call: F,
) -> F::Output {
    proxy.set_delay(delay);
    let undelay = async {
        tokio::time::sleep(delay * 3 / 2).await;
        proxy.set_delay(Duration::ZERO);
    };
    tokio::join!(call, undelay).0
}

/// Item 3: the holder's loss signal fires before anyone else can take the lock. The
/// holder talks through `proxy`; `cut` severs it after the lock is taken.
async fn loss_precedes_takeover(
    name: &str,
    delay: Duration,
    ttl: Duration,
    cut: impl FnOnce(&FaultProxy),
) {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root(name);
    let other = connect(&endpoint, &root).await;
    other.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let proxy = FaultProxy::start(&endpoint).await.unwrap();
    let holder = EtcdConn::connect(
        &proxy.addr().to_string(),
        &root,
        proxied_options(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let guard = slow_first_round_trip(
        &proxy,
        delay,
        holder.lock_with_ttl("/keyspaces/ks", "holder", ttl),
    )
    .await
    .unwrap();
    cut(&proxy);
    let cut_at = Instant::now();
    eprintln!("{name}: locked in {:?}", cut_at - start);
    let taken = async {
        let g = other
            .lock("/keyspaces/ks", "other")
            .await
            .expect("the other participant takes the lock");
        (Instant::now(), g)
    };
    let limit = ttl * 3 + Duration::from_secs(10);
    let (lost, (taken, g)) = tokio::time::timeout(limit, async {
        tokio::join!(lost_at(guard.as_ref()), taken)
    })
    .await
    .expect("the lease runs out and the lock changes hands");
    eprintln!(
        "{name}: lost after {:?}, taken by the other after {:?}",
        lost - cut_at,
        taken - cut_at
    );
    assert!(
        lost <= taken,
        "the holder learned of its loss {:?} after the other took the lock",
        lost - taken
    );
    g.unlock().await.unwrap();
}

/// Item 3: a slow lease grant: the server's lease started two seconds before the grant's
/// reply came back, so the loss clock must start when the grant was sent (the lock is
/// taken and cut before the first renewal is due by the old reckoning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_signalled_before_takeover_after_slow_grant() {
    loss_precedes_takeover(
        "loss_slow_grant",
        Duration::from_secs(2),
        Duration::from_secs(6),
        FaultProxy::blackhole,
    )
    .await;
}

/// Item 3: renewals that fail at once (refused connections): the loop must not sleep a
/// third of the TTL past the loss deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_signalled_before_takeover_when_renewals_fail_fast() {
    loss_precedes_takeover(
        "loss_fail_fast",
        Duration::ZERO,
        Duration::from_secs(2),
        |p| {
            p.refuse(true);
            p.reset_all();
        },
    )
    .await;
}

/// Item 3: a leader whose grant was slow and whose connection is then cut learns that its
/// leadership ended before another participant becomes leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_loss_signalled_before_new_leader() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("election_loss");
    let other = connect(&endpoint, &root).await;
    let proxy = FaultProxy::start(&endpoint).await.unwrap();
    let holder = EtcdConn::connect(
        &proxy.addr().to_string(),
        &root,
        EtcdOptions {
            lease_ttl: Duration::from_secs(6),
            ..proxied_options(Duration::from_secs(5))
        },
    )
    .await
    .unwrap();
    let me = holder
        .new_leader_participation("primary", "holder")
        .await
        .unwrap();
    let leading = slow_first_round_trip(&proxy, Duration::from_secs(2), me.wait_for_leadership())
        .await
        .unwrap();
    proxy.blackhole();
    let cut_at = Instant::now();
    let them = other
        .new_leader_participation("primary", "other")
        .await
        .unwrap();
    let ended = async {
        leading.cancelled().await;
        Instant::now()
    };
    let taken = async {
        let _token = them.wait_for_leadership().await.unwrap();
        Instant::now()
    };
    let (ended, taken) = tokio::time::timeout(Duration::from_secs(40), async {
        tokio::join!(ended, taken)
    })
    .await
    .expect("leadership changes hands");
    eprintln!(
        "election: leadership ended after {:?}, the other leads after {:?}",
        ended - cut_at,
        taken - cut_at
    );
    assert!(
        ended <= taken,
        "the old leader learned of its loss {:?} after the new one led",
        ended - taken
    );
    them.stop().await;
}

/// Item 3: a lock key deleted behind the holder's back is a lost lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_lock_key_is_lost() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("deleted_lock_key");
    let conn = connect(&endpoint, &root).await;
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let guard = conn.lock("/keyspaces/ks", "holder").await.unwrap();
    guard.check().await.unwrap();
    let keys = lock_keys(&endpoint, &root, "/keyspaces/ks").await;
    raw(&endpoint)
        .await
        .delete(keys[0].as_str(), None)
        .await
        .unwrap();
    let err = guard.check().await.unwrap_err();
    assert!(err.is(ErrorKind::LockLost), "{err}");
}

/// Item 3: a waiter whose own key is deleted while it queues does not take the lock when
/// the holder leaves: it has no key, so anyone else could take the lock meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_whose_key_was_deleted_does_not_get_the_lock() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("deleted_waiter_key");
    let conn = connect(&endpoint, &root).await;
    conn.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let holder = conn.lock("/keyspaces/ks", "holder").await.unwrap();
    let waiter_conn = connect(&endpoint, &root).await;
    let waiter = tokio::spawn(async move { waiter_conn.lock("/keyspaces/ks", "waiter").await });
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiter_key = loop {
        let keys = lock_keys(&endpoint, &root, "/keyspaces/ks").await;
        if keys.len() == 2 {
            // Lease ids are not ordered; the waiter's key is the one that is not the holder's.
            let holder_key = holder.fence();
            break keys.into_iter().find(|k| k != holder_key.key()).unwrap();
        }
        assert!(Instant::now() < deadline, "the waiter queues");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    raw(&endpoint)
        .await
        .delete(waiter_key.as_str(), None)
        .await
        .unwrap();
    holder.unlock().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter returns")
        .unwrap();
    match got {
        Ok(g) => panic!(
            "the waiter took the lock without a key (check says {:?})",
            g.check().await
        ),
        Err(e) => assert!(e.is(ErrorKind::LockLost), "{e}"),
    }
}

/// Item 4: an unlock whose revoke fails keeps revoking in the background, so the lock is
/// free soon after the network heals, not after the 30 s lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_unlock_keeps_revoking() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("failed_unlock");
    let other = connect(&endpoint, &root).await;
    other.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let proxy = FaultProxy::start(&endpoint).await.unwrap();
    let holder = EtcdConn::connect(
        &proxy.addr().to_string(),
        &root,
        proxied_options(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let guard = holder.lock("/keyspaces/ks", "holder").await.unwrap();
    proxy.refuse(true);
    proxy.reset_all();
    let unlocked = guard.unlock().await;
    assert!(
        unlocked.is_err(),
        "nothing reached etcd, yet unlock said Ok"
    );
    proxy.heal();
    let healed = Instant::now();
    let g = tokio::time::timeout(Duration::from_secs(15), other.lock("/keyspaces/ks", "next"))
        .await
        .expect("the lock is free soon after the network heals, not after its 30 s lease")
        .unwrap();
    eprintln!("lock free {:?} after healing", healed.elapsed());
    g.unlock().await.unwrap();
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

/// Item 2: a create whose reply is lost is never sent again: had the file been deleted by
/// another client after ours applied, a second copy would bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_lost_reply_never_recreates_a_deleted_file() {
    let Some(endpoint) = member() else { return };
    let root = topo_core::conformance::fresh_root("lost_create_deleted");
    let (proxy, conn, direct) = lost_reply_setup(&endpoint, &root).await;
    let file = "/keyspaces/ks/Keyspace";
    // The request gets through, its reply is lost, and the client cannot reconnect until
    // the file has been deleted.
    proxy.refuse(true);
    proxy.reset_after_next_chunk();
    let create = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.create(file, b"mine").await })
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while direct.get(file).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the create reached etcd");
    direct.delete(file, None).await.unwrap();
    proxy.heal();
    let created = create.await.unwrap();
    let now = direct.get(file).await;
    assert!(
        now.as_ref().is_err_and(|e| e.is_no_node()),
        "the deletion survives (the create answered {created:?}): {now:?}"
    );
    right_or_unknown(created);
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

/// Item 5: a watch whose re-opening fails for good (here: etcd now demands
/// authentication) ends with an error instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_on_permanent_error() {
    if !topo_testkit::require_binary("etcdctl", "etcd auth test") {
        return;
    }
    // Its own server: auth is switched on.
    let server = EtcdCluster::single().unwrap();
    let endpoint = server.endpoints();
    let proxy = FaultProxy::start(&endpoint).await.unwrap();
    let conn = EtcdConn::connect(
        &proxy.addr().to_string(),
        "/auth",
        proxied_options(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    conn.create("/SrvVSchema", b"v0").await.unwrap();
    let (_, mut changes) = conn.watch("/SrvVSchema").await.unwrap();
    for args in [
        &["user", "add", "root:secret"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    proxy.reset_all();
    let end = tokio::time::timeout(
        Duration::from_secs(30),
        futures::StreamExt::next(&mut changes),
    )
    .await
    .expect("the watch ends with an error in time");
    assert!(matches!(end, Some(Err(_))), "{end:?}");
}
