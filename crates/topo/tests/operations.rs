//! `--topo-implementation tee`, `backup --keep`, `diff-backups` and `doctor`'s checklist
//! through the binary, on embedded `local` stores in a temporary folder: what they do and
//! how they refuse bad input. (The guides' test runs them on etcd and ZooKeeper.)

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// `topo args…` in `dir`, with no topology settings from the environment.
fn topo(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("topo")
        .unwrap()
        .current_dir(dir)
        .env_remove("TOPO_IMPLEMENTATION")
        .env_remove("TOPO_GLOBAL_SERVER_ADDRESS")
        .env_remove("TOPO_GLOBAL_ROOT")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Succeeds, or panics with what it printed.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = topo(dir, args);
    assert!(out.status.success(), "topo {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Fails with `needle` on stderr.
fn refused(dir: &Path, args: &[&str], needle: &str) {
    let out = topo(dir, args);
    assert!(!out.status.success(), "topo {args:?} succeeded");
    assert!(
        stderr(&out).contains(needle),
        "topo {args:?}: {}",
        stderr(&out)
    );
}

const TEE: [&str; 8] = [
    "--topo-implementation",
    "tee",
    "--topo-tee-primary-implementation",
    "local",
    "--topo-global-server-address",
    "a.db",
    "--topo-tee-secondary-implementation",
    "local",
];

fn tee(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = TEE.to_vec();
    v.extend(["--topo-tee-secondary-server-address", "b.db"]);
    v.extend(extra);
    v
}

fn keyspace_names(dir: &Path, db: &str) -> Vec<String> {
    let ks: Value = serde_json::from_str(&ok(
        dir,
        &["--topo-global-server-address", db, "GetKeyspaces"],
    ))
    .unwrap();
    ks.as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tee_writes_to_both_and_locks_both() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ok(dir, &tee(&["CreateKeyspace", "commerce"]));
    assert_eq!(keyspace_names(dir, "a.db"), ["commerce"]);
    assert_eq!(keyspace_names(dir, "b.db"), ["commerce"]);
    // Reads come from the primary: a keyspace only the secondary has is not seen.
    ok(
        dir,
        &[
            "--topo-global-server-address",
            "b.db",
            "CreateKeyspace",
            "only_b",
        ],
    );
    let seen = ok(dir, &tee(&["GetKeyspaces"]));
    assert!(!seen.contains("only_b"), "{seen}");
    // A lock held through the tee is held on the secondary too.
    let inner = "topo --topo-global-server-address b.db --lock-timeout 300ms lock keyspaces/commerce -- true";
    let exe = assert_cmd::cargo::cargo_bin("topo");
    let path = format!(
        "{}:{}",
        exe.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::cargo_bin("topo")
        .unwrap()
        .current_dir(dir)
        .env("PATH", path)
        .args(tee(&[
            "--no-fence",
            "lock",
            "keyspaces/commerce",
            "--",
            "sh",
            "-c",
            inner,
        ]))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the secondary's lock was free: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("keyspaces/commerce"),
        "{}",
        stderr(&out)
    );
    // Released on both afterwards.
    ok(
        dir,
        &[
            "--topo-global-server-address",
            "b.db",
            "lock",
            "keyspaces/commerce",
            "--",
            "true",
        ],
    );
}

#[test]
fn tee_flags_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    refused(
        dir,
        &["--topo-implementation", "tee", "GetKeyspaces"],
        "--topo-implementation tee needs --topo-tee-primary-implementation",
    );
    refused(
        dir,
        &TEE[..6]
            .iter()
            .copied()
            .chain(["GetKeyspaces"])
            .collect::<Vec<_>>(),
        "needs --topo-tee-secondary-implementation",
    );
    refused(
        dir,
        &TEE.iter()
            .copied()
            .chain(["GetKeyspaces"])
            .collect::<Vec<_>>(),
        "needs --topo-tee-secondary-server-address",
    );
    let mut same = TEE.to_vec();
    same.extend([
        "--topo-tee-secondary-server-address",
        "a.db",
        "GetKeyspaces",
    ]);
    refused(dir, &same, "the secondary is the primary");
    let mut unknown = TEE.to_vec();
    unknown[7] = "tee";
    unknown.extend([
        "--topo-tee-secondary-server-address",
        "b.db",
        "GetKeyspaces",
    ]);
    refused(
        dir,
        &unknown,
        "--topo-tee-secondary-implementation: unknown implementation tee",
    );
    refused(
        dir,
        &tee(&["--topo-tee-lock-order", "both", "GetKeyspaces"]),
        "primary-first",
    );
    refused(
        dir,
        &["--topo-tee-secondary-implementation", "zk2", "GetKeyspaces"],
        "--topo-tee-secondary-implementation needs --topo-implementation tee (it is local)",
    );
    assert!(!dir.join("a.db").exists() && !dir.join("b.db").exists());
    assert!(!dir.join("toposphere.db").exists());
}

#[test]
fn backup_keep_refuses_a_file_and_zero() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ok(dir, &["demo"]);
    std::fs::write(dir.join("plain"), "x").unwrap();
    refused(
        dir,
        &["backup", "--keep", "3", "plain"],
        "plain is not a directory",
    );
    assert_eq!(std::fs::read(dir.join("plain")).unwrap(), b"x");
    refused(dir, &["backup", "--keep", "0", "backups"], "--keep");
    assert!(!dir.join("backups").exists());
    // Files that are not rotated backups are left alone.
    std::fs::create_dir(dir.join("backups")).unwrap();
    std::fs::write(dir.join("backups/notes.json"), "{}").unwrap();
    for _ in 0..3 {
        ok(dir, &["backup", "--keep", "1", "backups"]);
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "notes.json");
    assert!(names[1].starts_with("topo-backup-"), "{names:?}");
}

