//! Several processes sharing one database file, through the `topo-local-stress` child.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use topo_core::{Conn, ConnExt};
use topo_local::{LocalConn, LocalOptions};

const CHILD: &str = env!("CARGO_BIN_EXE_topo-local-stress");

fn conn(db: &std::path::Path) -> LocalConn {
    LocalConn::open(db, "/stress", LocalOptions::default()).unwrap()
}

/// (a) Four processes increment one counter 100 times each under the lock: the total is
/// exactly 400, each process sees its tokens increase, and all 400 tokens are distinct
/// (never two holders of one token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let c = conn(&db);
    c.create("/keyspaces/ks/counter", b"0").await.unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(CHILD)
                .args(["increment", db.to_str().unwrap(), "100"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all_tokens = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tokens: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(tokens.len(), 100);
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "tokens of one process increase"
        );
        all_tokens.extend(tokens);
    }
    all_tokens.sort();
    all_tokens.dedup();
    assert_eq!(all_tokens.len(), 400, "no token was held twice");
    assert_eq!(c.get("/keyspaces/ks/counter").await.unwrap().0, b"400");
}

/// (b) The holder is killed with SIGKILL: another process gets the lock within TTL + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_frees_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let c = conn(&db);
    c.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    let ttl = Duration::from_millis(2000);
    let mut holder = Command::new(CHILD)
        .args(["hold", db.to_str().unwrap(), &ttl.as_millis().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held: u64 = line
        .trim()
        .strip_prefix("locked ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(c
        .try_lock("/keyspaces/ks", "x")
        .await
        .unwrap_err()
        .is(topo_core::ErrorKind::NodeExists));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let start = Instant::now();
    let g = c
        .lock_timeout("/keyspaces/ks", "next", ttl + Duration::from_secs(1))
        .await
        .expect("lock within TTL + 1 s");
    assert!(start.elapsed() <= ttl + Duration::from_secs(1));
    assert!(g.fencing_token() > held);
    g.unlock().await.unwrap();
}

/// (b2) An election leader is killed with SIGKILL: another participant leads within the
/// lock TTL + 2 s (the election entry has the lock TTL and is kept alive, not the 24 h
/// named-lock lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_frees_the_election() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let c = conn(&db);
    let ttl = Duration::from_millis(2000);
    let mut leader = Command::new(CHILD)
        .args(["lead", db.to_str().unwrap(), &ttl.as_millis().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(leader.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "leading");
    let me = c
        .new_leader_participation("stress", "parent")
        .await
        .unwrap();
    assert_eq!(me.current_leader_id().await.unwrap(), "child");
    // Leading for longer than the TTL: the child's entry is renewed while it lives.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    assert_eq!(me.current_leader_id().await.unwrap(), "child");
    leader.kill().unwrap();
    leader.wait().unwrap();
    tokio::time::timeout(ttl + Duration::from_secs(2), me.wait_for_leadership())
        .await
        .expect("another participant must lead within the TTL + 2 s of the leader's death")
        .unwrap();
    assert_eq!(me.current_leader_id().await.unwrap(), "parent");
    me.stop().await;
}

/// (b3) A process gives up waiting for a held lock, closes its connection and exits at
/// once: nothing of its attempt is left, so once the holder releases, `try_lock` succeeds
/// at the first attempt (not after the abandoned entry's TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_acquisition_of_an_exited_process_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let c = conn(&db);
    c.create("/keyspaces/ks/Keyspace", b"").await.unwrap();
    for _ in 0..3 {
        let holder = c.lock("/keyspaces/ks", "holder").await.unwrap();
        let out = Command::new(CHILD)
            .args(["abandon", db.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout == b"closed\n",
            "child: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        holder.unlock().await.unwrap();
        c.try_lock("/keyspaces/ks", "after")
            .await
            .expect("the exited process's abandoned attempt left an entry")
            .unlock()
            .await
            .unwrap();
    }
}

/// (c) A writer killed with SIGKILL mid-loop, 20 times: the file always opens and every
/// write it acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writers_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    for round in 0..20 {
        let mut w = Command::new(CHILD)
            .args(["write", db.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(w.stdout.take().unwrap());
        let mut acked = None;
        let mut line = String::new();
        // Let it write a little (a different amount each round), then kill it.
        for _ in 0..(5 + round * 3) {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            acked = line
                .trim()
                .strip_prefix("acked ")
                .and_then(|n| n.parse::<u64>().ok());
        }
        w.kill().unwrap();
        w.wait().unwrap();
        // Acknowledgements the child printed before it died count too.
        for l in reader.lines().map_while(Result::ok) {
            if let Some(n) = l.strip_prefix("acked ").and_then(|n| n.parse::<u64>().ok()) {
                acked = Some(n);
            }
        }
        let c = conn(&db);
        let last = acked.expect("the writer acknowledged something");
        for i in 0..=last {
            let (v, _) = c
                .get(&format!("/acked/{i}"))
                .await
                .unwrap_or_else(|e| panic!("round {round}: acked write {i} lost: {e}"));
            assert_eq!(v, i.to_string().as_bytes());
        }
    }
}

/// (d) A watcher in this process sees every final value written by another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let c = conn(&db);
    c.create("/SrvVSchema", b"v0").await.unwrap();
    let (_, mut changes) = c.watch("/SrvVSchema").await.unwrap();
    let values: Vec<String> = (1..=50).map(|i| format!("v{i}")).collect();
    let mut args = vec![
        "set".to_string(),
        db.display().to_string(),
        "/SrvVSchema".into(),
    ];
    args.extend(values.iter().cloned());
    let start = Instant::now();
    let status = Command::new(CHILD).args(&args).status().unwrap();
    assert!(status.success());
    loop {
        let item = tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .expect("the final value arrives");
        match item {
            Some(Ok(d)) if d.contents == b"v50" => break,
            Some(Ok(_)) => continue,
            other => panic!("watch ended: {other:?}"),
        }
    }
    eprintln!(
        "the last of 50 writes by another process arrived {:?} after the writer started",
        start.elapsed()
    );
}
