//! The checks of the conformance suite, one function each.
//!
//! Every check panics (fails the test) with a message saying what was expected.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{sleep, timeout, Instant};

use super::ConnFactory;
use crate::conn::{Conn, LeaderParticipation};
use crate::error::{ErrorKind, TopoError};
use crate::ext::ConnExt;
use crate::types::{DirEntryType, WatchData};
use crate::watch::WatchStream;

/// How long a check waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);

macro_rules! define_checks {
    ($($variant:ident => $fn_name:ident),* $(,)?) => {
        /// One check of the suite.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Check {
            $(
                #[doc = concat!("The `", stringify!($fn_name), "` check.")]
                $variant,
            )*
        }

        impl Check {
            /// Every check, in suite order.
            pub const ALL: &'static [Check] = &[$(Check::$variant),*];

            /// The check's name (the test function's name).
            pub fn name(self) -> &'static str {
                match self {
                    $(Check::$variant => stringify!($fn_name),)*
                }
            }

            /// Runs the check under `root`.
            pub async fn run<F: ConnFactory>(self, factory: &F, root: &str) {
                match self {
                    $(Check::$variant => $fn_name(factory, root).await,)*
                }
            }
        }
    };
}

define_checks! {
    Directory => check_directory,
    File => check_file,
    List => check_list,
    GetVersion => check_get_version,
    LockTimeout => check_lock_timeout,
    LockUnblocks => check_lock_unblocks,
    LockName => check_lock_name,
    LockNeedsDirectory => check_lock_needs_directory,
    TryLockTimeout => check_try_lock_timeout,
    TryLockUnblocks => check_try_lock_unblocks,
    Election => check_election,
    WaitForNewLeader => check_wait_for_new_leader,
    LeaderFence => check_leader_fence,
    Watch => check_watch,
    WatchInterrupt => check_watch_interrupt,
    WatchRecursive => check_watch_recursive,
    FencingTokenIncreases => check_fencing_token_increases,
    FencedWrite => check_fenced_write,
    LockSurvivesTtl => check_lock_survives_ttl,
    DroppedLockAcquisition => check_dropped_lock_acquisition,
    WatchVersionCas => check_watch_version_cas,
    ConcurrentCreate => check_concurrent_create,
    CasIncrements => check_cas_increments,
    PathClimbingRefused => check_path_climbing_refused,
    ValueLimit => check_value_limit,
    Close => check_close,
    TryLockConcurrent => check_try_lock_concurrent,
    AbandonedAcquisitionThenClose => check_abandoned_acquisition_then_close,
}

async fn open<F: ConnFactory>(factory: &F, root: &str) -> Arc<dyn Conn> {
    factory
        .open(root)
        .await
        .unwrap_or_else(|e| panic!("opening a connection on {root}: {e}"))
}

fn assert_kind<T: std::fmt::Debug>(result: Result<T, TopoError>, kind: ErrorKind, what: &str) {
    match result {
        Err(e) if e.is(kind) => {}
        other => panic!("{what}: expected {kind:?}, got {other:?}"),
    }
}

/// Checks `dir`'s listing, names-only and full. An empty expectation accepts `NoNode`.
async fn expect_listing(conn: &dyn Conn, dir: &str, expected: &[(&str, DirEntryType)]) {
    for full in [false, true] {
        let got = match conn.list_dir(dir, full).await {
            Ok(entries) => entries,
            Err(e) if e.is_no_node() && expected.is_empty() => Vec::new(),
            Err(e) => panic!("list_dir({dir}, {full}): {e}"),
        };
        let got: Vec<(String, DirEntryType, bool)> = got
            .into_iter()
            .map(|e| (e.name, e.entry_type, e.ephemeral))
            .collect();
        let want: Vec<(String, DirEntryType, bool)> = expected
            .iter()
            .map(|(n, t)| {
                let t = if full { *t } else { DirEntryType::Directory };
                (n.to_string(), t, false)
            })
            .collect();
        assert_eq!(got, want, "list_dir({dir}, full={full})");
    }
}

/// Vitess's `checkDirectory`, on a cell-like root (empty) and a global-like root (which
/// holds `cells`).
async fn check_directory<F: ConnFactory>(factory: &F, root: &str) {
    use DirEntryType::{Directory as D, File as F_};
    for global in [false, true] {
        let conn = open(
            factory,
            &format!("{root}/{}", if global { "global" } else { "cell" }),
        )
        .await;
        let conn = conn.as_ref();
        let base: Vec<(&str, DirEntryType)> = if global {
            conn.create("/cells/zone1/CellInfo", b"")
                .await
                .expect("create CellInfo");
            vec![("cells", D)]
        } else {
            vec![]
        };
        expect_listing(conn, "/", &base).await;

        let v = conn.create("/MyFile", b"a").await.expect("create /MyFile");
        let mut with_file = vec![("MyFile", F_)];
        with_file.extend(base.iter().cloned());
        expect_listing(conn, "/", &with_file).await;
        conn.delete("/MyFile", Some(&v))
            .await
            .expect("delete /MyFile");
        expect_listing(conn, "/", &base).await;

        let v1 = conn
            .create("/types/name/MyFile", b"a")
            .await
            .expect("create");
        let mut with_types = base.clone();
        with_types.push(("types", D));
        expect_listing(conn, "/", &with_types).await;
        expect_listing(conn, "/types/", &[("name", D)]).await;
        expect_listing(conn, "/types/name/", &[("MyFile", F_)]).await;

        let v2 = conn
            .create("/types/othername/MyFile", b"a")
            .await
            .expect("create");
        expect_listing(conn, "/types/", &[("name", D), ("othername", D)]).await;

        conn.delete("/types/name/MyFile", Some(&v1))
            .await
            .expect("delete");
        expect_listing(conn, "/types/", &[("othername", D)]).await;
        expect_listing(conn, "/types/name/", &[]).await;

        conn.delete("/types/othername/MyFile", Some(&v2))
            .await
            .expect("delete");
        expect_listing(conn, "/types/", &[]).await;
        expect_listing(conn, "/types/name/", &[]).await;
        expect_listing(conn, "/types/othername/", &[]).await;
        expect_listing(conn, "/", &base).await;
    }
}