#[test]
fn diff_backups_lists_differences() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ok(dir, &["demo"]);
    ok(dir, &["backup", "before.json"]);
    ok(
        dir,
        &[
            "SetKeyspaceDurabilityPolicy",
            "--durability-policy",
            "cross_cell",
            "commerce",
        ],
    );
    ok(dir, &["CreateKeyspace", "orders"]);
    ok(dir, &["backup", "after.json"]);
    let out = topo(dir, &["diff-backups", "before.json", "after.json"]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("differs: global:/keyspaces/commerce/Keyspace"),
        "{text}"
    );
    assert!(
        text.contains("only in after.json: global:/keyspaces/orders/Keyspace"),
        "{text}"
    );
    assert!(ok(dir, &["diff-backups", "after.json", "after.json"]).contains("hold the same"));
    refused(
        dir,
        &["diff-backups", "after.json", "missing.json"],
        "missing.json",
    );
    // Verbs on files alone open no topology: none is created where there was none.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("after.json"), empty.path().join("b.json")).unwrap();
    ok(empty.path(), &["verify-backup", "b.json"]);
    ok(empty.path(), &["diff-backups", "b.json", "b.json"]);
    assert!(!empty.path().join("toposphere.db").exists());
}

#[test]
fn doctor_fails_overlapping_roots_and_missing_serving_graph() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ok(dir, &["demo"]);
    ok(
        dir,
        &[
            "AddCellInfo",
            "--server-address",
            "toposphere.db",
            "--root",
            "/vitess/global/zone3",
            "zone3",
        ],
    );
    ok(
        dir,
        &[
            "AddTablet",
            "--keyspace",
            "commerce",
            "--shard",
            "0",
            "zone3-300",
        ],
    );
    let out = topo(dir, &["doctor", "--format", "json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["healthy"], Value::Bool(false));
    let failed: Vec<(&str, &str)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| (c["check"].as_str().unwrap(), c["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failed,
        [("serving-graph", "zone3"), ("root", "zone3")],
        "{report}"
    );
    assert_eq!(report["failures"], 2);
    let text = stdout(&topo(dir, &["doctor"]));
    assert!(text.contains("FAIL  cell zone3 shares servers with global and its root /vitess/global/zone3 overlaps"), "{text}");
    assert!(text.contains("2 checks failed"), "{text}");
}
