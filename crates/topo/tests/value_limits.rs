//! Values over a backend's size limit, through the binary: refused at once with an error
//! that names the path, the size, the limit and the flag; and restore and topo2topo check
//! every value before writing anything.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use topo_testkit::etcd::EtcdCluster;
use topo_testkit::zk::ZkCluster;

fn topo(dir: &Path, args: &[&str]) -> Output {
    topo_testkit::without_topo_env(&mut Command::new(env!("CARGO_BIN_EXE_topo")))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = topo(dir, args);
    assert!(
        out.status.success(),
        "topo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `args`, expecting failure; returns stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = topo(dir, args);
    assert!(!out.status.success(), "topo {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A 4 MB file copied in is refused within a second on every backend, naming the flag.
#[test]
fn a_large_value_is_refused_at_once_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, vec![b'x'; 4_000_000]).unwrap();
    let big = big.to_str().unwrap();
    let mut targets = vec![(
        "local".to_string(),
        "toposphere.db".to_string(),
        "--topo-local-max-value-bytes",
        None::<Box<dyn std::any::Any>>,
    )];
    if topo_testkit::require_binary("etcd", "value limits on etcd") {
        let etcd = EtcdCluster::single().unwrap();
        targets.push((
            "etcd2".into(),
            etcd.endpoints(),
            "--topo-etcd-max-request-bytes",
            Some(Box::new(etcd)),
        ));
    }
    if topo_testkit::zk::require() {
        let zk = ZkCluster::standalone().unwrap();
        targets.push((
            "zk2".into(),
            zk.addrs(),
            "--topo-zk-jute-maxbuffer",
            Some(Box::new(zk)),
        ));
    }
    for (implementation, address, flag, _server) in &targets {
        let flags = [
            "--topo-implementation",
            implementation,
            "--topo-global-server-address",
            address,
        ];
        let started = Instant::now();
        let err = fails(
            dir.path(),
            &[&flags[..], &["TopoCp", "--to_topo", big, "/big/file"]].concat(),
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{implementation}: refusing took {:?}",
            started.elapsed()
        );
        for part in ["/big/file", "4000000 bytes", flag] {
            assert!(err.contains(part), "{implementation}: {err} lacks {part}");
        }
        assert!(fails(
            dir.path(),
            &[&flags[..], &["TopoCat", "/big/file"]].concat()
        )
        .contains("doesn't exist"));
    }
}

/// A backup holding one value over the target's limit restores nothing (the error lists
/// it), or everything else with --skip-too-large; topo2topo checks the same way.
#[test]
fn restore_and_topo2topo_check_sizes_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let roomy = ["--topo-local-max-value-bytes", "3000000"];
    std::fs::write(d.join("big.txt"), vec![b'x'; 2_000_000]).unwrap();
    ok(d, &[&roomy[..], &["CreateKeyspace", "ks"]].concat());
    ok(
        d,
        &[
            &roomy[..],
            &["TopoCp", "--to_topo", "big.txt", "/keyspaces/ks/big"],
        ]
        .concat(),
    );
    ok(d, &[&roomy[..], &["backup", "topo.json"]].concat());

    let into_small = ["--topo-global-server-address", "small.db"];
    let err = fails(d, &[&into_small[..], &["restore", "topo.json"]].concat());
    assert!(
        err.contains("global:/keyspaces/ks/big (2000000 bytes)"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(
        ok(d, &[&into_small[..], &["TopoLs", "-R", "/"]].concat()),
        "",
        "the refused restore wrote something"
    );
    let out = topo(
        d,
        &[
            &into_small[..],
            &["restore", "--skip-too-large", "topo.json"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("global:/keyspaces/ks/big"));
    assert!(ok(d, &[&into_small[..], &["GetKeyspaces"]].concat()).contains("ks"));

    let to = [
        "topo2topo",
        "--to-implementation",
        "local",
        "--to-server",
        "copy.db",
        "--to-root",
        "/vitess/global",
        "--do-keyspaces",
    ];
    std::fs::write(d.join("small.txt"), b"fits").unwrap();
    ok(
        d,
        &[
            &roomy[..],
            &["TopoCp", "--to_topo", "big.txt", "/keyspaces/ks/VSchema"],
        ]
        .concat(),
    );
    // Limits apply to writes: read with the roomy store's flag off, the target keeps the
    // default limit.
    let err = fails(d, &to);
    assert!(
        err.contains("keyspaces/ks/VSchema (2000000 bytes)"),
        "{err}"
    );
    let copied = ["--topo-global-server-address", "copy.db", "GetKeyspaces"];
    assert!(
        !ok(d, &copied).contains("ks"),
        "the refused copy wrote something"
    );
}
