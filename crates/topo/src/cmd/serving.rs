//! The serving graph, VSchema and rules, topology paths, and Validate.

use std::process::ExitCode;

use serde_json::Value;
use topo_core::{Result, TopoError, Version};
use topo_proto::json::{decode_content, from_json};
use topo_proto::names::alias_string;
use topo_proto::vschema::{self, KeyspaceRoutingRules, RoutingRules, ShardRoutingRules};
use topo_proto::Record;
use toposphere::serving::order_and_check_partitions;
use toposphere::{Server, GLOBAL_CELL};

use crate::args::{Command, RulesArgs};
use crate::cmd::keyspaces::{parse_vschema, rebuild_vschema_if_cells};
use crate::cmd::read_file;
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
                let data = decode_content(&rel, &bytes, data_as_json)?;
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

/// Vitess's topology-only `Validate` checks; every problem found is printed.
async fn validate(ts: &Server) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for ks in ts.get_keyspaces().await? {
        if let Err(e) = ts.get_keyspace(&ks).await {
            problems.push(format!("keyspace {ks}: {e}"));
            continue;
        }
        let shards = match ts.find_all_shards_in_keyspace(&ks).await {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("keyspace {ks}: cannot read its shards: {e}"));
                continue;
            }
        };
        let cells = ts.get_cell_info_names().await?;
        for name in shards.keys() {
            for cell in &cells {
                let Ok(sr) = ts.get_shard_replication(cell, &ks, name).await else {
                    continue;
                };
                for alias in sr
                    .value
                    .nodes
                    .iter()
                    .filter_map(|n| n.tablet_alias.as_ref())
                {
                    match ts.get_tablet(alias).await {
                        Ok(t) if t.tablet.keyspace == ks && &t.tablet.shard == name => {}
                        Ok(_) => problems.push(format!(
                            "replication graph of {ks}/{name} in {cell} lists {}, which belongs to another shard",
                            alias_string(alias)
                        )),
                        Err(e) => problems.push(format!(
                            "replication graph of {ks}/{name} in {cell} lists {}: {e}",
                            alias_string(alias)
                        )),
                    }
                }
            }
        }
        for (name, si) in &shards {
            if let Some(p) = &si.shard.primary_alias {
                match ts.get_tablet(p).await {
                    Ok(t) if t.tablet.keyspace == ks && &t.tablet.shard == name => {}
                    Ok(_) => problems.push(format!(
                        "shard {ks}/{name}: primary {} belongs to another shard",
                        alias_string(p)
                    )),
                    Err(e) => problems.push(format!(
                        "shard {ks}/{name}: primary {}: {e}",
                        alias_string(p)
                    )),
                }
            }
        }
    }
    for cell in ts.get_cell_info_names().await? {
        let tablets = match ts.get_tablets_by_cell(&cell, None, None).await {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("cell {cell}: cannot read its tablets: {e}"));
                continue;
            }
        };
        for t in &tablets {
            if let Some(a) = &t.tablet.alias {
                if let Err(e) = ts.validate_tablet(a).await {
                    problems.push(format!("tablet {}: {e}", t.alias()));
                }
            }
        }
        for ks in ts.get_srv_keyspace_names(&cell).await.unwrap_or_default() {
            match ts.get_srv_keyspace(&cell, &ks).await {
                Ok(mut srv) => {
                    if let Err(e) = order_and_check_partitions(&ks, &mut srv) {
                        problems.push(format!("cell {cell}: {e}"));
                    }
                }
                Err(e) if e.is_no_node() => {}
                Err(e) => problems.push(format!("cell {cell}: SrvKeyspace {ks}: {e}")),
            }
        }
    }
    Ok(problems)
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
            // map[string]*SrvVSchema, marshalled with encoding/json; `[]` when empty.
            let cells = ts.cells_or_all(&cells).await?;
            let mut out = serde_json::Map::new();
            for cell in cells {
                match ts.get_srv_vschema(&cell).await {
                    Ok(s) => {
                        out.insert(cell, go_msg(&s));
                    }
                    Err(e) if e.is_no_node() => {}
                    Err(e) => return Err(e),
                }
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
        Command::WriteTopologyPath { cell, path, file } => {
            let bytes = read_file(&file)?;
            ts.conn_for_cell(&cell)
                .await?
                .update(&path, &bytes, None)
                .await?;
        }
        Command::Validate => {
            let problems = validate(ts).await?;
            print(&object([(
                "results".into(),
                Value::Array(problems.iter().cloned().map(Value::String).collect()),
            )]));
            if !problems.is_empty() {
                return Ok(ExitCode::from(2));
            }
        }
        other => unreachable!("not a serving command: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
