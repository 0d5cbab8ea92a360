//! Tablets and the replication graph.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::Value;
use topo_core::{Result, TopoError};
use topo_proto::names::{alias_string, go_quote, parse_alias, parse_tablet_type};
use topo_proto::topodata::{Tablet, TabletType};
use toposphere::{Server, TabletInfo};

use crate::args::{AddTabletArgs, Command, GetTabletsArgs, InitTabletArgs};
use crate::output::{go_msg, msg, object, print, print_go};

fn term_start(t: &Tablet) -> Option<i64> {
    t.primary_term_start_time
        .as_ref()
        .map(|ts| ts.seconds * 1_000_000_000 + i64::from(ts.nanoseconds))
}

/// `host:port` as Go's `net.JoinHostPort` writes it (IPv6 hosts in brackets).
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One `--format awk` line, as `cli.MarshalTabletAWK` (awk.go) writes it: `alias keyspace
/// shard type host:vtport mysqlhost:port [k: "v" …] primary_term_start`, `<null>` for an
/// empty keyspace, shard or term start.
fn awk_line(t: &Tablet, shown_type: TabletType) -> String {
    let alias = t.alias.as_ref().map(alias_string).unwrap_or_default();
    let vt = t.port_map.get("vt").copied().unwrap_or(0);
    let mut tags: Vec<String> = t
        .tags
        .iter()
        .map(|(k, v)| format!("{k}: {}", go_quote(v)))
        .collect();
    tags.sort();
    let or_null = |s: &str| {
        if s.is_empty() {
            "<null>".to_string()
        } else {
            s.to_string()
        }
    };
    let start = t
        .primary_term_start_time
        .as_ref()
        .filter(|s| s.seconds > 0)
        .and_then(|s| chrono::DateTime::from_timestamp(s.seconds, s.nanoseconds.max(0) as u32))
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "<null>".into());
    format!(
        "{alias} {} {} {} {} {} [{}] {start}",
        or_null(&t.keyspace),
        or_null(&t.shard),
        shown_type.as_str_name().to_ascii_lowercase(),
        join_host_port(&t.hostname, vt),
        join_host_port(&t.mysql_hostname, t.mysql_port),
        tags.join(" ")
    )
}

/// GetTablets' argument checks, with vtctldclient's texts (tablets.go); true for
/// `--format json` (any case), false for awk.
fn check_get_tablets(a: &GetTabletsArgs) -> Result<bool> {
    let format = a.format.to_ascii_lowercase();
    if format != "awk" && format != "json" {
        return Err(TopoError::invalid(format!(
            "invalid output format, got {}",
            a.format
        )));
    }
    if !a.tablet_aliases.is_empty() {
        let aliases = format!("[{}]", a.tablet_aliases.join(" "));
        let conflict = if let Some(k) = &a.keyspace {
            Some(format!("--keyspace (= {k})"))
        } else if let Some(s) = &a.shard {
            Some(format!("--shard (= {s})"))
        } else if !a.cells.is_empty() {
            Some(format!("--cell (= [{}])", a.cells.join(" ")))
        } else {
            a.tablet_type
                .as_ref()
                .map(|t| format!("--tablet-type (= {t})"))
        };
        if let Some(flag) = conflict {
            return Err(TopoError::invalid(format!(
                "{flag} cannot be passed when using --tablet-alias (= {aliases})"
            )));
        }
    }
    if let (None, Some(s)) = (&a.keyspace, &a.shard) {
        return Err(TopoError::invalid(format!(
            "--shard (= {s}) cannot be passed without also passing --keyspace"
        )));
    }
    Ok(format == "json")
}

