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
    topo_testkit::without_topo_env(&mut Command::new(env!("CARGO_BIN_EXE_topo")))
        .current_dir(dir)
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

/// The cell every fixed toposphere starts with.
const ADD_ZONE1: &[&str] = &[
    "AddCellInfo",
    "--root",
    "/vitess/zone1",
    "--server-address",
    "toposphere.db",
    "zone1",
];

/// The fixed toposphere, built with `topo` on the embedded store before any verb is checked.
const SETUP: &[&[&str]] = &[
    ADD_ZONE1,
    &[
        "AddCellInfo",
        "-r",
        "/vitess/zone2",
        "-a",
        "toposphere.db",
        "zone2",
    ],
    &["AddCellsAlias", "-c", "zone1,zone2", "region1"],
    &[
        "CreateKeyspace",
        "--durability-policy",
        "semi_sync",
        "commerce",
    ],
    &["CreateKeyspace", "customer"],
    &["CreateShard", "commerce/0"],
    &["CreateShard", "customer/-80"],
    &["CreateShard", "customer/80-"],
    &[
        "AddTablet",
        "--keyspace",
        "commerce",
        "--shard",
        "0",
        "--type",
        "replica",
        "--hostname",
        "db1",
        "--port",
        "15101",
        "--grpc-port",
        "16101",
        "--tag",
        "role=a",
        "--tag",
        "note=x \"y\"",
        "zone1-101",
    ],
    &[
        "AddTablet",
        "--keyspace",
        "customer",
        "--shard",
        "-80",
        "--type",
        "rdonly",
        "--hostname",
        "db2",
        "zone2-201",
    ],
    &["RebuildKeyspaceGraph", "commerce", "customer"],
    &[
        "ApplyVSchema",
        "--vschema",
        r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}}, "tables": {"corder": {"column_vindexes": [{"column": "id", "name": "hash"}]}}}"#,
        "customer",
    ],
    &[
        "ApplyRoutingRules",
        "--rules",
        r#"{"rules": [{"from_table": "a", "to_tables": ["commerce.a"]}]}"#,
    ],
];

