//! The `topo` binary, verb by verb, on the embedded `local` store in a temporary folder.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

/// A temporary folder holding `toposphere.db`, where `topo` runs with no topology flags.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("topo").expect("topo binary");
        c.current_dir(self.path());
        for v in [
            "TOPO_IMPLEMENTATION",
            "TOPO_GLOBAL_SERVER_ADDRESS",
            "TOPO_GLOBAL_ROOT",
            "TOPO_LOG",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// Runs `topo args…`, expecting success, and returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run topo");
        assert!(
            out.status.success(),
            "topo {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs `topo args…` and parses the JSON that follows any leading text lines.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        let start = out
            .find(['{', '['])
            .unwrap_or_else(|| panic!("no JSON in {out:?}"));
        serde_json::from_str(&out[start..])
            .unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
    }

    /// Runs `topo args…`, expecting failure with `needle` on stderr.
    fn fails(&self, args: &[&str], needle: &str) {
        self.cmd()
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(needle));
    }

    fn with_cell(&self) {
        self.ok(&[
            "AddCellInfo",
            "--root",
            "/vitess/zone1",
            "--server-address",
            "toposphere.db",
            "zone1",
        ]);
    }
}

/// JSON values with every number as a float (`5` and `5.0` compare equal).
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

#[test]
fn demo_builds_a_toposphere_and_refuses_to_overwrite_it() {
    let env = Env::new();
    let out = env.ok(&["demo"]);
    assert!(out.contains("customer (sharded: -80, 80-)"), "{out}");
    let keyspaces = env.json(&["GetKeyspaces"]);
    let names: Vec<&str> = keyspaces
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["commerce", "customer"]);
    assert_eq!(env.ok(&["GetTablets"]).lines().count(), 12);
    let srv = env.json(&["GetSrvKeyspaces", "customer", "zone1", "zone2"]);
    for cell in ["zone1", "zone2"] {
        let partitions = srv[cell]["partitions"].as_array().unwrap();
        assert_eq!(partitions.len(), 3);
        assert_eq!(
            partitions[0]["shard_references"].as_array().unwrap().len(),
            2
        );
    }
    let vs = env.json(&["GetSrvVSchema", "zone2"]);
    assert_eq!(vs["keyspaces"]["customer"]["sharded"], Value::Bool(true));
    env.fails(&["demo"], "already exists");
    env.ok(&["demo", "--force"]);
    assert_eq!(env.ok(&["GetTablets"]).lines().count(), 12);
    env.cmd()
        .args(["doctor"])
        .assert()
        .success()
        .stdout(predicate::str::contains("healthy"));
}

#[test]
fn cells_and_aliases() {
    let env = Env::new();
    assert_eq!(
        env.ok(&["AddCellInfo", "--root", "/vitess/zone1", "zone1"]),
        "Created cell: zone1\n"
    );
    env.fails(
        &["AddCellInfo", "--root", "", "zone2"],
        "--root must be non-empty",
    );
    env.fails(
        &["AddCellInfo", "--root", "/r", "zone1"],
        "node already exists",
    );
    let ci = env.json(&["GetCellInfo", "zone1"]);
    assert_eq!(ci["root"], "/vitess/zone1");
    assert_eq!(ci["server_address"], "");
    let updated = env.json(&[
        "UpdateCellInfo",
        "--server-address",
        "toposphere.db",
        "zone1",
    ]);
    assert_eq!(updated["server_address"], "toposphere.db");
    env.ok(&[
        "UpdateCellInfo",
        "--root",
        "/vitess/zone2",
        "--server-address",
        "toposphere.db",
        "zone2",
    ]);
    assert_eq!(env.ok(&["GetCellInfoNames"]), "zone1\nzone2\n");
    env.ok(&["AddCellsAlias", "--cells", "zone1,zone2", "region"]);
    env.fails(
        &["AddCellsAlias", "--cells", "zone2", "other"],
        "overlaps with existing alias region",
    );
    let aliases = env.json(&["GetCellsAliases"]);
    assert_eq!(
        aliases["region"]["cells"],
        serde_json::json!(["zone1", "zone2"])
    );
    env.ok(&["UpdateCellsAlias", "--cells", "zone1", "region"]);
    assert_eq!(
        env.json(&["GetCellsAliases"])["region"]["cells"],
        serde_json::json!(["zone1"])
    );
    env.ok(&["DeleteCellsAlias", "region"]);
    assert_eq!(env.json(&["GetCellsAliases"]), serde_json::json!({}));
    env.ok(&["DeleteCellInfo", "zone2"]);
    env.ok(&["RemoveCellInfo", "zone1"]);
    assert_eq!(
        env.ok(&["GetCellInfoNames"]),
        "\n",
        "vtctldclient prints the empty join"
    );
}

