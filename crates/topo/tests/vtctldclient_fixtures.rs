//! `topo` as a drop-in for `vtctldclient --server=internal`, through the binary.
//!
//! The fixture test builds a fixed toposphere on the embedded store with `topo` itself, runs
//! each verb and compares its exact stdout with `fixtures/vtctldclient/<name>.out`. Each
//! expected file starts with `#` lines naming the Vitess source line the output was derived
//! from; they are not part of the output. Where vtctldclient prints a Go map, Go sorts the
//! keys (encoding/json) or protojson does (map fields), so the expected order is by key.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `topo` in `dir` with no topology settings from the environment.
fn topo(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_topo"))
        .current_dir(dir)
        .env_remove("TOPO_IMPLEMENTATION")
        .env_remove("TOPO_GLOBAL_SERVER_ADDRESS")
        .env_remove("TOPO_GLOBAL_ROOT")
        .env_remove("TOPO_LOCK_FENCE")
        .env("TZ", "UTC")
        .args(args)
        .output()
        .expect("run topo")
}

/// Runs `topo args…`, expecting success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = topo(dir, args);
    assert!(
        out.status.success(),
        "topo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs `topo args…`, expecting exit status `code`; returns stderr.
fn exits(dir: &Path, code: i32, args: &[&str]) -> String {
    let out = topo(dir, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "topo {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

#[test]
fn server_flag_accepts_internal_only() {
    let dir = tempfile::tempdir().unwrap();
    let err = exits(
        dir.path(),
        2,
        &["--server", "vtctld:15999", "GetCellInfoNames"],
    );
    assert!(err.contains("talks to the topology directly"), "{err}");
    assert!(err.contains("--topo-global-server-address"), "{err}");
    assert!(!dir.path().join("toposphere.db").exists());
}

#[test]
fn default_store_is_announced_and_not_created_by_reads() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("toposphere.db");
    let err = exits(dir.path(), 1, &["--server=internal", "GetKeyspaces"]);
    assert!(
        err.contains("toposphere.db") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!db.exists(), "a read-only verb created the store");

    let out = topo(
        dir.path(),
        &["--server=internal", "--v=1", "CreateKeyspace", "ks"],
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("created {}", db.display())), "{err}");
    assert!(db.exists());

    let out = topo(dir.path(), &["CreateKeyspace", "ks2"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created"));
}

#[test]
fn action_timeout_bounds_the_whole_command() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["CreateKeyspace", "ks"]);
    let mut holder = Command::new(env!("CARGO_BIN_EXE_topo"))
        .current_dir(dir.path())
        .env_remove("TOPO_LOCK_FENCE")
        .args(["lock", "keyspaces/ks", "--", "sleep", "20"])
        .spawn()
        .unwrap();
    // Wait for the holder to take the lock: a lock attempt with a short timeout fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    while topo(
        dir.path(),
        &[
            "--lock-timeout",
            "100ms",
            "lock",
            "keyspaces/ks",
            "--",
            "true",
        ],
    )
    .status
    .success()
    {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let err = exits(
        dir.path(),
        1,
        &[
            "--action_timeout",
            "500ms",
            "--lock-timeout",
            "30s",
            "SetKeyspaceDurabilityPolicy",
            "--durability-policy",
            "semi_sync",
            "ks",
        ],
    );
    assert!(err.contains("--action-timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn writes_refuse_bytes_that_are_not_the_record_the_path_names() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["CreateKeyspace", "commerce"]);
    // 300 bytes that are no protobuf message (a varint key with an invalid wire type 7).
    let junk: Vec<u8> = (0..300u32)
        .map(|i| {
            if i % 2 == 0 {
                0x0f
            } else {
                (i * 37 % 251) as u8
            }
        })
        .collect();
    std::fs::write(dir.path().join("junk"), &junk).unwrap();
    let err = exits(
        dir.path(),
        1,
        &["WriteTopologyPath", "/keyspaces/commerce/Keyspace", "junk"],
    );
    assert!(
        err.contains("refusing to write /keyspaces/commerce/Keyspace")
            && err.contains("topodata.Keyspace")
            && err.contains("--raw"),
        "{err}"
    );
    let err = exits(
        dir.path(),
        1,
        &[
            "TopoCp",
            "--to_topo",
            "junk",
            "/keyspaces/commerce/Keyspace",
        ],
    );
    assert!(
        err.contains("junk does not hold a topodata.Keyspace record"),
        "{err}"
    );
    // Nothing was written: the keyspace still reads.
    ok(dir.path(), &["GetKeyspace", "commerce"]);
    // A path with no record type takes any bytes; --raw writes them anyway.
    ok(dir.path(), &["WriteTopologyPath", "/metadata/blob", "junk"]);
    ok(
        dir.path(),
        &[
            "WriteTopologyPath",
            "--raw",
            "/keyspaces/commerce/Keyspace",
            "junk",
        ],
    );
    let err = exits(dir.path(), 1, &["GetKeyspace", "commerce"]);
    assert!(err.contains("commerce"), "{err}");
}

#[test]
fn restore_force_lists_the_target_and_needs_yes_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["CreateKeyspace", "commerce"]);
    ok(dir.path(), &["backup", "topo.json"]);
    let err = exits(dir.path(), 1, &["restore", "--force", "topo.json"]);
    assert!(
        err.contains("which holds: keyspaces") && err.contains("pass --yes"),
        "{err}"
    );
    let out = ok(dir.path(), &["restore", "--force", "--yes", "topo.json"]);
    assert!(out.starts_with("Restored and verified"), "{out}");
}

#[test]
fn exit_codes_are_documented_in_help() {
    let dir = tempfile::tempdir().unwrap();
    let help = ok(dir.path(), &["--help"]);
    for line in ["0  ", "1  ", "2  ", "3  ", "125"] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}