/// Each checked verb, in order (later ones change the toposphere): its fixture file and its
/// arguments. An empty name is a step run only for its effect (it must succeed).
const CHECKED: &[(&str, &[&str])] = &[
    ("GetCellInfoNames", &["GetCellInfoNames"]),
    ("GetCellInfo", &["GetCellInfo", "zone1"]),
    ("GetCellsAliases", &["GetCellsAliases"]),
    ("GetKeyspace", &["GetKeyspace", "commerce"]),
    ("GetKeyspaces", &["GetKeyspaces"]),
    (
        "FindAllShardsInKeyspace",
        &["FindAllShardsInKeyspace", "customer"],
    ),
    ("GetShard", &["GetShard", "commerce/0"]),
    ("GetShard.compact", &["--compact", "GetShard", "commerce/0"]),
    ("GetTablet", &["GetTablet", "zone1-101"]),
    ("GetTablets", &["GetTablets"]),
    (
        "GetTablets.json",
        &["GetTablets", "--format", "json", "--keyspace", "commerce"],
    ),
    (
        "GetShardReplication",
        &["GetShardReplication", "commerce/0"],
    ),
    ("GetSrvKeyspaceNames", &["GetSrvKeyspaceNames"]),
    ("GetSrvKeyspaces", &["GetSrvKeyspaces", "commerce", "zone1"]),
    ("GetSrvVSchema", &["GetSrvVSchema", "zone1"]),
    ("GetSrvVSchemas", &["GetSrvVSchemas", "zone2"]),
    ("GetVSchema", &["GetVSchema", "customer"]),
    ("GetRoutingRules", &["GetRoutingRules"]),
    ("GetShardRoutingRules", &["GetShardRoutingRules"]),
    ("GetKeyspaceRoutingRules", &["GetKeyspaceRoutingRules"]),
    ("GetMirrorRules", &["GetMirrorRules"]),
    ("GetTopologyPath.root", &["GetTopologyPath", "/"]),
    (
        "GetTopologyPath.dir",
        &["GetTopologyPath", "/global/keyspaces"],
    ),
    (
        "GetTopologyPath.file",
        &["GetTopologyPath", "/global/keyspaces/commerce/Keyspace"],
    ),
    (
        "GetTopologyPath.json",
        &[
            "GetTopologyPath",
            "--data-as-json",
            "/global/keyspaces/commerce/Keyspace",
        ],
    ),
    ("Validate", &["Validate"]),
    ("ValidateKeyspace", &["ValidateKeyspace", "customer"]),
    ("ValidateShard", &["ValidateShard", "commerce/0"]),
    ("GenerateShardRanges", &["GenerateShardRanges", "4"]),
    (
        "SetKeyspaceDurabilityPolicy",
        &[
            "SetKeyspaceDurabilityPolicy",
            "--durability-policy",
            "none",
            "commerce",
        ],
    ),
    (
        "SetShardIsPrimaryServing",
        &["SetShardIsPrimaryServing", "commerce/0", "false"],
    ),
    (
        "SetShardTabletControl",
        &[
            "SetShardTabletControl",
            "--denied-tables",
            "t1,t2",
            "-c",
            "zone1",
            "commerce/0",
            "rdonly",
        ],
    ),
    (
        "SourceShardAdd",
        &[
            "SourceShardAdd",
            "--tables",
            "t1",
            "customer/-80",
            "1",
            "commerce/0",
        ],
    ),
    (
        "SourceShardAdd.exists",
        &["SourceShardAdd", "customer/-80", "1", "commerce/0"],
    ),
    (
        "SourceShardDelete",
        &["SourceShardDelete", "customer/-80", "1"],
    ),
    (
        "SourceShardDelete.none",
        &["SourceShardDelete", "customer/-80", "1"],
    ),
    (
        "ApplyRoutingRules.dry-run",
        &[
            "ApplyRoutingRules",
            "--dry-run",
            "-c",
            "zone1,zone2",
            "-r",
            r#"{"rules": [{"from_table": "b", "to_tables": ["customer.b"]}]}"#,
        ],
    ),
    (
        "ApplyRoutingRules",
        &[
            "ApplyRoutingRules",
            "--skip-rebuild",
            "-r",
            r#"{"rules": [{"from_table": "b", "to_tables": ["customer.b"]}]}"#,
        ],
    ),
    (
        "ApplyShardRoutingRules",
        &[
            "ApplyShardRoutingRules",
            "-r",
            r#"{"rules": [{"from_keyspace": "commerce", "to_keyspace": "customer", "shard": "-80"}]}"#,
        ],
    ),
    (
        "ApplyKeyspaceRoutingRules",
        &[
            "ApplyKeyspaceRoutingRules",
            "-r",
            r#"{"rules": [{"from_keyspace": "old", "to_keyspace": "commerce"}]}"#,
        ],
    ),
    (
        "ApplyVSchema",
        &[
            "ApplyVSchema",
            "--dry-run",
            "--vschema",
            r#"{"sharded": false}"#,
            "commerce",
        ],
    ),
    (
        "UpdateCellInfo",
        &[
            "UpdateCellInfo",
            "-r",
            "/vitess/zone4",
            "-a",
            "toposphere.db",
            "zone4",
        ],
    ),
    (
        "UpdateCellsAlias",
        &["UpdateCellsAlias", "-c", "zone1", "region1"],
    ),
    (
        "AddCellsAlias",
        &["AddCellsAlias", "-c", "zone2", "region2"],
    ),
    ("DeleteCellsAlias", &["DeleteCellsAlias", "region2"]),
    ("CreateKeyspace", &["CreateKeyspace", "orders"]),
    ("CreateShard", &["CreateShard", "-p", "inventory/0"]),
    (
        "RebuildVSchemaGraph",
        &["RebuildVSchemaGraph", "-c", "zone1"],
    ),
    (
        "RebuildKeyspaceGraph",
        &["RebuildKeyspaceGraph", "inventory"],
    ),
    (
        "UpdateThrottlerConfig",
        &[
            "UpdateThrottlerConfig",
            "--enable",
            "--threshold",
            "2",
            "commerce",
        ],
    ),
    (
        "ShardReplicationFix",
        &["ShardReplicationFix", "zone1", "commerce/0"],
    ),
    ("DeleteTablets", &["DeleteTablets", "zone2-201"]),
    (
        "DeleteShards",
        &["DeleteShards", "--even-if-serving", "customer/80-"],
    ),
    (
        "RemoveShardCell",
        &["RemoveShardCell", "customer/-80", "zone2"],
    ),
    (
        "RemoveKeyspaceCell",
        &["RemoveKeyspaceCell", "inventory", "zone2"],
    ),
    ("DeleteKeyspace", &["DeleteKeyspace", "-r", "orders"]),
    ("DeleteSrvVSchema", &["DeleteSrvVSchema", "zone2"]),
    (
        "GetSrvVSchemas.missing",
        &["GetSrvVSchemas", "zone2", "nosuchcell"],
    ),
    (
        "AddCellInfo",
        &["AddCellInfo", "-r", "/vitess/zone3", "zone3"],
    ),
    ("DeleteCellInfo", &["DeleteCellInfo", "-f", "zone3"]),
    // A valid toposphere: one shard whose primary is the shard record's.
    ("", &["DeleteKeyspace", "-r", "commerce"]),
    ("", &["DeleteKeyspace", "-r", "customer"]),
    ("", &["DeleteKeyspace", "-r", "inventory"]),
    (
        "",
        &[
            "AddTablet",
            "--keyspace",
            "valid",
            "--shard",
            "0",
            "--type",
            "primary",
            "--create-shard-and-keyspace",
            "zone1-100",
        ],
    ),
    ("Validate.clean", &["Validate"]),
    ("ValidateKeyspace.clean", &["ValidateKeyspace", "valid"]),
    ("ValidateShard.clean", &["ValidateShard", "valid/0"]),
];