/// Vitess's `checkFile`: create, compare-and-set, unconditional writes, deletes.
async fn check_file<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let conn = conn.as_ref();
    assert_kind(
        conn.get("/myfile").await,
        ErrorKind::NoNode,
        "get of a missing file",
    );

    let v1 = conn.create("/myfile", b"a").await.expect("create");
    expect_listing(conn, "/", &[("myfile", DirEntryType::File)]).await;
    assert_eq!(conn.get("/myfile").await.expect("get"), (b"a".to_vec(), v1));
    assert_kind(
        conn.create("/myfile", b"x").await,
        ErrorKind::NodeExists,
        "second create",
    );

    let v2 = conn
        .update("/myfile", b"b", Some(&v1))
        .await
        .expect("update with version");
    assert_ne!(v1, v2, "an update must change the version");
    assert_eq!(conn.get("/myfile").await.expect("get"), (b"b".to_vec(), v2));
    assert_kind(
        conn.update("/myfile", b"x", Some(&v1)).await,
        ErrorKind::BadVersion,
        "update with a stale version",
    );

    let v3 = conn
        .update("/myfile", b"c", None)
        .await
        .expect("unconditional update");
    assert_eq!(conn.get("/myfile").await.expect("get"), (b"c".to_vec(), v3));

    let v4 = conn
        .update("/myfile", b"", Some(&v3))
        .await
        .expect("update to empty");
    assert_eq!(conn.get("/myfile").await.expect("get"), (Vec::new(), v4));

    assert_kind(
        conn.delete("/myfile", Some(&v1)).await,
        ErrorKind::BadVersion,
        "delete with a stale version",
    );
    conn.delete("/myfile", Some(&v4))
        .await
        .expect("delete with version");
    expect_listing(conn, "/", &[]).await;
    assert_kind(
        conn.delete("/myfile", None).await,
        ErrorKind::NoNode,
        "second delete",
    );

    // A versioned update of a missing file fails (NoNode, or BadVersion on etcd).
    match conn.update("/myfile", b"x", Some(&v4)).await {
        Err(e) if e.is_no_node() || e.is(ErrorKind::BadVersion) => {}
        other => panic!("versioned update of a missing file: {other:?}"),
    }

    let v5 = conn.update("/myfile", b"d", None).await.expect("upsert");
    assert_eq!(conn.get("/myfile").await.expect("get"), (b"d".to_vec(), v5));
    conn.delete("/myfile", None)
        .await
        .expect("unconditional delete");
    expect_listing(conn, "/", &[]).await;
}

/// Vitess's `checkList`: plain string prefixes, canonical relative keys.
async fn check_list<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    assert_kind(
        conn.list("/").await,
        ErrorKind::NoNode,
        "list of an empty root",
    );
    conn.create("/some/arbitrary/file", b"x")
        .await
        .expect("create");
    conn.create("/toplevel/nested/myfile", b"a")
        .await
        .expect("create");
    for prefix in [
        "/top",
        "/toplevel",
        "/toplevel/",
        "/toplevel/nes",
        "/toplevel/nested/myfile",
    ] {
        let got = conn
            .list(prefix)
            .await
            .unwrap_or_else(|e| panic!("list({prefix}): {e}"));
        assert_eq!(got.len(), 1, "list({prefix}) returned {got:?}");
        assert_eq!(got[0].key, "/toplevel/nested/myfile", "list({prefix}) key");
        assert_eq!(got[0].value, b"a", "list({prefix}) value");
        let (_, v) = conn.get("/toplevel/nested/myfile").await.expect("get");
        assert_eq!(got[0].version, v, "list({prefix}) version");
    }
    let all = conn.list("/").await.expect("list /");
    let keys: Vec<&str> = all.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/some/arbitrary/file", "/toplevel/nested/myfile"]);
    assert_kind(
        conn.list("/nothing").await,
        ErrorKind::NoNode,
        "list of no match",
    );
}

/// `get_version` returns historical contents where the backend keeps history.
async fn check_get_version<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let v1 = conn.create("/f", b"a").await.expect("create");
    let v2 = conn.update("/f", b"b", Some(&v1)).await.expect("update");
    match conn.get_version("/f", &v1).await {
        Err(e) if e.is(ErrorKind::NoImplementation) => {
            eprintln!("get_version: this backend keeps no history (NoImplementation)");
        }
        Ok(old) => {
            assert_eq!(old, b"a", "contents at the first version");
            assert_eq!(
                conn.get_version("/f", &v2).await.expect("get_version"),
                b"b"
            );
        }
        Err(e) => panic!("get_version: {e}"),
    }
}

