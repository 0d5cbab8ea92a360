//! A lock attempt that gives up leaves nothing behind, through the `topo` binary, on the
//! local store and on real etcd and ZooKeeper: while `topo lock` holds a keyspace, a second
//! `topo lock` with a short `--lock-timeout` fails; once the holder exits, a third one gets
//! the lock (the second one's abandoned entry must not block it).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use topo_testkit::etcd::EtcdCluster;
use topo_testkit::zk::ZkCluster;

/// `topo` in `dir` on one backend (no implementation flags for the default local store).
fn topo_args(implementation: Option<(&str, &str)>) -> Vec<String> {
    match implementation {
        Some((name, address)) => vec![
            "--topo-implementation".into(),
            name.into(),
            "--topo-global-server-address".into(),
            address.into(),
        ],
        None => Vec::new(),
    }
}

fn topo(dir: &Path, implementation: Option<(&str, &str)>) -> Command {
    let mut c = Command::cargo_bin("topo").expect("topo binary");
    c.current_dir(dir);
    for v in [
        "TOPO_IMPLEMENTATION",
        "TOPO_GLOBAL_SERVER_ADDRESS",
        "TOPO_GLOBAL_ROOT",
        "TOPO_LOG",
    ] {
        c.env_remove(v);
    }
    c.args(topo_args(implementation));
    c
}

fn abandoned_lock_leaves_nothing(implementation: Option<(&str, &str)>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = implementation.map_or("local", |(name, _)| name);
    topo(dir.path(), implementation)
        .args(["CreateKeyspace", "ks"])
        .assert()
        .success();

    let mut holder = StdCommand::new(assert_cmd::cargo::cargo_bin("topo"))
        .current_dir(dir.path())
        .env_remove("TOPO_GLOBAL_ROOT")
        .args(topo_args(implementation))
        .args([
            "lock",
            "keyspaces/ks",
            "--",
            "sh",
            "-c",
            "echo locked; exec sleep 5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("the holder's output");
    assert_eq!(
        line.trim(),
        "locked",
        "{backend}: the holder must take the lock"
    );

    topo(dir.path(), implementation)
        .args(["--lock-timeout", "2s", "lock", "keyspaces/ks", "--", "true"])
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .failure();

    let status = holder.wait().expect("the holder ends");
    assert!(status.success(), "{backend}: the holder failed: {status}");
    let out = topo(dir.path(), implementation)
        .args(["--lock-timeout", "5s", "lock", "keyspaces/ks", "--", "true"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .expect("run topo");
    assert!(
        out.status.success(),
        "{backend}: the lock after the holder exited must succeed (the abandoned attempt \
         left something behind?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn abandoned_lock_leaves_nothing_on_local() {
    abandoned_lock_leaves_nothing(None);
}

#[test]
fn abandoned_lock_leaves_nothing_on_etcd() {
    if !topo_testkit::require_binary("etcd", "topo lock on etcd") {
        return;
    }
    let etcd = EtcdCluster::single().expect("etcd");
    abandoned_lock_leaves_nothing(Some(("etcd2", &etcd.endpoints())));
}

#[test]
fn abandoned_lock_leaves_nothing_on_zk() {
    if !topo_testkit::zk::require() {
        return;
    }
    let zk = ZkCluster::standalone().expect("ZooKeeper");
    abandoned_lock_leaves_nothing(Some(("zk2", &zk.addrs())));
}