/// An expected file: its `#` header (the Vitess source it was derived from, and `# exit N`
/// when the verb fails), then the exact stdout.
struct Expected {
    exit: i32,
    stdout: String,
}

fn expected(name: &str) -> Expected {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vtctldclient")
        .join(format!("{name}.out"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut exit = 0;
    let mut body = text.as_str();
    while let Some(line) = body.strip_prefix('#') {
        let (header, rest) = line.split_once('\n').unwrap_or((line, ""));
        if let Some(code) = header.trim().strip_prefix("exit ") {
            exit = code.parse().expect("exit status in header");
        }
        body = rest;
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("# go/cmd/vtctldclient/")),
        "{} names no Vitess source line",
        path.display()
    );
    Expected {
        exit,
        stdout: body.to_string(),
    }
}

/// Every checked verb prints exactly its expected file, on the fixed toposphere.
#[test]
fn each_verb_prints_what_vtctldclient_prints() {
    let dir = tempfile::tempdir().unwrap();
    for step in SETUP {
        ok(dir.path(), step);
    }
    let mut differences = Vec::new();
    for (name, args) in CHECKED {
        if name.is_empty() {
            ok(dir.path(), args);
            continue;
        }
        let want = expected(name);
        let out = topo(dir.path(), args);
        let got = String::from_utf8_lossy(&out.stdout);
        if out.status.code() != Some(want.exit) || got != want.stdout {
            differences.push(format!(
                "{name}: topo {args:?} exited {:?} (want {}) and printed:\n{got}--- want:\n{}--- stderr:\n{}",
                out.status.code(),
                want.exit,
                want.stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
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

#[test]
fn nothing_listening_is_connection_refused_within_about_a_second() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    for implementation in ["etcd2", "zk2"] {
        let started = Instant::now();
        let err = exits(
            dir.path(),
            1,
            &[
                "--topo-implementation",
                implementation,
                "--topo-global-server-address",
                &address,
                "GetKeyspaces",
            ],
        );
        let took = started.elapsed();
        assert!(
            err.contains("connection refused"),
            "{implementation}: {err}"
        );
        assert!(
            !err.contains("deadline exceeded"),
            "{implementation}: {err}"
        );
        // About a second; the slack is for a loaded machine, far below the 15 s timeout.
        assert!(
            took < Duration::from_secs(4),
            "{implementation} took {took:?}"
        );
    }
}

#[test]
fn init_tablet_takes_vtctl_flags() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), ADD_ZONE1);
    let out = ok(
        dir.path(),
        &[
            "InitTablet",
            "--parent",
            "--keyspace",
            "ks",
            "--shard",
            "-80",
            "--hostname",
            "h1",
            "--mysql_host",
            "m1",
            "--mysql_port",
            "3307",
            "--port",
            "15101",
            "--grpc_port",
            "16101",
            "--db_name_override",
            "vt_ks",
            "--tags",
            "a:1,b:x:y",
            "zone1-101",
            "rdonly",
        ],
    );
    assert_eq!(out, "", "vtctl's InitTablet prints nothing");
    let tablet = ok(dir.path(), &["--compact", "GetTablet", "zone1-101"]);
    let t: serde_json::Value = serde_json::from_str(&tablet).unwrap();
    assert_eq!(t["type"], "RDONLY");
    assert_eq!(t["shard"], "-80");
    assert_eq!(t["mysql_hostname"], "m1");
    assert_eq!(t["mysql_port"], 3307);
    assert_eq!(t["db_name_override"], "vt_ks");
    assert_eq!(
        t["port_map"],
        serde_json::json!({"grpc": 16101, "vt": 15101})
    );
    assert_eq!(t["tags"], serde_json::json!({"a": "1", "b": "x:y"}));
    let err = exits(
        dir.path(),
        1,
        &[
            "InitTablet",
            "--keyspace",
            "ks",
            "--shard",
            "-80",
            "--tags",
            "nocolon",
            "zone1-102",
            "replica",
        ],
    );
    assert!(
        err.contains("--tags \"nocolon\": expected key:value"),
        "{err}"
    );
}

#[test]
fn snapshot_keyspace_refuses_a_durability_policy_as_vtctldclient() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["CreateKeyspace", "base"]);
    let err = exits(
        dir.path(),
        1,
        &[
            "CreateKeyspace",
            "--type",
            "SNAPSHOT",
            "--base-keyspace",
            "base",
            "--snapshot-timestamp",
            "2020-01-01T00:00:00Z",
            "--durability-policy",
            "semi_sync",
            "snap",
        ],
    );
    assert!(
        err.contains("--durability-policy cannot be specified while creating a snapshot keyspace"),
        "{err}"
    );
    exits(dir.path(), 1, &["GetKeyspace", "snap"]);
}