/// The listing rule of Vitess's lock checks: besides `Keyspace`, only ephemeral entries or
/// directories whose children are all ephemeral.
async fn assert_lock_entries_ephemeral(conn: &dyn Conn, dir: &str) {
    let entries = conn
        .list_dir(dir, true)
        .await
        .expect("list_dir of the locked directory");
    for e in entries {
        if e.name == "Keyspace" || e.ephemeral {
            continue;
        }
        assert_eq!(
            e.entry_type,
            DirEntryType::Directory,
            "unexpected entry {e:?} in {dir}"
        );
        let sub = format!("{dir}/{}", e.name);
        for child in conn
            .list_dir(&sub, true)
            .await
            .expect("list_dir of a lock directory")
        {
            assert!(
                child.ephemeral,
                "entry {child:?} under {sub} must be ephemeral"
            );
        }
    }
}

const KS_DIR: &str = "/keyspaces/test_keyspace";

async fn with_keyspace<F: ConnFactory>(factory: &F, root: &str) -> Arc<dyn Conn> {
    let conn = open(factory, root).await;
    conn.create(&format!("{KS_DIR}/Keyspace"), b"")
        .await
        .expect("create Keyspace");
    conn
}

/// Vitess's `checkLockTimeout`: a held lock makes others time out; a dropped acquisition
/// leaves the lock usable.
async fn check_lock_timeout<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let other = open(factory, root).await;
    let guard = conn.lock(KS_DIR, "holder").await.expect("lock");
    assert_eq!(guard.dir(), KS_DIR);
    assert_lock_entries_ephemeral(conn.as_ref(), KS_DIR).await;

    assert_kind(
        other
            .lock_timeout(KS_DIR, "waiter", Duration::from_millis(200))
            .await,
        ErrorKind::Timeout,
        "lock while held",
    );
    // An acquisition abandoned while waiting (Vitess's "interrupted").
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move { other.lock(KS_DIR, "abandoned").await.map(|_| ()) })
    };
    sleep(Duration::from_millis(100)).await;
    waiter.abort();
    assert!(
        waiter.await.is_err_and(|e| e.is_cancelled()),
        "waiter must have been waiting"
    );

    guard.check().await.expect("check of a held lock");
    guard.unlock().await.expect("unlock");
    let again = other
        .lock_timeout(KS_DIR, "after", PATIENCE)
        .await
        .expect("lock after unlock");
    again.unlock().await.expect("unlock");
}

/// Vitess's `checkLockUnblocks`: a blocked locker gets the lock when the holder releases.
async fn check_lock_unblocks<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let other = open(factory, root).await;
    let guard = conn.lock(KS_DIR, "holder").await.expect("lock");
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let waiter = tokio::spawn(async move {
        let g = other.lock(KS_DIR, "waiter").await.expect("waiter's lock");
        let _ = tx.send(());
        g.unlock().await.expect("waiter's unlock");
    });
    sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "the waiter got the lock while it was held"
    );
    guard.unlock().await.expect("unlock");
    timeout(PATIENCE, waiter)
        .await
        .expect("the waiter did not get the lock after unlock")
        .expect("waiter task");
}

/// Named locks need no existing directory and exclude each other.
async fn check_lock_name<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let other = open(factory, root).await;
    let dir = "/internal/named_locks/my_lock";
    let guard = conn
        .lock_name(dir, "first")
        .await
        .expect("lock_name on a missing path");
    let blocked = timeout(Duration::from_millis(200), other.lock_name(dir, "second")).await;
    assert!(blocked.is_err(), "a second named lock must wait");
    guard.check().await.expect("check");
    guard.unlock().await.expect("unlock");
    let second = timeout(PATIENCE, other.lock_name(dir, "second"))
        .await
        .expect("second named lock after unlock")
        .expect("lock_name");
    second.unlock().await.expect("unlock");
}

/// `lock` and `try_lock` of a directory with nothing in it return `NoNode`.
async fn check_lock_needs_directory<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    assert_kind(
        conn.lock_timeout("/keyspaces/missing", "x", PATIENCE).await,
        ErrorKind::NoNode,
        "lock of a missing directory",
    );
    assert_kind(
        conn.try_lock("/keyspaces/missing", "x").await,
        ErrorKind::NoNode,
        "try_lock of a missing directory",
    );
}

/// Vitess's `checkTryLockTimeout`: `try_lock` of a held lock fails at once with
/// `NodeExists`.
async fn check_try_lock_timeout<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let other = open(factory, root).await;
    let guard = conn.try_lock(KS_DIR, "holder").await.expect("try_lock");
    assert_lock_entries_ephemeral(conn.as_ref(), KS_DIR).await;
    for _ in 0..3 {
        let r = timeout(Duration::from_secs(5), other.try_lock(KS_DIR, "second"))
            .await
            .expect("try_lock must not wait while the lock is held");
        match r {
            Err(e) if e.is(ErrorKind::NodeExists) => {
                assert!(
                    e.to_string().contains("lock already exists at path"),
                    "message: {e}"
                );
            }
            other => panic!("try_lock while held: {other:?}"),
        }
    }
    guard.check().await.expect("check");
    guard.unlock().await.expect("unlock");
    let again = other
        .try_lock(KS_DIR, "second")
        .await
        .expect("try_lock after unlock");
    again.unlock().await.expect("unlock");
}

