//! The serving graph, VSchema and rules, topology paths, and Validate.

use std::process::ExitCode;

use serde_json::Value;
use topo_core::{Result, TopoError, Version};
use topo_proto::json::{decode_content_line, from_json};
use topo_proto::topodata::ThrottledAppRule;
use topo_proto::vschema::{self, KeyspaceRoutingRules, RoutingRules, ShardRoutingRules};
use topo_proto::vttime;
use topo_proto::Record;
use toposphere::validate::KeyspaceResults;
use toposphere::{Server, GLOBAL_CELL};

use crate::args::{Command, RulesArgs, UpdateThrottlerConfigArgs};
use crate::cmd::keyspaces::{parse_vschema, rebuild_vschema_if_cells};
use crate::cmd::{check_record_bytes, read_file};
use crate::output::{go_msg, msg, object, print, print_go};

/// The JSON text of an Apply*Rules call.
fn rules_json(a: &RulesArgs) -> Result<String> {
    match (&a.rules, &a.rules_file) {
        (Some(r), None) => Ok(r.clone()),
        (None, Some(f)) => String::from_utf8(read_file(f)?)
            .map_err(|_| TopoError::invalid(format!("{} is not UTF-8 text", f.display()))),
        _ => Err(TopoError::invalid(
            "give exactly one of --rules or --rules-file",
        )),
    }
}

/// The Apply*Rules verbs, which print slightly different texts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RulesKind {
    Routing,
    Shard,
    Keyspace,
}

impl RulesKind {
    fn name(self) -> &'static str {
        match self {
            RulesKind::Routing => "RoutingRules",
            RulesKind::Shard => "ShardRoutingRules",
            RulesKind::Keyspace => "KeyspaceRoutingRules",
        }
    }
}

/// Parses, saves (unless a dry run) and prints rules, then rebuilds the serving VSchema,
/// printing what vtctldclient prints (routing_rules.go, shard_routing_rules.go,
/// keyspace_routing_rules.go).
async fn apply_rules<M: Record>(
    ts: &Server,
    a: &RulesArgs,
    kind: RulesKind,
    compact: bool,
    save: impl AsyncFnOnce(&Server, &M) -> Result<()>,
) -> Result<()> {
    let rules: M = from_json(&rules_json(a)?)?;
    let what = kind.name();
    if a.dry_run {
        crate::out!("[DRY RUN] Would have saved new {what} object:");
        print(&msg(&rules, compact));
        if a.skip_rebuild {
            let end = if kind == RulesKind::Routing { "" } else { "." };
            crate::out!(
                "[DRY RUN] Would not have rebuilt VSchema graph, would have required operator to run RebuildVSchemaGraph for changes to take effect{end}"
            );
        } else if a.cells.is_empty() {
            crate::out!("[DRY RUN] Would have rebuilt the VSchema graph in all cells");
        } else {
            crate::out!(
                "[DRY RUN] Would have rebuilt the VSchema graph in the following cells: {}.",
                a.cells.join(", ")
            );
        }
        return Ok(());
    }
    save(ts, &rules).await?;
    if !a.skip_rebuild {
        rebuild_vschema_if_cells(ts, &a.cells).await?;
    }
    if kind == RulesKind::Keyspace {
        print(&object([(
            "keyspace_routing_rules".into(),
            msg(&rules, compact),
        )]));
        return Ok(());
    }
    crate::out!("New {what} object:");
    print(&msg(&rules, compact));
    crate::out!("{UNEXPECTED_FIELDS}");
    if a.skip_rebuild {
        if kind == RulesKind::Routing {
            crate::out!("Skipping rebuild of VSchema graph, will need to run RebuildVSchemaGraph for changes to take effect.");
        } else {
            crate::out!("Skipping rebuild of VSchema graph as requested, you will need to run RebuildVSchemaGraph for the changes to take effect.");
        }
    }
    Ok(())
}