#[test]
fn set_shard_tablet_control_disables_the_query_service_in_srv_keyspace() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), ADD_ZONE1);
    ok(dir.path(), &["CreateShard", "-p", "ks/0"]);
    ok(dir.path(), &["RebuildKeyspaceGraph", "ks"]);
    let disabled = |dir: &Path| {
        ok(dir, &["GetSrvKeyspaces", "ks", "zone1"]).contains("\"query_service_disabled\": true")
    };
    ok(
        dir.path(),
        &[
            "SetShardTabletControl",
            "--disable-query-service",
            "ks/0",
            "replica",
        ],
    );
    assert!(disabled(dir.path()));
    ok(
        dir.path(),
        &[
            "SetShardTabletControl",
            "--disable-query-service=false",
            "ks/0",
            "replica",
        ],
    );
    assert!(!disabled(dir.path()));
}

#[test]
fn get_tablets_refuses_flag_combinations_with_vtctldclient_texts() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), ADD_ZONE1);
    for (args, text) in [
        (
            &["GetTablets", "--shard", "-80"][..],
            "--shard (= -80) cannot be passed without also passing --keyspace",
        ),
        (
            &["GetTablets", "-k", "ks", "-t", "zone1-1"][..],
            "--keyspace (= ks) cannot be passed when using --tablet-alias (= [zone1-1])",
        ),
        (
            &["GetTablets", "--format", "yaml"][..],
            "invalid output format, got yaml",
        ),
    ] {
        let err = exits(dir.path(), 1, args);
        assert!(err.contains(text), "{args:?}: {err}");
    }
    assert_eq!(ok(dir.path(), &["GetTablets", "--format", "JSON"]), "[]\n");
}

#[test]
fn update_throttler_config_applies_thresholds_as_vitess() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["CreateKeyspace", "ks"]);
    ok(
        dir.path(),
        &[
            "UpdateThrottlerConfig",
            "--enable",
            "--threshold",
            "-1",
            "ks",
        ],
    );
    let config = ok(dir.path(), &["GetKeyspace", "ks"]);
    assert!(
        config.contains("throttler_config:{enabled:true}"),
        "{config}"
    );
    ok(
        dir.path(),
        &[
            "UpdateThrottlerConfig",
            "--custom-query",
            "select 1",
            "--threshold",
            "-1",
            "ks",
        ],
    );
    let config = ok(dir.path(), &["GetKeyspace", "ks"]);
    assert!(
        config.contains("throttler_config:{enabled:true threshold:-1 custom_query:\"select 1\"}"),
        "{config}"
    );
    let err = exits(
        dir.path(),
        1,
        &["UpdateThrottlerConfig", "--enable", "--disable", "ks"],
    );
    assert!(
        err.contains("--enable and --disable are mutually exclusive"),
        "{err}"
    );
}