/// Vitess's `checkTryLockUnblocks`: polling `try_lock` succeeds once the holder releases.
async fn check_try_lock_unblocks<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let other = open(factory, root).await;
    let guard = conn.lock(KS_DIR, "holder").await.expect("lock");
    let poller = tokio::spawn(async move {
        let mut refusals = 0;
        loop {
            match other.try_lock(KS_DIR, "poller").await {
                Ok(g) => {
                    g.unlock().await.expect("unlock");
                    return refusals;
                }
                Err(e) if e.is(ErrorKind::NodeExists) => refusals += 1,
                Err(e) => panic!("try_lock: {e}"),
            }
            sleep(Duration::from_millis(100)).await;
        }
    });
    sleep(Duration::from_millis(500)).await;
    guard.unlock().await.expect("unlock");
    let refusals = timeout(Duration::from_secs(20), poller)
        .await
        .expect("try_lock never succeeded after unlock")
        .expect("poller");
    assert!(refusals > 0, "try_lock succeeded while the lock was held");
}

async fn eventually_leader(p: &dyn LeaderParticipation, want: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = p.current_leader_id().await.expect("current_leader_id");
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leader is {got:?}, expected {want:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Vitess's `checkElection`.
async fn check_election<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let conn2 = open(factory, root).await;
    let mp1 = conn
        .new_leader_participation("testmp", "id1")
        .await
        .expect("participation");
    eventually_leader(mp1.as_ref(), "").await;
    let lost1 = mp1.wait_for_leadership().await.expect("first leadership");

    for e in conn.list_dir("/", true).await.expect("list_dir /") {
        assert!(
            e.ephemeral,
            "top-level entry {e:?} must be ephemeral during an election"
        );
    }
    eventually_leader(mp1.as_ref(), "id1").await;

    let mp2: Arc<dyn LeaderParticipation> = Arc::from(
        conn2
            .new_leader_participation("testmp", "id2")
            .await
            .expect("participation"),
    );
    let waiter = {
        let mp2 = mp2.clone();
        tokio::spawn(async move { mp2.wait_for_leadership().await })
    };
    sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "a second participant led while the first did"
    );
    eventually_leader(mp2.as_ref(), "id1").await;

    mp1.stop().await;
    timeout(Duration::from_secs(5), lost1.cancelled())
        .await
        .expect("the first leader's token must fire after stop");
    let lost2 = timeout(PATIENCE, waiter)
        .await
        .expect("the second participant did not take over")
        .expect("waiter")
        .expect("second leadership");
    eventually_leader(mp2.as_ref(), "id2").await;
    mp2.stop().await;
    timeout(Duration::from_secs(5), lost2.cancelled())
        .await
        .expect("the second leader's token must fire after stop");
    assert_kind(
        mp2.wait_for_leadership().await,
        ErrorKind::Interrupted,
        "wait_for_leadership after stop",
    );
}

/// A leader's fence: present only while leading, its writes land while it leads and fail
/// with `LockLost` once another leads, and the successor's token is higher.
async fn check_leader_fence<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let file = "/elected/value";
    conn.create(file, b"0").await.expect("create");
    let mp1 = conn
        .new_leader_participation("fenced", "id1")
        .await
        .expect("participation");
    assert!(mp1.fence().await.is_none(), "a fence before leading");
    mp1.wait_for_leadership().await.expect("first leadership");
    let f1 = mp1.fence().await.expect("the leader's fence");
    conn.update_fenced(&f1, file, b"1", None)
        .await
        .expect("the leader's fenced write");

    let mp2: Arc<dyn LeaderParticipation> = Arc::from(
        conn.new_leader_participation("fenced", "id2")
            .await
            .expect("participation"),
    );
    let waiter = {
        let mp2 = mp2.clone();
        tokio::spawn(async move { mp2.wait_for_leadership().await })
    };
    sleep(Duration::from_millis(100)).await;
    let waiting = timeout(Duration::from_secs(1), mp2.fence())
        .await
        .expect("fence() must not wait for a campaign in progress");
    assert!(waiting.is_none(), "a fence while waiting to lead");
    mp1.stop().await;
    assert!(mp1.fence().await.is_none(), "a fence after stop");
    timeout(PATIENCE, waiter)
        .await
        .expect("the second participant did not take over")
        .expect("waiter")
        .expect("second leadership");
    let f2 = mp2.fence().await.expect("the second leader's fence");
    assert!(
        f2.token() > f1.token(),
        "the successor's token {} must exceed {}",
        f2.token(),
        f1.token()
    );
    assert_kind(
        conn.update_fenced(&f1, file, b"stale", None).await,
        ErrorKind::LockLost,
        "a fenced write of the previous leader",
    );
    conn.update_fenced(&f2, file, b"2", None)
        .await
        .expect("the new leader's fenced write");
    assert_eq!(conn.get(file).await.expect("get").0, b"2");
    mp2.stop().await;
}

async fn next_item<T: std::fmt::Debug>(
    stream: &mut WatchStream<T>,
    what: &str,
) -> Option<crate::Result<T>> {
    timeout(PATIENCE, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived in time"))
}

/// Vitess's `checkWaitForNewLeader`: the current leader first, then each new one.
async fn check_wait_for_new_leader<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let conn2 = open(factory, root).await;
    let mp1 = conn
        .new_leader_participation("testmp", "id1")
        .await
        .expect("participation");
    mp1.wait_for_leadership().await.expect("leadership");
    let observer = conn2
        .new_leader_participation("testmp", "observer")
        .await
        .expect("participation");
    let mut leaders = observer
        .wait_for_new_leader()
        .await
        .expect("wait_for_new_leader");
    let first = next_item(&mut leaders, "first leader").await;
    assert_eq!(
        first,
        Some(Ok("id1".to_string())),
        "the current leader comes first"
    );

    let mp3 = conn2
        .new_leader_participation("testmp", "id3")
        .await
        .expect("participation");
    let mp3: Arc<dyn LeaderParticipation> = Arc::from(mp3);
    let waiter = {
        let mp3 = mp3.clone();
        tokio::spawn(async move { mp3.wait_for_leadership().await })
    };
    sleep(Duration::from_millis(100)).await;
    mp1.stop().await;
    loop {
        match next_item(&mut leaders, "new leader").await {
            Some(Ok(id)) if id == "id1" => continue,
            Some(Ok(id)) if id == "id3" => break,
            other => panic!("expected leader id3, got {other:?}"),
        }
    }
    waiter.await.expect("waiter").expect("id3's leadership");
    mp3.stop().await;
    leaders.cancel();
}