/// The line vtctldclient prints after an applied VSchema or rules object.
const UNEXPECTED_FIELDS: &str =
    "If this is not what you expected, check the input data (as JSON parsing will skip unexpected fields).";

/// Checks that every vindex a table uses is defined (a small part of Vitess's
/// `BuildKeyspace`).
fn check_vschema(ks: &str, vs: &vschema::Keyspace) -> Result<()> {
    for (table, t) in &vs.tables {
        for cv in &t.column_vindexes {
            if !vs.vindexes.contains_key(&cv.name) {
                return Err(TopoError::invalid(format!(
                    "vschema of keyspace {ks}: table {table} uses vindex {} which is not defined",
                    cv.name
                )));
            }
        }
    }
    Ok(())
}

/// vtctldata.TopologyCell as `MarshalJSONPretty` prints it (topology.go): enum names; every
/// field unless `--compact`.
fn topology_cell(
    name: String,
    path: &str,
    data: String,
    children: Vec<String>,
    version: i64,
    compact: bool,
) -> Value {
    let fields = [
        ("name", Value::String(name)),
        ("path", Value::String(path.to_string())),
        ("data", Value::String(data)),
        (
            "children",
            Value::Array(children.into_iter().map(Value::String).collect()),
        ),
        ("version", Value::String(version.to_string())),
    ];
    let empty = |v: &Value| match v {
        Value::String(s) => s.is_empty() || s == "0",
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    object(
        fields
            .into_iter()
            .filter(|(_, v)| !compact || !empty(v))
            .map(|(k, v)| (k.to_string(), v)),
    )
}

/// GetTopologyPath as vtctldclient runs it with the server's `getTopologyCell`: a file's
/// decoded data (prototext, or JSON with --data-as-json) and version, or a directory's
/// children; `/` lists `global` and the cells.
async fn get_topology_path(
    ts: &Server,
    path: &str,
    version: Option<i64>,
    data_as_json: bool,
    compact: bool,
) -> Result<()> {
    let trimmed = path.trim_matches('/');
    let cell = if trimmed.is_empty() {
        let mut children = vec![GLOBAL_CELL.to_string()];
        children.extend(ts.get_cell_info_names().await?);
        topology_cell(String::new(), path, String::new(), children, 0, compact)
    } else {
        let (cell, rel) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        let conn = ts.conn_for_cell(cell).await?;
        let rel = format!("/{rel}");
        let name = rel.rsplit('/').next().unwrap_or_default().to_string();
        let read = match version {
            Some(v) => conn
                .get_version(&rel, &Version::new(v))
                .await
                .map(|b| (b, Version::new(v))),
            None => conn.get(&rel).await,
        };
        match read {
            Ok((bytes, v)) => {
                let data = decode_content_line(&rel, &bytes, data_as_json)?;
                if data_as_json {
                    crate::out!("{data}");
                    return Ok(());
                }
                topology_cell(name, path, data, vec![], v.raw(), compact)
            }
            Err(e) if e.is_no_node() => {
                let children = conn.list_dir(&rel, false).await?;
                let names = children.into_iter().map(|c| c.name).collect();
                topology_cell(name, path, String::new(), names, 0, compact)
            }
            Err(e) => return Err(e),
        }
    };
    if data_as_json {
        return Err(TopoError::invalid(format!("no data found for path {path}")));
    }
    print(&cell);
    Ok(())
}

/// What --ping-tablets would need, refused.
fn refuse_ping_tablets(ping_tablets: bool) -> Result<()> {
    if ping_tablets {
        return Err(TopoError::invalid(
            "--ping-tablets: topo reads only the topology and cannot reach tablets; run the \
             verb without it for the topology checks, and vtctldclient --server <vtctld> for \
             the tablet checks",
        ));
    }
    Ok(())
}

/// `- <problem>` lines, as vtctldclient's validate.go writes them.
fn result_lines(results: &[String], out: &mut String) {
    for r in results {
        out.push_str(&format!("- {r}\n"));
    }
}

/// validate.go's `consumeKeyspaceValidationResults`, shards in name order (Go walks the map
/// in random order).
fn keyspace_report(ks: &str, found: &KeyspaceResults) -> String {
    let mut out = String::new();
    result_lines(&found.results, &mut out);
    for (shard, results) in &found.by_shard {
        if results.is_empty() {
            continue;
        }
        out.push_str(&format!("\nFor {ks}/{shard}:\n"));
        result_lines(results, &mut out);
    }
    out
}

/// Prints `Validation results:` and the report and returns vtctldclient's error, or prints
/// `ok` when the report is empty.
fn finish_validation(report: String, ok: String, error: String) -> Result<()> {
    if report.is_empty() {
        crate::out!("{ok}");
        return Ok(());
    }
    crate::out!("Validation results:\n{}", report.trim_end_matches('\n'));
    Err(TopoError::FailedPrecondition(error))
}

/// GenerateShardRanges: the shard names as Go's encoding/json prints a string slice.
pub(crate) fn generate_shard_ranges(num_shards: &str) -> Result<()> {
    let n: i64 = num_shards.parse().map_err(|_| {
        TopoError::invalid(format!(
            "GenerateShardRanges: {num_shards:?} is not a number of shards"
        ))
    })?;
    let names = toposphere::names::generate_shard_ranges(n)?;
    print_go(&Value::Array(
        names.into_iter().map(Value::String).collect(),
    ));
    Ok(())
}

/// UpdateThrottlerConfig: checks the flags as Vitess does, then updates the keyspace and
/// its SrvKeyspaces. Prints nothing, as vtctldclient.
async fn update_throttler_config(ts: &Server, a: UpdateThrottlerConfigArgs) -> Result<()> {
    if a.enable && a.disable {
        return Err(TopoError::invalid(
            "--enable and --disable are mutually exclusive",
        ));
    }
    if a.check_as_check_self && a.check_as_check_shard {
        return Err(TopoError::invalid(
            "--check-as-check-self and --check-as-check-shard are mutually exclusive",
        ));
    }
    if a.throttle_app.is_some() && a.unthrottle_app.is_some() {
        return Err(TopoError::invalid(
            "throttle-app and unthrottle-app are mutually exclusive",
        ));
    }
    if !(0.0..=1.0).contains(&a.throttle_app_ratio) {
        return Err(TopoError::invalid(format!(
            "--throttle-app-ratio {}: must be between 0 and 1",
            a.throttle_app_ratio
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let app = match (&a.throttle_app, &a.unthrottle_app) {
        (Some(name), _) => Some((name.clone(), Some(now + a.throttle_app_duration))),
        (None, Some(name)) => Some((name.clone(), None)),
        (None, None) => None,
    };
    ts.update_throttler_config(&a.keyspace, |c| {
        match &a.custom_query {
            // With a custom query any threshold goes, zero or negative included.
            Some(q) => {
                c.custom_query = q.clone();
                c.threshold = a.threshold.unwrap_or(0.0);
            }
            // Replication lag: only a positive threshold is applied.
            None => {
                if let Some(t) = a.threshold.filter(|t| *t > 0.0) {
                    c.threshold = t;
                }
            }
        }
        if a.enable {
            c.enabled = true;
        }
        if a.disable {
            c.enabled = false;
        }
        if a.check_as_check_self {
            c.check_as_check_self = true;
        }
        if a.check_as_check_shard {
            c.check_as_check_self = false;
        }
        match &app {
            Some((name, Some(expires))) => {
                c.throttled_apps.insert(
                    name.clone(),
                    ThrottledAppRule {
                        name: name.clone(),
                        ratio: a.throttle_app_ratio,
                        expires_at: Some(vttime::Time {
                            seconds: expires.as_secs() as i64,
                            nanoseconds: expires.subsec_nanos() as i32,
                        }),
                        exempt: a.throttle_app_exempt,
                    },
                );
            }
            Some((name, None)) => {
                c.throttled_apps.remove(name);
            }
            None => {}
        }
    })
    .await?;
    Ok(())
}

pub(crate) async fn run(ts: &Server, command: Command, compact: bool) -> Result<ExitCode> {
    match command {
        Command::RebuildKeyspaceGraph {
            cells,
            allow_partial,
            keyspaces,
        } => {
            let cells = if cells.is_empty() {
                vec![]
            } else {
                ts.expand_cells(&cells.join(",")).await?
            };
            for ks in &keyspaces {
                ts.rebuild_keyspace(ks, &cells, allow_partial).await?;
            }
        }
        Command::RebuildVSchemaGraph { cells } => {
            ts.rebuild_srv_vschema(&cells).await?;
            crate::out!("RebuildVSchemaGraph: ok");
        }
        Command::GetSrvKeyspaceNames { cells } => {
            // map[string]*NameList, marshalled with encoding/json.
            let cells = ts.cells_or_all(&cells).await?;
            let mut out = serde_json::Map::new();
            for cell in cells {
                let names = ts.get_srv_keyspace_names(&cell).await?;
                let list = if names.is_empty() {
                    object([])
                } else {
                    object([(
                        "names".into(),
                        Value::Array(names.into_iter().map(Value::String).collect()),
                    )])
                };
                out.insert(cell, list);
            }
            print_go(&Value::Object(out));
        }
        Command::GetSrvKeyspaces { keyspace, cells } => {
            // map[string]*SrvKeyspace, marshalled with encoding/json.
            let cells = ts.cells_or_all(&cells).await?;
            let mut out = serde_json::Map::new();
            for cell in cells {
                let v = match ts.get_srv_keyspace(&cell, &keyspace).await {
                    Ok(s) => go_msg(&s),
                    Err(e) if e.is_no_node() => Value::Null,
                    Err(e) => return Err(e),
                };
                out.insert(cell, v);
            }
            print_go(&Value::Object(out));
        }
        Command::GetSrvVSchema { cell } => print(&msg(&ts.get_srv_vschema(&cell).await?, compact)),
        Command::GetSrvVSchemas { cells } => {
            // map[string]*SrvVSchema, marshalled with encoding/json; `[]` when empty. As the
            // server: the named cells that exist (all when none are named), `null` for a
            // cell without a SrvVSchema.
            let mut known = ts.get_cell_info_names().await?;
            if !cells.is_empty() {
                known.retain(|c| cells.contains(c));
            }
            let mut out = serde_json::Map::new();
            for cell in known {
                let v = match ts.get_srv_vschema(&cell).await {
                    Ok(s) => go_msg(&s),
                    Err(e) if e.is_no_node() => Value::Null,
                    Err(e) => return Err(e),
                };
                out.insert(cell, v);
            }
            if out.is_empty() {
                crate::out!("[]");
            } else {
                print_go(&Value::Object(out));
            }
        }
        Command::DeleteSrvVSchema { cell } => ts.delete_srv_vschema(&cell).await?,
        Command::ApplyVSchema {
            vschema,
            vschema_file,
            sql,
            sql_file,
            cells,
            skip_rebuild,
            dry_run,
            keyspace,
        } => {
            if sql.is_some() || sql_file.is_some() {
                return Err(TopoError::invalid(
                    "ApplyVSchema --sql/--sql-file: topo cannot parse VSchema DDL (Vitess's SQL \
                     parser is not part of topo); give the VSchema as JSON with --vschema or \
                     --vschema-file",
                ));
            }
            let json = match (vschema, vschema_file) {
                (Some(v), None) => v,
                (None, Some(f)) => String::from_utf8(read_file(&f)?).map_err(|_| {
                    TopoError::invalid(format!("{} is not UTF-8 text", f.display()))
                })?,
                _ => {
                    return Err(TopoError::invalid(
                        "give exactly one of --vschema or --vschema-file",
                    ))
                }
            };
            ts.get_keyspace(&keyspace).await?;
            let vs = parse_vschema(&json)?;
            check_vschema(&keyspace, &vs)?;
            if !dry_run {
                ts.save_vschema(&keyspace, &vs, None).await?;
                if !skip_rebuild {
                    rebuild_vschema_if_cells(ts, &cells).await?;
                }
            }
            crate::out!("New VSchema object:");
            print(&msg(&vs.msg, compact));
            crate::out!("{UNEXPECTED_FIELDS}");
        }
        Command::GetVSchema { keyspace } => {
            print(&msg(&ts.get_vschema(&keyspace).await?.value.msg, compact))
        }
        Command::ApplyRoutingRules(a) => {
            apply_rules(
                ts,
                &a,
                RulesKind::Routing,
                compact,
                async |ts: &Server, r: &RoutingRules| ts.save_routing_rules(r).await,
            )
            .await?
        }
        Command::GetRoutingRules => print(&msg(&ts.get_routing_rules().await?, compact)),
        Command::ApplyShardRoutingRules(a) => {
            apply_rules(
                ts,
                &a,
                RulesKind::Shard,
                compact,
                async |ts: &Server, r: &ShardRoutingRules| ts.save_shard_routing_rules(r).await,
            )
            .await?
        }
        Command::GetShardRoutingRules => print(&msg(&ts.get_shard_routing_rules().await?, compact)),
        Command::ApplyKeyspaceRoutingRules(a) => {
            apply_rules(
                ts,
                &a,
                RulesKind::Keyspace,
                compact,
                async |ts: &Server, r: &KeyspaceRoutingRules| {
                    ts.save_keyspace_routing_rules(r).await
                },
            )
            .await?
        }
        Command::GetKeyspaceRoutingRules => print(&msg(
            &ts.get_keyspace_routing_rules().await?.unwrap_or_default(),
            compact,
        )),
        Command::GetMirrorRules => print(&msg(&ts.get_mirror_rules().await?, compact)),
        Command::GetTopologyPath {
            version,
            data_as_json,
            path,
        } => get_topology_path(ts, &path, version, data_as_json, compact).await?,
        Command::WriteTopologyPath {
            cell,
            raw,
            path,
            file,
        } => {
            let bytes = read_file(&file)?;
            check_record_bytes(&path, &bytes, &file.display().to_string(), raw)?;
            ts.conn_for_cell(&cell)
                .await?
                .update(&path, &bytes, None)
                .await?;
        }
        Command::Validate { ping_tablets } => {
            refuse_ping_tablets(ping_tablets)?;
            let found = ts.validate_all().await;
            let mut report = String::new();
            result_lines(&found.results, &mut report);
            for (ks, ks_found) in &found.by_keyspace {
                let ks_report = keyspace_report(ks, ks_found);
                if !ks_report.is_empty() {
                    report.push_str(&format!("\nFor {ks}:\n{ks_report}"));
                }
            }
            finish_validation(
                report,
                "Validation complete; no issues found.".into(),
                "some issues were found during validation; see above for details".into(),
            )?
        }
        Command::ValidateKeyspace {
            ping_tablets,
            keyspace,
        } => {
            refuse_ping_tablets(ping_tablets)?;
            let found = ts.validate_keyspace(&keyspace).await;
            finish_validation(
                keyspace_report(&keyspace, &found),
                format!("Validation of {keyspace} complete; no issues found."),
                format!("keyspace {keyspace} had validation issues; see above for details"),
            )?
        }
        Command::ValidateShard {
            ping_tablets,
            shard: (ks, shard),
        } => {
            refuse_ping_tablets(ping_tablets)?;
            let mut report = String::new();
            result_lines(&ts.validate_shard(&ks, &shard).await, &mut report);
            finish_validation(
                report,
                format!("Validation of {ks}/{shard} complete; no issues found."),
                format!("shard {ks}/{shard} had validation issues; see above for details"),
            )?
        }
        Command::UpdateThrottlerConfig(a) => update_throttler_config(ts, a).await?,
        other => unreachable!("not a serving command: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
