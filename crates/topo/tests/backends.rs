//! The main workflows of `topo` on real etcd and ZooKeeper: the demo, reads, and a backup
//! taken from etcd restored into ZooKeeper and into the local store.

use std::path::Path;

use assert_cmd::Command;
use topo_testkit::etcd::EtcdCluster;
use topo_testkit::zk::ZkCluster;

fn topo(dir: &Path, implementation: &str, address: &str, args: &[&str]) -> String {
    let out = Command::cargo_bin("topo")
        .unwrap()
        .current_dir(dir)
        .env_remove("TOPO_GLOBAL_ROOT")
        .args([
            "--topo-implementation",
            implementation,
            "--topo-global-server-address",
            address,
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "topo {implementation} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn demo_backup_and_restore_across_backends() {
    let etcd_ok = topo_testkit::require_binary("etcd", "topo on etcd");
    let zk_ok = topo_testkit::zk::require();
    if !etcd_ok || !zk_ok {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdCluster::single().unwrap();
    let ep = etcd.endpoints();
    topo(dir.path(), "etcd2", &ep, &["demo"]);
    assert_eq!(
        topo(dir.path(), "etcd2", &ep, &["GetTablets"])
            .lines()
            .count(),
        12
    );
    assert!(topo(
        dir.path(),
        "etcd2",
        &ep,
        &["GetSrvKeyspaces", "customer", "zone1"]
    )
    .contains("shard_references"));
    assert!(topo(dir.path(), "etcd2", &ep, &["doctor"]).contains("healthy"));
    topo(dir.path(), "etcd2", &ep, &["backup", "etcd.json"]);

    let zk = ZkCluster::standalone().unwrap();
    let zk_addr = zk.addrs();
    topo(dir.path(), "zk2", &zk_addr, &["restore", "etcd.json"]);
    assert_eq!(
        topo(dir.path(), "zk2", &zk_addr, &["GetTablets"])
            .lines()
            .count(),
        12
    );
    let cell = topo(dir.path(), "zk2", &zk_addr, &["GetCellInfo", "zone1"]);
    assert!(
        cell.contains(&zk_addr),
        "cells point at the target after restore: {cell}"
    );

    topo(
        dir.path(),
        "local",
        "restored.db",
        &["restore", "etcd.json"],
    );
    assert_eq!(
        topo(dir.path(), "local", "restored.db", &["GetTablets"])
            .lines()
            .count(),
        12
    );

    // The two copies compare equal to the source, record by record.
    let out = topo(
        dir.path(),
        "etcd2",
        &ep,
        &[
            "topo2topo",
            "--to-implementation",
            "zk2",
            "--to-server",
            &zk_addr,
            "--to-root",
            "/vitess/global",
            "--all",
            "--compare",
        ],
    );
    assert!(out.starts_with("Topologies are in sync"), "{out}");
}

/// `topo` on a ZooKeeper that serves mutual TLS only: with the TLS flags (underscore
/// spelling too) the demo runs on every connection, global and cells, and `doctor` says
/// each cell's connection is mutual TLS; without a client certificate it is refused.
#[test]
fn zk_over_mutual_tls() {
    if !topo_testkit::zk::require_tls() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = topo_testkit::certs::TestCerts::generate(dir.path()).unwrap();
    let zk = ZkCluster::standalone_tls(&topo_testkit::zk::ServerTls {
        ca: certs.ca.clone(),
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_auth: Some((certs.client_cert.clone(), certs.client_key.clone())),
    })
    .unwrap();
    let addr = zk.addrs();
    let path = |p: &Path| p.display().to_string();
    let (ca, cert, key) = (
        path(&certs.ca),
        path(&certs.client_cert),
        path(&certs.client_key),
    );
    let tls = [
        "--topo-zk-tls-ca",
        &ca,
        "--topo_zk_tls_cert",
        &cert,
        "--topo-zk-tls-key",
        &key,
    ];
    let with_tls = |args: &[&str]| topo(dir.path(), "zk2", &addr, &[&tls[..], args].concat());
    with_tls(&["demo"]);
    let doctor = with_tls(&["doctor"]);
    assert!(doctor.contains("healthy"), "{doctor}");
    assert!(
        doctor.contains("cell zone1 answers") && !doctor.contains("NOT encrypted"),
        "{doctor}"
    );
    assert_eq!(doctor.matches("TLS, mutual").count(), 3, "{doctor}");
    let out = Command::cargo_bin("topo")
        .unwrap()
        .current_dir(dir.path())
        .args([
            "--topo-implementation",
            "zk2",
            "--topo-global-server-address",
        ])
        .args([&addr, "--topo-zk-tls-ca", &ca, "GetKeyspaces"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused this client"), "{err}");
}