const SRV_KS: &str = "/keyspaces/test_keyspace/SrvKeyspace";

/// Reads from `stream` until `want` arrives, accepting repeats of the values in `allowed`.
async fn await_value(
    stream: &mut WatchStream<WatchData>,
    want: &[u8],
    allowed: &[&[u8]],
) -> WatchData {
    loop {
        match next_item(stream, "watch value").await {
            Some(Ok(d)) if d.contents == want => return d,
            Some(Ok(d)) if allowed.contains(&d.contents.as_slice()) => continue,
            other => panic!("waiting for {want:?}, got {other:?}"),
        }
    }
}

/// Reads from `stream` until an error arrives, accepting repeats of `allowed`; then the
/// stream must end.
async fn await_end(stream: &mut WatchStream<WatchData>, kind: ErrorKind, allowed: &[&[u8]]) {
    loop {
        match next_item(stream, "watch end").await {
            Some(Ok(d)) if allowed.contains(&d.contents.as_slice()) => continue,
            Some(Err(e)) if e.is(kind) => break,
            other => panic!("waiting for {kind:?}, got {other:?}"),
        }
    }
    assert!(
        next_item(stream, "after the final error").await.is_none(),
        "stream must end after its error"
    );
}

/// Vitess's `checkWatch`.
async fn check_watch<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let writer = open(factory, root).await;
    assert_kind(
        conn.watch(SRV_KS).await.map(|_| ()),
        ErrorKind::NoNode,
        "watch of a missing file",
    );
    let v1 = writer.create(SRV_KS, b"v1").await.expect("create");
    let (current, mut changes) = conn.watch(SRV_KS).await.expect("watch");
    assert_eq!(
        current,
        WatchData {
            contents: b"v1".to_vec(),
            version: v1
        }
    );
    let v2 = writer.update(SRV_KS, b"v2", None).await.expect("update");
    let got = await_value(&mut changes, b"v2", &[b"v1"]).await;
    assert_eq!(got.version, v2, "the event carries the write's version");
    writer.delete(SRV_KS, None).await.expect("delete");
    await_end(&mut changes, ErrorKind::NoNode, &[b"v1", b"v2"]).await;
}

/// Vitess's `checkWatchInterrupt`.
async fn check_watch_interrupt<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    conn.create(SRV_KS, b"v1").await.expect("create");
    let (_, mut changes) = conn.watch(SRV_KS).await.expect("watch");
    changes.cancel();
    await_end(&mut changes, ErrorKind::Interrupted, &[b"v1"]).await;
    changes.cancel();
    // The file is untouched and can be watched again.
    let (current, again) = conn.watch(SRV_KS).await.expect("second watch");
    assert_eq!(current.contents, b"v1");
    drop(again);
}

/// Vitess's `checkWatchRecursive`, plus creation of a new file under the prefix.
async fn check_watch_recursive<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let writer = open(factory, root).await;
    writer.create(SRV_KS, b"a").await.expect("create");
    let (initial, mut changes) = conn.watch_recursive(KS_DIR).await.expect("watch_recursive");
    assert!(
        initial
            .iter()
            .any(|c| c.path == SRV_KS && c.data.as_ref().is_some_and(|d| d.contents == b"a")),
        "initial records {initial:?} must hold {SRV_KS}"
    );
    let other = format!("{KS_DIR}/shards/0/ShardReplication");
    writer.update(SRV_KS, b"b", None).await.expect("update");
    writer
        .create(&other, b"x")
        .await
        .expect("create under the prefix");
    writer.delete(SRV_KS, None).await.expect("delete");
    writer
        .update(&other, b"y", None)
        .await
        .expect("update after the delete");
    // Values of one file may coalesce, but a deletion must be delivered, and must not end
    // the stream: the later update of another file still arrives.
    let mut saw_delete = false;
    loop {
        match next_item(&mut changes, "recursive watch").await {
            Some(Ok(c)) if c.path == SRV_KS => match c.data {
                None => saw_delete = true,
                Some(d) => assert!(
                    d.contents == b"a" || d.contents == b"b",
                    "unexpected value {d:?} for {SRV_KS}"
                ),
            },
            Some(Ok(c)) if c.path == other => match c.data {
                Some(d) if d.contents == b"y" => break,
                Some(d) if d.contents == b"x" => {}
                d => panic!("unexpected change {d:?} for {other}"),
            },
            item => panic!("unexpected recursive watch item {item:?}"),
        }
    }
    assert!(saw_delete, "the deletion of {SRV_KS} was not delivered");
    changes.cancel();
    loop {
        match next_item(&mut changes, "recursive watch end").await {
            Some(Ok(_)) => continue,
            Some(Err(e)) if e.is(ErrorKind::Interrupted) => break,
            other => panic!("expected Interrupted, got {other:?}"),
        }
    }
    assert!(next_item(&mut changes, "after Interrupted").await.is_none());
    changes.cancel();
}