async fn get_tablets(ts: &Server, a: GetTabletsArgs) -> Result<ExitCode> {
    let json = check_get_tablets(&a)?;
    let type_filter = a
        .tablet_type
        .as_deref()
        .map(parse_tablet_type)
        .transpose()?;
    let mut failed_cells = Vec::new();
    let mut tablets: Vec<TabletInfo> = if !a.tablet_aliases.is_empty() {
        let aliases = a
            .tablet_aliases
            .iter()
            .map(|s| parse_alias(s))
            .collect::<Result<Vec<_>>>()?;
        let map = ts.get_tablet_map(&aliases).await?;
        failed_cells.extend(map.failed_cells.clone());
        map.value.into_values().collect()
    } else {
        let cells = if a.cells.is_empty() {
            ts.get_cell_info_names().await?
        } else {
            a.cells.clone()
        };
        let mut out = Vec::new();
        for cell in &cells {
            match ts
                .get_tablets_by_cell(cell, a.keyspace.as_deref(), a.shard.as_deref())
                .await
            {
                Ok(t) => out.extend(t),
                Err(e) => {
                    eprintln!("topo: cannot read the tablets of cell {cell}: {e}");
                    failed_cells.push(cell.clone());
                }
            }
        }
        if a.strict && !failed_cells.is_empty() {
            return Err(TopoError::PartialResult(format!(
                "cells {} could not be read (--strict)",
                failed_cells.join(", ")
            )));
        }
        if !cells.is_empty() && failed_cells.len() == cells.len() {
            return Err(TopoError::PartialResult("no cell could be read".into()));
        }
        out
    };
    tablets.retain(|t| {
        a.keyspace.as_ref().is_none_or(|k| &t.tablet.keyspace == k)
            && a.shard.as_ref().is_none_or(|s| &t.tablet.shard == s)
            && type_filter.is_none_or(|ty| t.tablet_type() == ty)
    });
    tablets.sort_by_key(|t| t.alias());
    // A PRIMARY whose term started before the newest PRIMARY of its shard is stale: show it
    // as UNKNOWN, as vtctldclient does.
    let mut newest: BTreeMap<(String, String), i64> = BTreeMap::new();
    for t in tablets
        .iter()
        .filter(|t| t.tablet_type() == TabletType::Primary)
    {
        let key = (t.tablet.keyspace.clone(), t.tablet.shard.clone());
        let start = term_start(&t.tablet).unwrap_or(0);
        let e = newest.entry(key).or_insert(start);
        *e = (*e).max(start);
    }
    let shown = |t: &TabletInfo| {
        let ty = t.tablet_type();
        if ty == TabletType::Primary
            && newest
                .get(&(t.tablet.keyspace.clone(), t.tablet.shard.clone()))
                .is_some_and(|n| term_start(&t.tablet).unwrap_or(0) < *n)
        {
            TabletType::Unknown
        } else {
            ty
        }
    };
    if json {
        // The []*Tablet slice, marshalled with encoding/json.
        let list = tablets
            .iter()
            .map(|t| {
                let mut tablet = t.tablet.msg.clone();
                tablet.r#type = shown(t) as i32;
                go_msg(&tablet)
            })
            .collect();
        print_go(&Value::Array(list));
    } else {
        for t in &tablets {
            crate::out!("{}", awk_line(&t.tablet, shown(t)));
        }
    }
    Ok(if failed_cells.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

async fn add_tablet(ts: &Server, a: AddTabletArgs) -> Result<()> {
    let alias = parse_alias(&a.alias)?;
    let tablet_type = parse_tablet_type(&a.tablet_type)?;
    let mut tags = BTreeMap::new();
    for tag in &a.tags {
        let (k, v) = tag
            .split_once('=')
            .ok_or_else(|| TopoError::invalid(format!("--tag {tag:?}: expected key=value")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    let tablet = Tablet {
        alias: Some(alias),
        hostname: a.hostname.clone(),
        mysql_hostname: a.hostname.clone(),
        mysql_port: a.mysql_port,
        port_map: BTreeMap::from([
            ("vt".to_string(), a.port),
            ("grpc".to_string(), a.grpc_port),
        ]),
        keyspace: a.keyspace.clone(),
        shard: a.shard.clone(),
        r#type: tablet_type as i32,
        tags,
        ..Default::default()
    };
    let alias = tablet.alias.clone().unwrap_or_default();
    let shard_name = toposphere::names::validate_shard_name(&a.shard)?.0;
    ts.init_tablet(
        tablet,
        a.allow_primary_override,
        a.create_shard_and_keyspace,
        a.allow_update,
    )
    .await?;
    if tablet_type == TabletType::Primary {
        make_shard_primary(ts, &a.keyspace, &shard_name, &alias).await?;
    }
    crate::out!(
        "Added tablet {} ({} {}/{})",
        a.alias,
        tablet_type.as_str_name(),
        a.keyspace,
        a.shard
    );
    Ok(())
}

/// vtctl's InitTablet: the record built from its flags, written by `init_tablet`.
async fn init_tablet(ts: &Server, a: InitTabletArgs) -> Result<()> {
    let mut tags = BTreeMap::new();
    for tag in a.tags.iter().filter(|t| !t.is_empty()) {
        let (k, v) = tag
            .split_once(':')
            .ok_or_else(|| TopoError::invalid(format!("--tags {tag:?}: expected key:value")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    let mut port_map = BTreeMap::new();
    if a.port != 0 {
        port_map.insert("vt".to_string(), a.port);
    }
    if a.grpc_port != 0 {
        port_map.insert("grpc".to_string(), a.grpc_port);
    }
    let tablet = Tablet {
        alias: Some(parse_alias(&a.alias)?),
        hostname: a.hostname,
        mysql_hostname: a.mysql_host,
        mysql_port: a.mysql_port,
        port_map,
        keyspace: a.keyspace,
        shard: a.shard,
        r#type: parse_tablet_type(&a.tablet_type)? as i32,
        db_name_override: a.db_name_override,
        tags,
        ..Default::default()
    };
    ts.init_tablet(tablet, a.allow_master_override, a.parent, a.allow_update)
        .await
}

/// Records `alias` as its shard's primary with a new term, as a reparent would (vttablet
/// does this when it becomes primary; `AddTablet` and the demo stand in for it).
pub(crate) async fn make_shard_primary(
    ts: &Server,
    ks: &str,
    shard: &str,
    alias: &topo_proto::topodata::TabletAlias,
) -> Result<()> {
    ts.update_shard_fields(ks, shard, None, |si| {
        si.shard.primary_alias = Some(alias.clone());
        si.shard.primary_term_start_time = Some(toposphere::tablet::now_vttime());
        Ok(())
    })
    .await
    .map(|_| ())
}

pub(crate) async fn run(ts: &Server, command: Command, compact: bool) -> Result<ExitCode> {
    match command {
        Command::GetTablet { alias } => {
            let t = ts.get_tablet(&parse_alias(&alias)?).await?;
            print(&msg(&t.tablet.msg, compact));
        }
        Command::GetTablets(a) => return get_tablets(ts, a).await,
        Command::DeleteTablets {
            allow_primary,
            aliases,
        } => {
            let parsed = aliases
                .iter()
                .map(|a| parse_alias(a))
                .collect::<Result<Vec<_>>>()?;
            for a in &parsed {
                ts.delete_tablet_recursive(a, allow_primary).await?;
            }
            crate::out!("Successfully deleted {} tablets", parsed.len());
        }
        Command::AddTablet(a) => add_tablet(ts, a).await?,
        Command::InitTablet(a) => init_tablet(ts, a).await?,
        Command::GetShardReplication {
            shard: (ks, name),
            cells,
        } => {
            let cells = ts.cells_or_all(&cells).await?;
            let mut by_cell = serde_json::Map::new();
            for cell in cells {
                match ts.get_shard_replication(&cell, &ks, &name).await {
                    Ok(sr) => {
                        by_cell.insert(cell, msg(&sr.value.msg, compact));
                    }
                    Err(e) if e.is_no_node() => {}
                    Err(e) => return Err(e),
                }
            }
            print(&object([(
                "shard_replication_by_cell".to_string(),
                Value::Object(by_cell),
            )]));
        }
        Command::ShardReplicationAdd {
            shard: (ks, name),
            alias,
        } => {
            let a = parse_alias(&alias)?;
            ts.update_shard_replication_record(&a.cell, &ks, &name, &a)
                .await?;
        }
        Command::ShardReplicationRemove {
            shard: (ks, name),
            alias,
        } => {
            let a = parse_alias(&alias)?;
            ts.remove_shard_replication_record(&a.cell, &ks, &name, &a)
                .await?;
        }
        Command::ShardReplicationFix {
            cell,
            shard: (ks, name),
        } => match ts.fix_shard_replication(&cell, &ks, &name).await? {
            None => crate::out!("All nodes in the replication graph are valid."),
            Some(e) => {
                let kind = topo_proto::topodata::shard_replication_error::Type::try_from(e.r#type)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN");
                let alias = e
                    .tablet_alias
                    .as_ref()
                    .map(alias_string)
                    .unwrap_or_default();
                crate::out!("{kind} has been fixed for {alias}.");
            }
        },
        other => unreachable!("not a tablet command: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