#[test]
fn keyspaces_and_shards() {
    let env = Env::new();
    env.with_cell();
    let created = env.json(&["CreateKeyspace", "--durability-policy", "semi_sync", "ks"]);
    assert_eq!(created["keyspace"]["durability_policy"], "semi_sync");
    env.fails(&["CreateKeyspace", "ks"], "node already exists");
    env.ok(&["CreateKeyspace", "--force", "ks"]);
    assert!(env
        .ok(&["GetKeyspace", "ks"])
        .starts_with("name:\"ks\" keyspace:{"));
    assert_eq!(
        env.json(&["GetVSchema", "ks"])["sharded"],
        Value::Bool(false)
    );
    let shard = env.json(&["CreateShard", "ks/-80"]);
    assert_eq!(
        shard["shard"]["shard"]["is_primary_serving"],
        Value::Bool(true)
    );
    assert_eq!(shard["shard_already_exists"], Value::Bool(false));
    assert_eq!(
        env.json(&["CreateShard", "--force", "ks/-80"])["shard_already_exists"],
        Value::Bool(true)
    );
    env.ok(&["CreateShard", "ks/80-"]);
    env.ok(&["CreateShard", "--include-parent", "other/0"]);
    let all = env.json(&["FindAllShardsInKeyspace", "ks"]);
    assert_eq!(
        all["shards"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["-80", "80-"]
    );
    assert_eq!(
        env.json(&["GetShard", "ks/-80"])["shard"]["key_range"]["end"],
        "gA=="
    );
    let d = env.json(&[
        "SetKeyspaceDurabilityPolicy",
        "--durability-policy",
        "none",
        "ks",
    ]);
    assert_eq!(d["keyspace"]["durability_policy"], "none");
    let s = env.json(&["SetShardIsPrimaryServing", "ks/80-", "false"]);
    assert_eq!(s["is_primary_serving"], Value::Bool(false));
    let tc = env.json(&[
        "SetShardTabletControl",
        "--denied-tables",
        "t1,t2",
        "ks/-80",
        "rdonly",
    ]);
    assert_eq!(
        tc["tablet_controls"][0]["denied_tables"],
        serde_json::json!(["t1", "t2"])
    );
    let removed = env.json(&[
        "SetShardTabletControl",
        "--remove",
        "--denied-tables",
        "t1,t2",
        "ks/-80",
        "rdonly",
    ]);
    assert_eq!(removed["tablet_controls"], serde_json::json!([]));
    let src = env.json(&["SourceShardAdd", "--tables", "a", "ks/-80", "1", "other/0"]);
    assert_eq!(src["source_shards"][0]["keyspace"], "other");
    assert_eq!(
        env.ok(&["SourceShardAdd", "ks/-80", "1", "other/0"]),
        "SourceShard with uid 1 already exists for ks/-80, not adding it.\n"
    );
    assert!(env
        .ok(&["SourceShardDelete", "ks/-80", "1"])
        .starts_with("Updated shard record:\n{"));
    assert_eq!(
        env.ok(&["SourceShardDelete", "ks/-80", "1"]),
        "No SourceShard with uid 1.\n"
    );
    env.fails(&["DeleteKeyspace", "ks"], "use --recursive");
    assert_eq!(
        env.ok(&["DeleteShards", "ks/80-"]),
        "Successfully deleted 1 shards\n"
    );
    env.ok(&["DeleteKeyspace", "--recursive", "ks"]);
    env.fails(&["GetKeyspace", "ks"], "node doesn't exist");
}

#[test]
fn tablets_and_replication() {
    let env = Env::new();
    env.with_cell();
    env.ok(&[
        "AddTablet",
        "--keyspace",
        "ks",
        "--shard",
        "0",
        "--type",
        "primary",
        "--create-shard-and-keyspace",
        "zone1-100",
    ]);
    env.ok(&[
        "AddTablet",
        "--keyspace",
        "ks",
        "--shard",
        "0",
        "--type",
        "replica",
        "--tag",
        "role=a",
        "zone1-101",
    ]);
    env.fails(
        &[
            "AddTablet",
            "--keyspace",
            "ks",
            "--shard",
            "0",
            "--type",
            "primary",
            "zone1-102",
        ],
        "already has primary",
    );
    env.fails(
        &["AddTablet", "--keyspace", "ks", "--shard", "9", "zone1-103"],
        "node doesn't exist",
    );
    let t = env.json(&["GetTablet", "zone1-101"]);
    assert_eq!(t["alias"], serde_json::json!({"cell": "zone1", "uid": 101}));
    assert_eq!(t["type"], "REPLICA");
    assert_eq!(t["db_name_override"], "", "every field is printed");
    let compact = env.json(&["--compact", "GetTablet", "zone1-101"]);
    assert_eq!(compact["type"], "REPLICA");
    assert!(compact.get("db_name_override").is_none(), "{compact}");
    let awk = env.ok(&["GetTablets", "--keyspace", "ks", "--tablet-type", "replica"]);
    assert_eq!(
        awk,
        "zone1-0000000101 ks 0 replica localhost:15000 localhost:3306 [role: \"a\"] <null>\n"
    );
    let list = env.json(&["GetTablets", "--format", "json"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let repl = env.json(&["GetShardReplication", "ks/0"]);
    assert_eq!(
        repl["shard_replication_by_cell"]["zone1"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    env.ok(&["ShardReplicationAdd", "ks/0", "zone1-999"]);
    assert_eq!(
        env.ok(&["ShardReplicationFix", "zone1", "ks/0"]),
        "NOT_FOUND has been fixed for zone1-0000000999.\n"
    );
    assert_eq!(
        env.ok(&["ShardReplicationFix", "zone1", "ks/0"]),
        "All nodes in the replication graph are valid.\n"
    );
    env.ok(&["ShardReplicationRemove", "ks/0", "zone1-101"]);
    env.ok(&["ShardReplicationAdd", "ks/0", "zone1-101"]);
    env.fails(&["DeleteTablets", "zone1-100"], "is a primary");
    assert_eq!(
        env.ok(&["DeleteTablets", "zone1-101"]),
        "Successfully deleted 1 tablets\n"
    );
    env.ok(&["DeleteTablets", "--allow-primary", "zone1-100"]);
    assert_eq!(env.ok(&["GetTablets"]), "");
    assert!(env.json(&["GetShard", "ks/0"])["shard"]["primary_alias"].is_null());
}

#[test]
fn serving_graph_vschema_and_rules() {
    let env = Env::new();
    env.with_cell();
    env.ok(&["CreateKeyspace", "ks"]);
    env.ok(&["CreateShard", "ks/-80"]);
    env.ok(&["CreateShard", "ks/80-"]);
    env.ok(&["RebuildKeyspaceGraph", "ks"]);
    let names = env.json(&["GetSrvKeyspaceNames"]);
    assert_eq!(names["zone1"]["names"], serde_json::json!(["ks"]));
    let srv = env.json(&["GetSrvKeyspaces", "ks"]);
    assert_eq!(srv["zone1"]["partitions"][0]["served_type"], 1);
    let vschema = r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}}, "tables": {"t": {"column_vindexes": [{"column": "id", "name": "hash"}]}}}"#;
    env.fails(
        &[
            "ApplyVSchema",
            "--vschema",
            r#"{"tables": {"t": {"column_vindexes": [{"column": "id", "name": "nope"}]}}}"#,
            "ks",
        ],
        "vindex nope which is not defined",
    );
    env.fails(
        &["ApplyVSchema", "--vschema", "{not json", "ks"],
        "invalid vschema.Keyspace JSON",
    );
    let dry = env.ok(&["ApplyVSchema", "--dry-run", "--vschema", vschema, "ks"]);
    assert!(dry.starts_with("New VSchema object:"), "{dry}");
    assert_eq!(
        env.json(&["GetVSchema", "ks"])["sharded"],
        Value::Bool(false),
        "a dry run writes nothing"
    );
    env.ok(&["ApplyVSchema", "--vschema", vschema, "ks"]);
    assert_eq!(
        env.json(&["GetSrvVSchema", "zone1"])["keyspaces"]["ks"]["sharded"],
        Value::Bool(true)
    );
    let rules = r#"{"rules": [{"from_table": "a", "to_tables": ["ks.a"]}]}"#;
    env.ok(&["ApplyRoutingRules", "--rules", rules]);
    assert_eq!(
        env.json(&["GetRoutingRules"])["rules"][0]["from_table"],
        "a"
    );
    std::fs::write(
        env.path().join("srr.json"),
        r#"{"rules": [{"from_keyspace": "a", "to_keyspace": "ks", "shard": "-80"}]}"#,
    )
    .unwrap();
    env.ok(&["ApplyShardRoutingRules", "--rules-file", "srr.json"]);
    assert_eq!(
        env.json(&["GetShardRoutingRules"])["rules"][0]["shard"],
        "-80"
    );
    env.ok(&[
        "ApplyKeyspaceRoutingRules",
        "--rules",
        r#"{"rules": [{"from_keyspace": "x", "to_keyspace": "ks"}]}"#,
    ]);
    assert_eq!(
        env.json(&["GetKeyspaceRoutingRules"])["rules"][0]["from_keyspace"],
        "x"
    );
    assert_eq!(
        env.json(&["GetMirrorRules"])["rules"],
        serde_json::json!([])
    );
    let srv_vschema = env.json(&["GetSrvVSchemas"]);
    assert_eq!(
        srv_vschema["zone1"]["keyspace_routing_rules"]["rules"][0]["to_keyspace"],
        "ks"
    );
    assert_eq!(
        env.ok(&["RebuildVSchemaGraph"]),
        "RebuildVSchemaGraph: ok\n"
    );
    env.ok(&["DeleteSrvVSchema", "zone1"]);
    env.fails(&["GetSrvVSchema", "zone1"], "node doesn't exist");
    let root = env.json(&["GetTopologyPath", "/"]);
    assert_eq!(root["children"], serde_json::json!(["global", "zone1"]));
    let ks_dir = env.json(&["GetTopologyPath", "/global/keyspaces"]);
    assert_eq!(ks_dir["children"], serde_json::json!(["ks"]));
    let shard = env.json(&[
        "GetTopologyPath",
        "--data-as-json",
        "/global/keyspaces/ks/shards/-80/Shard",
    ]);
    assert_eq!(
        shard["isPrimaryServing"],
        Value::Bool(true),
        "protojson.Marshal names"
    );
    std::fs::write(env.path().join("meta"), b"hello").unwrap();
    env.ok(&["WriteTopologyPath", "/metadata/greeting", "meta"]);
    assert_eq!(env.ok(&["cat", "/metadata/greeting"]), "hello");
    // The shards have no primary tablet: Validate reports it as Vitess does, exit status 1.
    env.cmd()
        .args(["Validate"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("- no primary for shard ks/-80\n"));
}

#[test]
fn raw_access_verbs() {
    let env = Env::new();
    env.with_cell();
    env.ok(&["CreateKeyspace", "ks1"]);
    env.ok(&["CreateKeyspace", "ks2"]);
    let cat = env.ok(&[
        "TopoCat",
        "--long",
        "--decode-proto",
        "/keyspaces/*/Keyspace",
    ]);
    assert_eq!(cat.matches("path=/keyspaces/").count(), 2, "{cat}");
    let json = env.json(&[
        "TopoCat",
        "--decode-proto-json",
        "--long",
        "/keyspaces/ks?/Keyspace",
    ]);
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["__path"], "/keyspaces/ks1/Keyspace");
    env.fails(
        &["TopoCat", "/keyspaces/zz*/Keyspace"],
        "node doesn't exist",
    );
    let ls = env.ok(&["TopoLs", "-R", "/keyspaces"]);
    assert!(ls.contains("/keyspaces/ks1/Keyspace\n"), "{ls}");
    assert_eq!(env.ok(&["TopoLs", "/keyspaces"]), "ks1\nks2\n");
    env.ok(&["TopoCp", "/keyspaces/ks1/Keyspace", "ks1.pb"]);
    env.ok(&["TopoCp", "--to_topo", "ks1.pb", "/keyspaces/ks3/Keyspace"]);
    assert!(env.ok(&["GetKeyspace", "ks3"]).starts_with("name:\"ks3\" "));
    env.ok(&["touch", "/metadata/marker"]);
    env.ok(&["touch", "/metadata/marker"]);
    assert!(env.ok(&["stat", "/metadata/marker"]).contains("size: 0"));
    env.ok(&["wait", "--timeout", "2s", "/metadata/marker"]);
    env.fails(
        &["wait", "--timeout", "300ms", "/metadata/absent"],
        "did not exist",
    );
    env.fails(&["TopoRm", "-r", "--yes", "/metadata"], "pass --force");
    env.fails(
        &["rm", "-r", "/"],
        "refusing to delete everything under \"/\"",
    );
    env.ok(&["touch", "/metadata/more/inner"]);
    env.fails(&["rm", "-r", "/metadata/more"], "pass --yes");
    env.ok(&["stat", "/metadata/more/inner"]);
    env.ok(&["rm", "-r", "--yes", "/metadata/more"]);
    env.fails(&["stat", "/metadata/more/inner"], "node doesn't exist");
    env.ok(&["TopoRm", "-r", "--force", "--yes", "/metadata"]);
    env.fails(&["stat", "/metadata/marker"], "node doesn't exist");
    env.ok(&["rm", "/keyspaces/ks3/Keyspace"]);
    // `lock` runs the command under the lock and exits with its code.
    env.cmd()
        .args([
            "lock",
            "keyspaces/ks1",
            "--",
            "sh",
            "-c",
            "test -n \"$TOPO_LOCK_FENCING_TOKEN\" && exit 3",
        ])
        .assert()
        .code(3);
    env.fails(
        &["lock", "keyspaces/none", "--", "true"],
        "node doesn't exist",
    );
}

#[test]
fn backup_restore_and_topo2topo() {
    let env = Env::new();
    env.ok(&["demo"]);
    env.ok(&["backup", "b.json"]);
    assert!(env
        .ok(&["verify-backup", "b.json"])
        .contains("is a valid backup"));
    // A damaged backup is refused.
    let text = std::fs::read_to_string(env.path().join("b.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["cells"][0]["entries"][0]["value"] = Value::String("!!!".into());
    std::fs::write(env.path().join("bad.json"), v.to_string()).unwrap();
    env.fails(&["verify-backup", "bad.json"], "bad base64");
    env.fails(&["restore", "b.json"], "not empty");
    let other = Env::new();
    let backup = env.path().join("b.json");
    let restored = other.ok(&["restore", backup.to_str().unwrap()]);
    assert!(restored.contains("Restored and verified"), "{restored}");
    assert_eq!(other.ok(&["GetTablets"]).lines().count(), 12);
    let copy_db = env.path().join("copy.db");
    let to = [
        "--to-implementation",
        "local",
        "--to-server",
        copy_db.to_str().unwrap(),
        "--to-root",
        "/vitess/global",
    ];
    env.fails(
        &[&["topo2topo"][..], &to, &["--do-tablets"]].concat(),
        "destination has no cell",
    );
    let mut args = vec!["topo2topo"];
    args.extend(to);
    args.extend(["--all", "--do-cell-info"]);
    let out = env.ok(&args);
    assert!(out.starts_with("Copied "), "{out}");
    let mut cmp = vec!["topo2topo"];
    cmp.extend(to);
    cmp.extend(["--all", "--compare"]);
    assert!(env.ok(&cmp).starts_with("Topologies are in sync"));
}

#[test]
fn errors_are_clear_and_write_nothing() {
    let env = Env::new();
    env.fails(&["CreateKeyspace", "../escape"], "invalid character");
    env.fails(&["CreateShard", "ks/foo-bar"], "not hex");
    env.fails(&["GetTablet", "nocell"], "invalid tablet alias");
    env.fails(
        &["--topo-implementation", "nope", "GetKeyspaces"],
        "compiled in: etcd2, local, memory, zk2",
    );
    env.fails(&["GetShard", "ks"], "expected <keyspace>/<shard>");
    assert_eq!(env.ok(&["TopoLs", "-R", "/"]), "", "nothing was written");
    // Command names match in any case; underscore flag spellings work.
    assert_eq!(env.ok(&["getkeyspaces"]).trim(), "[]");
    env.ok(&["--topo_global_root", "/other/global", "GetCellInfoNames"]);
    env.cmd()
        .args(["completion", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("topo"));
    env.cmd()
        .args(["GetKeyspace", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Example"));
}

/// Vitess's ZooKeeper TLS and concurrency flags are taken in both spellings and reach the
/// backend: an unreadable CA file fails at open, naming flag and file (never plain TCP).
#[test]
fn zk_tls_flags_reach_the_backend() {
    let env = Env::new();
    for flag in ["--topo-zk-tls-ca", "--topo_zk_tls_ca"] {
        env.fails(
            &[
                "--topo-implementation",
                "zk2",
                "--topo-global-server-address",
                "127.0.0.1:1",
                flag,
                "/nonexistent/ca.pem",
                "--topo_zk_max_concurrency",
                "8",
                "GetCellInfoNames",
            ],
            "--topo-zk-tls-ca /nonexistent/ca.pem",
        );
    }
    env.fails(
        &["--topo-zk-max-concurrency", "0", "GetCellInfoNames"],
        "--topo-zk-max-concurrency",
    );
}

/// Records written from the golden vectors print exactly the vectors' JSON. The cases are
/// taken by record type from the folder's manifest, whatever their names.
#[test]
fn golden_records_print_as_vtctldclient_does() {
    let env = Env::new();
    env.with_cell();
    let dir = topo_proto::golden::dir();
    let cases = topo_proto::golden::manifest(&dir).unwrap_or_else(|e| panic!("{e}"));
    // Where each record type is written, the command that prints it, the field of the
    // printed JSON that holds the record ("" for the whole output), and the JSON form the
    // verb prints (protojson for a message, Go's encoding/json inside a plain Go map).
    use topo_proto::json::JsonForm;
    let targets = [
        (
            "topodata.Shard",
            "global",
            "/keyspaces/ks/shards/-80/Shard",
            vec!["GetShard", "ks/-80"],
            "shard",
            JsonForm::Full,
        ),
        (
            "topodata.Keyspace",
            "global",
            "/keyspaces/ks/Keyspace",
            // CreateKeyspace --force prints the existing record (GetKeyspace prints text).
            vec!["CreateKeyspace", "--force", "ks"],
            "keyspace",
            JsonForm::Full,
        ),
        (
            "topodata.Tablet",
            "zone1",
            "/tablets/zone1-0000000100/Tablet",
            vec!["GetTablet", "zone1-100"],
            "",
            JsonForm::Full,
        ),
        (
            "topodata.SrvKeyspace",
            "zone1",
            "/keyspaces/ks/SrvKeyspace",
            vec!["GetSrvKeyspaces", "ks", "zone1"],
            "zone1",
            JsonForm::Go,
        ),
    ];
    for (type_name, cell, path, command, field, form) in targets {
        let of_type: Vec<_> = cases.iter().filter(|c| c.type_name == type_name).collect();
        assert!(
            !of_type.is_empty(),
            "{} has no {type_name} case",
            dir.display()
        );
        for case in of_type {
            eprintln!(
                "golden case {} ({type_name}) through {command:?}",
                case.name
            );
            let pb = dir.join(format!("{}.pb", case.name));
            env.ok(&[
                "WriteTopologyPath",
                "--cell",
                cell,
                path,
                pb.to_str().unwrap(),
            ]);
            let got = env.json(&command);
            let got = if field.is_empty() {
                got
            } else {
                got[field].clone()
            };
            // The vectors' JSON is Go's protojson in the enum-number form; it must decode to
            // the vector's bytes, which are then rendered in the verb's form.
            let golden_json =
                std::fs::read_to_string(dir.join(format!("{}.json", case.name))).unwrap();
            let bytes = topo_proto::json::json_to_bytes(&golden_json, type_name).unwrap();
            let want = topo_proto::json::to_json(&bytes, type_name, form).unwrap();
            assert_eq!(normalize(got), normalize(want), "{}", case.name);
        }
    }
}

fn readme() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join("README.md")).expect("README.md")
}

/// The README's text from `heading` to the next heading of the same level.
fn readme_section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let level = heading.split(' ').next().unwrap_or("##");
    readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no {heading:?}"))
        .split(&format!("\n{level} "))
        .next()
        .unwrap_or_default()
}

/// The command lines (comments dropped) of the first ```sh block of `text`.
fn first_sh_block(text: &str) -> Vec<&str> {
    let block = text
        .split("```sh")
        .nth(1)
        .expect("a ```sh block")
        .split("```")
        .next()
        .unwrap_or_default();
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Every command of the README's tour of `topo` runs, in order, as written (through `sh`,
/// so quoting is the reader's), and leaves what it promises.
#[test]
fn readme_tour_commands_work() {
    let readme = readme();
    let tour = first_sh_block(readme_section(&readme, "## The `topo` command"));
    assert!(tour.len() > 5, "{tour:?}");
    let env = Env::new();
    let bin = assert_cmd::cargo::cargo_bin("topo");
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in &tour {
        assert!(line.starts_with("topo "), "{line}");
        let out = std::process::Command::new("sh")
            .args(["-c", line])
            .current_dir(env.path())
            .env("PATH", &path)
            .env_remove("TOPO_IMPLEMENTATION")
            .env_remove("TOPO_GLOBAL_SERVER_ADDRESS")
            .env_remove("TOPO_GLOBAL_ROOT")
            .output()
            .expect("run sh");
        assert!(
            out.status.success(),
            "README command {line:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let srv = env.json(&["GetSrvKeyspaces", "orders", "zone3"]);
    let shards: Vec<&str> = srv["zone3"]["partitions"][0]["shard_references"]
        .as_array()
        .expect("shard references")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(shards, ["-80", "80-"]);
    assert_eq!(
        env.ok(&["GetTablets", "--keyspace", "orders", "--shard", "-80"])
            .split(' ')
            .next(),
        Some("zone3-0000000300")
    );
}

/// The README's quick start is exactly the two scripts, and the demo script runs `topo demo`.
#[test]
fn newcomer_commands_are_the_readme_ones() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = readme();
    let quick = readme_section(&readme, "## Quick start");
    assert_eq!(first_sh_block(quick), ["scripts/demo", "scripts/test"]);
    let demo = std::fs::read_to_string(root.join("scripts/demo")).unwrap();
    assert!(
        demo.contains("cargo build --release --quiet -p topo") && demo.contains("\"$topo\" demo"),
        "{demo}"
    );
    // What the demo script runs, run here the way a newcomer's machine would.
    let env = Env::new();
    env.ok(&["demo"]);
    assert!(env.path().join("toposphere.db").exists());
}

/// `watch` prints the current value, then each change; cell removal verbs; `Validate`
/// exits non-zero on an inconsistent topology.
#[test]
fn watch_removal_and_validate() {
    use std::io::{BufRead, BufReader};
    let env = Env::new();
    env.ok(&["demo"]);
    env.ok(&["touch", "/metadata/state"]);
    let mut watch = std::process::Command::new(assert_cmd::cargo::cargo_bin("topo"))
        .current_dir(env.path())
        .args(["watch", "/metadata/state"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("version="), "{first}");
    std::fs::write(env.path().join("v"), b"changed").unwrap();
    env.ok(&["TopoCp", "--to_topo", "v", "/metadata/state"]);
    let second = lines.next().unwrap().unwrap();
    assert!(second.ends_with("changed"), "{second}");
    watch.kill().unwrap();
    let _ = watch.wait();

    let ls = env.ok(&["TopoLs", "-l", "/keyspaces/customer"]);
    assert!(
        ls.contains("Keyspace") && ls.lines().any(|l| l.starts_with("d")),
        "{ls}"
    );
    env.fails(
        &["RemoveShardCell", "customer/-80", "zone1"],
        "has its primary in cell zone1",
    );
    env.fails(
        &["RemoveShardCell", "customer/-80", "zone2"],
        "use --recursive",
    );
    assert_eq!(
        env.ok(&["RemoveShardCell", "--recursive", "customer/-80", "zone2"]),
        "Successfully removed cell zone2 from shard customer/-80\n"
    );
    env.ok(&["RemoveKeyspaceCell", "--recursive", "customer", "zone2"]);
    assert_eq!(
        env.json(&["GetSrvKeyspaces", "customer", "zone2"])["zone2"],
        Value::Null
    );
    assert_eq!(
        env.ok(&["GetTablets", "--cell", "zone2", "--keyspace", "customer"]),
        ""
    );

    // A replication entry for a tablet that does not exist makes Validate fail.
    env.ok(&["ShardReplicationAdd", "commerce/0", "zone1-4242"]);
    env.cmd()
        .args(["Validate"])
        .assert()
        .code(1)
        .stdout(predicate::str::starts_with("Validation results:\n"))
        .stdout(predicate::str::contains(
            "\nFor commerce:\n\nFor commerce/0:\n- tablet zone1-0000004242 not found in map\n",
        ))
        .stderr(predicate::str::contains(
            "some issues were found during validation; see above for details",
        ));
}