/// Fencing tokens strictly increase across successive holders of one directory.
async fn check_fencing_token_increases<F: ConnFactory>(factory: &F, root: &str) {
    let a = with_keyspace(factory, root).await;
    let b = open(factory, root).await;
    let mut last = 0u64;
    for i in 0..4 {
        let conn = if i % 2 == 0 { &a } else { &b };
        let g = conn.lock(KS_DIR, "x").await.expect("lock");
        assert!(
            g.fencing_token() > last,
            "token {} after {last}",
            g.fencing_token()
        );
        assert_eq!(g.fence().token(), g.fencing_token());
        last = g.fencing_token();
        g.unlock().await.expect("unlock");
    }
    // A waiter that queued behind a holder also gets a larger token.
    let holder = a.lock(KS_DIR, "holder").await.expect("lock");
    let held_token = holder.fencing_token();
    let waiter = tokio::spawn(async move {
        let g = b.lock(KS_DIR, "waiter").await.expect("lock");
        let t = g.fencing_token();
        g.unlock().await.expect("unlock");
        t
    });
    sleep(Duration::from_millis(100)).await;
    holder.unlock().await.expect("unlock");
    let waiter_token = timeout(PATIENCE, waiter)
        .await
        .expect("waiter")
        .expect("task");
    assert!(
        waiter_token > held_token,
        "waiter token {waiter_token} after {held_token}"
    );
}

/// Fenced writes succeed while the lock is held and are refused, with nothing written,
/// once it was released.
async fn check_fenced_write<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let guard = conn.lock(KS_DIR, "x").await.expect("lock");
    let fence = guard.fence();
    let a = format!("{KS_DIR}/a");
    let b = format!("{KS_DIR}/b");
    let c = format!("{KS_DIR}/c");
    let va = conn
        .create_fenced(&fence, &a, b"1")
        .await
        .expect("fenced create");
    let va2 = conn
        .update_fenced(&fence, &a, b"2", Some(&va))
        .await
        .expect("fenced update");
    assert_kind(
        conn.update_fenced(&fence, &a, b"3", Some(&va)).await,
        ErrorKind::BadVersion,
        "fenced update with a stale version",
    );
    conn.delete_fenced(&fence, &a, Some(&va2))
        .await
        .expect("fenced delete");
    let vb = conn
        .create_fenced(&fence, &b, b"1")
        .await
        .expect("fenced create");
    guard.unlock().await.expect("unlock");

    assert_kind(
        conn.update_fenced(&fence, &b, b"2", None).await,
        ErrorKind::LockLost,
        "fenced update after unlock",
    );
    assert_kind(
        conn.create_fenced(&fence, &c, b"1").await,
        ErrorKind::LockLost,
        "fenced create after unlock",
    );
    assert_kind(
        conn.delete_fenced(&fence, &b, None).await,
        ErrorKind::LockLost,
        "fenced delete after unlock",
    );
    assert_eq!(
        conn.get(&b).await.expect("get"),
        (b"1".to_vec(), vb),
        "nothing may be written"
    );
    assert_kind(conn.get(&c).await, ErrorKind::NoNode, "refused create");

    // The next holder's lock does not revive the old fence.
    let next = conn.lock(KS_DIR, "next").await.expect("lock");
    assert_kind(
        conn.update_fenced(&fence, &b, b"2", None).await,
        ErrorKind::LockLost,
        "old fence under a new holder",
    );
    conn.update_fenced(&next.fence(), &b, b"2", None)
        .await
        .expect("the new holder's fenced write");
    next.unlock().await.expect("unlock");
}

/// A lock taken with a 1 s TTL and held for 3 s is still held.
async fn check_lock_survives_ttl<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let other = open(factory, root).await;
    let guard = conn
        .lock_with_ttl(KS_DIR, "x", Duration::from_secs(1))
        .await
        .expect("lock_with_ttl");
    sleep(Duration::from_secs(3)).await;
    guard
        .check()
        .await
        .expect("the lock must still be held after three TTLs");
    assert_kind(
        other
            .lock_timeout(KS_DIR, "y", Duration::from_millis(500))
            .await,
        ErrorKind::Timeout,
        "a second locker while the first holds past its TTL",
    );
    conn.update_fenced(&guard.fence(), &format!("{KS_DIR}/Keyspace"), b"k", None)
        .await
        .expect("fenced write past the TTL");
    guard.unlock().await.expect("unlock");
    other
        .lock_timeout(KS_DIR, "y", PATIENCE)
        .await
        .expect("lock after unlock")
        .unlock()
        .await
        .expect("unlock");
}

/// An acquisition whose future is dropped leaves no lock entry behind.
async fn check_dropped_lock_acquisition<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let other = open(factory, root).await;
    let holder = conn.lock(KS_DIR, "holder").await.expect("lock");
    let waiter = tokio::spawn(async move { other.lock(KS_DIR, "abandoned").await.map(|_| ()) });
    sleep(Duration::from_millis(300)).await;
    waiter.abort();
    let _ = waiter.await;
    holder.unlock().await.expect("unlock");
    // try_lock fails while any entry (held or queued) exists: it must succeed soon.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match conn.try_lock(KS_DIR, "probe").await {
            Ok(g) => {
                g.unlock().await.expect("unlock");
                break;
            }
            Err(e) if e.is(ErrorKind::NodeExists) && Instant::now() < deadline => {
                sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the abandoned acquisition left an entry behind: {e}"),
        }
    }
}

/// A version delivered by a watch works as the expected version of an update.
async fn check_watch_version_cas<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, root).await;
    let writer = open(factory, root).await;
    conn.create(SRV_KS, b"v1").await.expect("create");
    let (current, mut changes) = conn.watch(SRV_KS).await.expect("watch");
    let v2 = writer
        .update(SRV_KS, b"v2", Some(&current.version))
        .await
        .expect("CAS with the watch's initial version");
    let event = await_value(&mut changes, b"v2", &[b"v1"]).await;
    assert_eq!(event.version, v2);
    conn.update(SRV_KS, b"v3", Some(&event.version))
        .await
        .expect("CAS with a version from a watch event");
    changes.cancel();
}

/// Of 8 concurrent creates of one path exactly one succeeds.
async fn check_concurrent_create<F: ConnFactory>(factory: &F, root: &str) {
    let conns = [open(factory, root).await, open(factory, root).await];
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let conn = conns[usize::from(i % 2)].clone();
        tasks.push(tokio::spawn(async move {
            (i, conn.create("/race/file", &[i]).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            (i, Ok(v)) => winners.push((i, v)),
            (_, Err(e)) if e.is(ErrorKind::NodeExists) => {}
            (_, Err(e)) => panic!("create: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create must win: {winners:?}");
    let (i, v) = winners[0];
    assert_eq!(conns[0].get("/race/file").await.expect("get"), (vec![i], v));
}

/// 8 tasks make 50 compare-and-set increments in total, retrying on `BadVersion`.
async fn check_cas_increments<F: ConnFactory>(factory: &F, root: &str) {
    let conns = [open(factory, root).await, open(factory, root).await];
    conns[0].create("/counter", b"0").await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..8usize {
        let conn = conns[i % 2].clone();
        let n = if i < 2 { 7 } else { 6 };
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                loop {
                    let (bytes, v) = conn.get("/counter").await.expect("get");
                    let value: u64 = String::from_utf8_lossy(&bytes)
                        .parse()
                        .expect("counter value");
                    match conn
                        .update("/counter", (value + 1).to_string().as_bytes(), Some(&v))
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if e.is(ErrorKind::BadVersion) => continue,
                        Err(e) => panic!("update: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (bytes, _) = conns[1].get("/counter").await.expect("get");
    assert_eq!(bytes, b"50");
}

/// A relative path whose `..` climbs above the root is refused, and nothing is written.
async fn check_path_climbing_refused<F: ConnFactory>(factory: &F, root: &str) {
    let conn = open(factory, &format!("{root}/cell")).await;
    let outer = open(factory, root).await;
    for bad in [
        "../escape/file",
        "/a/../../escape/file",
        "x/../../../escape",
    ] {
        assert_kind(
            conn.create(bad, b"x").await,
            ErrorKind::InvalidArgument,
            bad,
        );
        assert_kind(
            conn.update(bad, b"x", None).await,
            ErrorKind::InvalidArgument,
            bad,
        );
        assert_kind(conn.get(bad).await, ErrorKind::InvalidArgument, bad);
        assert_kind(
            conn.delete(bad, None).await,
            ErrorKind::InvalidArgument,
            bad,
        );
        assert_kind(
            conn.list_dir(bad, true).await,
            ErrorKind::InvalidArgument,
            bad,
        );
        assert_kind(
            conn.lock_name(bad, "x").await,
            ErrorKind::InvalidArgument,
            bad,
        );
        assert_kind(
            conn.watch(bad).await.map(|_| ()),
            ErrorKind::InvalidArgument,
            bad,
        );
    }
    assert_kind(
        outer.list("/").await,
        ErrorKind::NoNode,
        "nothing may be written above the root",
    );
    // `..` that stays inside the root is plain Go path semantics.
    conn.create("/a/../inside", b"1")
        .await
        .expect("create inside the root");
    assert_eq!(conn.get("/inside").await.expect("get").0, b"1");
}

/// A value at the backend's limit is written and read back; one byte more is refused at
/// once with `TooLarge` and nothing is written, while a lock held and a watch opened on the
/// same connection carry on undisturbed. (A backend without a limit passes trivially.)
async fn check_value_limit<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let Some(limit) = conn.value_limit() else {
        eprintln!("no value limit on this backend");
        return;
    };
    let guard = conn.lock(KS_DIR, "value limit").await.expect("lock");
    let fits = vec![b'x'; limit.max];
    let v = conn
        .create("/big/fits", &fits)
        .await
        .expect("a value at the limit");
    assert_eq!(conn.get("/big/fits").await.expect("get").0.len(), limit.max);
    let (_, mut changes) = conn.watch("/big/fits").await.expect("watch");
    let over = vec![b'y'; limit.max + 1];
    let started = Instant::now();
    assert_kind(
        conn.create("/big/over", &over).await,
        ErrorKind::TooLarge,
        "create one byte over",
    );
    assert_kind(
        conn.update("/big/fits", &over, Some(&v)).await,
        ErrorKind::TooLarge,
        "update one byte over",
    );
    assert_kind(
        conn.update_fenced(&guard.fence(), "/big/fits", &over, None)
            .await,
        ErrorKind::TooLarge,
        "fenced update one byte over",
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusing took {:?}: something was sent",
        started.elapsed()
    );
    assert_kind(
        conn.get("/big/over").await,
        ErrorKind::NoNode,
        "nothing written",
    );
    guard.check().await.expect("the lock is still held");
    conn.update("/big/fits", b"small", None)
        .await
        .expect("a small write");
    let change = timeout(PATIENCE, changes.next())
        .await
        .expect("the watch still delivers")
        .expect("an item")
        .expect("a change");
    assert_eq!(change.contents, b"small");
    guard.unlock().await.expect("unlock");
}

/// How soon after `close()` returns its lock must be free: far below any lease TTL, so a
/// lock left to expire fails the check.
const RELEASE_BOUND: Duration = Duration::from_secs(3);

/// `close()` releases held locks (another connection takes the lock at once), ends open
/// watches and queued lock waits with `Interrupted`, and later calls fail with
/// `Interrupted`.
async fn check_close<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let other = open(factory, root).await;
    other.create(SRV_KS, b"v1").await.expect("create");
    let guard = conn.lock(KS_DIR, "holder").await.expect("lock");
    let (_, mut file_watch) = conn.watch(SRV_KS).await.expect("watch");
    let (_, mut tree_watch) = conn.watch_recursive(KS_DIR).await.expect("watch_recursive");
    let queued = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.lock(KS_DIR, "queued").await.map(|_| ()) })
    };
    sleep(Duration::from_millis(200)).await;
    assert!(!queued.is_finished(), "the second lock call must queue");

    timeout(PATIENCE, conn.close())
        .await
        .expect("close() must return");
    let next = timeout(RELEASE_BOUND, other.lock(KS_DIR, "next"))
        .await
        .expect("the lock of a closed connection must be free at once")
        .expect("lock after close");
    assert_kind(
        timeout(RELEASE_BOUND, queued)
            .await
            .expect("a queued lock wait must end with close()")
            .expect("task"),
        ErrorKind::Interrupted,
        "queued lock wait on a closed connection",
    );
    await_end(&mut file_watch, ErrorKind::Interrupted, &[b"v1"]).await;
    loop {
        match next_item(&mut tree_watch, "recursive watch after close").await {
            Some(Ok(_)) => continue,
            Some(Err(e)) if e.is(ErrorKind::Interrupted) => break,
            other => panic!("recursive watch after close: expected Interrupted, got {other:?}"),
        }
    }
    assert!(next_item(&mut tree_watch, "after Interrupted")
        .await
        .is_none());
    assert!(
        guard.check().await.is_err(),
        "check() of a lock released by close()"
    );
    drop(guard);

    let closed = ErrorKind::Interrupted;
    assert_kind(conn.get(SRV_KS).await, closed, "get after close");
    assert_kind(conn.create("/x", b"x").await, closed, "create after close");
    assert_kind(
        conn.update(SRV_KS, b"x", None).await,
        closed,
        "update after close",
    );
    assert_kind(
        conn.delete(SRV_KS, None).await,
        closed,
        "delete after close",
    );
    assert_kind(
        conn.list_dir("/", false).await,
        closed,
        "list_dir after close",
    );
    assert_kind(conn.list("/").await, closed, "list after close");
    assert_kind(
        conn.try_lock(KS_DIR, "x").await,
        closed,
        "try_lock after close",
    );
    assert_kind(
        conn.lock_timeout(KS_DIR, "x", PATIENCE).await,
        closed,
        "lock after close",
    );
    assert_kind(
        conn.watch(SRV_KS).await.map(|_| ()),
        closed,
        "watch after close",
    );
    assert_kind(
        conn.watch_recursive(KS_DIR).await.map(|_| ()),
        closed,
        "watch_recursive after close",
    );
    assert_eq!(
        other.get(SRV_KS).await.expect("get").0,
        b"v1",
        "nothing was written by the closed connection"
    );
    next.unlock().await.expect("unlock");
}

/// 20 concurrent `try_lock` calls on a held lock all fail with `NodeExists` within 1 s, and
/// leave no entry: once the holder releases, `try_lock` succeeds at the first attempt.
async fn check_try_lock_concurrent<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let others = [open(factory, root).await, open(factory, root).await];
    let guard = conn.lock(KS_DIR, "holder").await.expect("lock");
    let tries = futures::future::join_all((0..20).map(|i| {
        let other = others[i % 2].clone();
        async move { other.try_lock(KS_DIR, "contender").await.map(|_| ()) }
    }));
    let results = timeout(Duration::from_secs(1), tries)
        .await
        .expect("20 concurrent try_lock calls must all return within 1 s");
    for r in results {
        assert_kind(r, ErrorKind::NodeExists, "try_lock while held");
    }
    guard.check().await.expect("the holder still holds");
    guard.unlock().await.expect("unlock");
    others[0]
        .try_lock(KS_DIR, "after")
        .await
        .expect("a refused try_lock must leave no entry behind")
        .unlock()
        .await
        .expect("unlock");
}

/// A lock future dropped while it waits, then `close()` of its connection: once `close()`
/// returned, nothing of the abandoned acquisition is left (after the holder releases, a
/// third connection's `try_lock` succeeds at the first attempt).
async fn check_abandoned_acquisition_then_close<F: ConnFactory>(factory: &F, root: &str) {
    let conn = with_keyspace(factory, root).await;
    let quitter = open(factory, root).await;
    let third = open(factory, root).await;
    let guard = conn.lock(KS_DIR, "holder").await.expect("lock");
    assert!(
        timeout(
            Duration::from_millis(300),
            quitter.lock(KS_DIR, "abandoned")
        )
        .await
        .is_err(),
        "the second lock call must wait"
    );
    timeout(PATIENCE, quitter.close())
        .await
        .expect("close() must return");
    guard.unlock().await.expect("unlock");
    third
        .try_lock(KS_DIR, "after")
        .await
        .expect("close() must finish removing the abandoned entry before it returns")
        .unlock()
        .await
        .expect("unlock");
}
