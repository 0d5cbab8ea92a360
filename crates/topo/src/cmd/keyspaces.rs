//! Keyspaces and shards.

use serde_json::Value;
use topo_core::{ErrorKind, Result, TopoError};
use topo_proto::json::message_to_text_line;
use topo_proto::names::{go_quote, parse_key_range, parse_tablet_type};
use topo_proto::topodata::{shard, Keyspace, KeyspaceType};
use topo_proto::{vschema, vttime, Stored};
use toposphere::records::no_update_needed;
use toposphere::{KeyspaceInfo, Server, ShardInfo};

use crate::args::{Command, CreateKeyspaceArgs};
use crate::output::{go_msg, msg, object, print, print_go};

/// vtctldata.Keyspace: `{name, keyspace}`.
pub(crate) fn keyspace_json(ki: &KeyspaceInfo, compact: bool) -> Value {
    object([
        ("name".to_string(), Value::String(ki.name.clone())),
        ("keyspace".to_string(), msg(&ki.keyspace.msg, compact)),
    ])
}

/// vtctldata.Shard: `{keyspace, name, shard}`.
pub(crate) fn shard_json(si: &ShardInfo, compact: bool) -> Value {
    object([
        ("keyspace".to_string(), Value::String(si.keyspace.clone())),
        ("name".to_string(), Value::String(si.name.clone())),
        ("shard".to_string(), msg(&si.shard.msg, compact)),
    ])
}

/// Rebuilds every cell's SrvVSchema, doing nothing when there are no cells yet.
pub(crate) async fn rebuild_vschema_if_cells(ts: &Server, cells: &[String]) -> Result<()> {
    match ts.rebuild_srv_vschema(cells).await {
        Err(e) if e.is_no_node() => Ok(()),
        other => other,
    }
}

async fn create_keyspace(ts: &Server, a: CreateKeyspaceArgs, compact: bool) -> Result<()> {
    let keyspace_type = match a.keyspace_type.to_ascii_uppercase().as_str() {
        "NORMAL" => KeyspaceType::Normal,
        "SNAPSHOT" => KeyspaceType::Snapshot,
        other => {
            return Err(TopoError::invalid(format!(
                "--type: unknown keyspace type {other}"
            )))
        }
    };
    let mut ks = Keyspace {
        keyspace_type: keyspace_type as i32,
        durability_policy: a.durability_policy.clone(),
        sidecar_db_name: a.sidecar_db_name.clone(),
        ..Default::default()
    };
    if keyspace_type == KeyspaceType::Snapshot {
        if a.durability_policy != "none" {
            return Err(TopoError::invalid(
                "--durability-policy cannot be specified while creating a snapshot keyspace",
            ));
        }
        let base = a.base_keyspace.clone().ok_or_else(|| {
            TopoError::invalid("--base-keyspace is required for a SNAPSHOT keyspace")
        })?;
        let ts_text = a.snapshot_timestamp.clone().ok_or_else(|| {
            TopoError::invalid("--snapshot-timestamp is required for a SNAPSHOT keyspace")
        })?;
        let when = chrono::DateTime::parse_from_rfc3339(&ts_text)
            .map_err(|e| TopoError::invalid(format!("--snapshot-timestamp {ts_text:?}: {e}")))?;
        if when > chrono::Utc::now() {
            return Err(TopoError::invalid("--snapshot-timestamp is in the future"));
        }
        ts.get_keyspace(&base).await?;
        ks.base_keyspace = base;
        ks.snapshot_time = Some(vttime::Time {
            seconds: when.timestamp(),
            nanoseconds: when.timestamp_subsec_nanos() as i32,
        });
    }
    match ts.create_keyspace(&a.keyspace, &ks).await {
        Err(e) if e.is(ErrorKind::NodeExists) && a.force => {}
        other => other?,
    }
    if keyspace_type == KeyspaceType::Snapshot {
        let mut base = ts.get_vschema(&ks.base_keyspace).await?.value;
        base.require_explicit_routing = true;
        ts.save_vschema(&a.keyspace, &base, None).await?;
    } else if !a.allow_empty_vschema {
        ts.ensure_vschema(&a.keyspace).await?;
    }
    rebuild_vschema_if_cells(ts, &[]).await?;
    let ki = ts.get_keyspace(&a.keyspace).await?;
    crate::out!("Successfully created keyspace {}. Result:", a.keyspace);
    print(&keyspace_json(&ki, compact));
    Ok(())
}

/// Edits a shard record under its keyspace lock and returns the record as it now is.
async fn edit_shard<F>(
    ts: &Server,
    ks: &str,
    name: &str,
    action: &str,
    mut edit: F,
) -> Result<ShardInfo>
where
    F: FnMut(&mut ShardInfo) -> Result<()> + Send,
{
    let lock = ts.lock_keyspace(ks, action).await?;
    let r = ts
        .update_shard_fields(ks, name, Some(&lock), &mut edit)
        .await;
    let unlocked = lock.unlock().await;
    let si = match r? {
        Some(si) => si,
        None => ts.get_shard(ks, name).await?,
    };
    unlocked?;
    Ok(si)
}

/// SourceShardAdd/Delete's answer: the updated record, or vtctldclient's text when nothing
/// changed.
fn print_source_shard_edit(changed: bool, si: &ShardInfo, unchanged: String, compact: bool) {
    if changed {
        crate::out!("Updated shard record:");
        print(&msg(&si.shard.msg, compact));
    } else {
        crate::out!("{unchanged}");
    }
}

pub(crate) async fn run(ts: &Server, command: Command, compact: bool) -> Result<()> {
    match command {
        Command::CreateKeyspace(a) => create_keyspace(ts, a, compact).await?,
        Command::GetKeyspace { keyspace } => {
            // keyspaces.go prints fmt.Printf("%+v\n", resp.Keyspace): the vtctldata.Keyspace
            // message's one-line text.
            let ki = ts.get_keyspace(&keyspace).await?;
            crate::out!(
                "name:{} keyspace:{{{}}}",
                go_quote(&ki.name),
                message_to_text_line(&ki.keyspace.msg)
            );
        }
        Command::GetKeyspaces => {
            // vtctldclient marshals the []*vtctldata.Keyspace slice with encoding/json.
            let mut out = Vec::new();
            for name in ts.get_keyspaces().await? {
                let ki = ts.get_keyspace(&name).await?;
                out.push(object([
                    ("name".to_string(), Value::String(ki.name.clone())),
                    ("keyspace".to_string(), go_msg(&ki.keyspace.msg)),
                ]));
            }
            print_go(&Value::Array(out));
        }
        Command::DeleteKeyspace {
            recursive,
            force,
            keyspace,
        } => {
            ts.delete_keyspace_recursive(&keyspace, recursive, force)
                .await?;
            rebuild_vschema_if_cells(ts, &[]).await?;
            crate::out!("Successfully deleted keyspace {keyspace}.");
        }
        Command::FindAllShardsInKeyspace { keyspace } => {
            let shards = ts.find_all_shards_in_keyspace(&keyspace).await?;
            print(&object([(
                "shards".to_string(),
                object(
                    shards
                        .iter()
                        .map(|(k, s)| (k.clone(), shard_json(s, compact))),
                ),
            )]));
        }
        Command::SetKeyspaceDurabilityPolicy {
            durability_policy,
            keyspace,
        } => {
            let lock = ts
                .lock_keyspace(&keyspace, "SetKeyspaceDurabilityPolicy")
                .await?;
            let r = async {
                let mut ki = ts.get_keyspace(&keyspace).await?;
                ki.keyspace.durability_policy = durability_policy.clone();
                ts.update_keyspace(&lock, &mut ki).await?;
                Ok::<_, TopoError>(ki)
            }
            .await;
            let unlocked = lock.unlock().await;
            let ki = r?;
            unlocked?;
            print(&object([(
                "keyspace".to_string(),
                msg(&ki.keyspace.msg, compact),
            )]));
        }
        Command::RemoveKeyspaceCell {
            force,
            recursive,
            keyspace,
            cell,
        } => {
            ts.remove_keyspace_cell(&keyspace, &cell, recursive, force)
                .await?;
            crate::out!("Successfully removed keyspace {keyspace} from cell {cell}");
        }
        Command::CreateShard {
            force,
            include_parent,
            shard: (ks, name),
        } => {
            if include_parent {
                match ts.create_keyspace(&ks, &Keyspace::default()).await {
                    Err(e) if !e.is(ErrorKind::NodeExists) => return Err(e),
                    _ => {}
                }
            }
            let exists = match ts.create_shard(&ks, &name).await {
                Ok(_) => false,
                Err(e) if e.is(ErrorKind::NodeExists) && force => true,
                Err(e) => return Err(e),
            };
            let ki = ts.get_keyspace(&ks).await?;
            let si = ts.get_shard(&ks, &name).await?;
            print(&object([
                ("keyspace".to_string(), keyspace_json(&ki, compact)),
                ("shard".to_string(), shard_json(&si, compact)),
                ("shard_already_exists".to_string(), Value::Bool(exists)),
            ]));
        }
        Command::GetShard { shard: (ks, name) } => {
            print(&shard_json(&ts.get_shard(&ks, &name).await?, compact))
        }
        Command::DeleteShards {
            recursive,
            even_if_serving,
            force,
            shards,
        } => {
            for (ks, name) in &shards {
                ts.delete_shard_recursive(ks, name, recursive, even_if_serving, force)
                    .await?;
            }
            crate::out!("Successfully deleted {} shards", shards.len());
        }
        Command::RemoveShardCell {
            force,
            recursive,
            shard: (ks, name),
            cell,
        } => {
            ts.remove_shard_cell(&ks, &name, &cell, recursive, force)
                .await?;
            crate::out!("Successfully removed cell {cell} from shard {ks}/{name}");
        }
        Command::SetShardIsPrimaryServing {
            shard: (ks, name),
            serving,
        } => {
            let si = edit_shard(ts, &ks, &name, "SetShardIsPrimaryServing", |si| {
                si.shard.is_primary_serving = serving;
                Ok(())
            })
            .await?;
            print(&msg(&si.shard.msg, compact));
        }
        Command::SetShardTabletControl {
            cells,
            denied_tables,
            remove,
            disable_query_service,
            shard: (ks, name),
            tablet_type,
        } => {
            let t = parse_tablet_type(&tablet_type)?;
            let si = if denied_tables.is_empty() && !remove {
                // Vitess's server: no tables and no --remove sets DisableQueryService.
                let lock = ts.lock_keyspace(&ks, "SetShardTabletControl").await?;
                let r = async {
                    let si = ts.get_shard(&ks, &name).await?;
                    ts.update_disable_query_service(
                        &lock,
                        &ks,
                        std::slice::from_ref(&si),
                        t,
                        &cells,
                        disable_query_service,
                    )
                    .await?;
                    Ok::<_, TopoError>(si)
                }
                .await;
                let unlocked = lock.unlock().await;
                let si = r?;
                unlocked?;
                si
            } else {
                edit_shard(ts, &ks, &name, "SetShardTabletControl", |si| {
                    si.update_denied_tables(t, &cells, remove, &denied_tables)
                })
                .await?
            };
            print(&msg(&si.shard.msg, compact));
        }
        Command::SourceShardAdd {
            key_range,
            tables,
            shard: (ks, name),
            uid,
            source: (sks, sshard),
        } => {
            let kr = key_range.as_deref().map(parse_key_range).transpose()?;
            let mut added = false;
            let path = format!("keyspaces/{ks}/shards/{name}/Shard");
            let si = edit_shard(ts, &ks, &name, "SourceShardAdd", |si| {
                if si.shard.source_shards.iter().any(|s| s.uid == uid) {
                    return Err(no_update_needed(&path));
                }
                si.shard.source_shards.push(shard::SourceShard {
                    uid,
                    keyspace: sks.clone(),
                    shard: sshard.clone(),
                    key_range: kr.clone(),
                    tables: tables.clone(),
                });
                added = true;
                Ok(())
            })
            .await?;
            let unchanged = format!(
                "SourceShard with uid {uid} already exists for {ks}/{name}, not adding it."
            );
            print_source_shard_edit(added, &si, unchanged, compact);
        }
        Command::SourceShardDelete {
            shard: (ks, name),
            uid,
        } => {
            let mut deleted = false;
            let path = format!("keyspaces/{ks}/shards/{name}/Shard");
            let si = edit_shard(ts, &ks, &name, "SourceShardDelete", |si| {
                let before = si.shard.source_shards.len();
                si.shard.source_shards.retain(|s| s.uid != uid);
                deleted = si.shard.source_shards.len() != before;
                if deleted {
                    Ok(())
                } else {
                    Err(no_update_needed(&path))
                }
            })
            .await?;
            print_source_shard_edit(
                deleted,
                &si,
                format!("No SourceShard with uid {uid}."),
                compact,
            );
        }
        other => unreachable!("not a keyspace or shard command: {other:?}"),
    }
    Ok(())
}

/// A VSchema given as JSON, checked and parsed.
pub(crate) fn parse_vschema(json: &str) -> Result<Stored<vschema::Keyspace>> {
    Ok(Stored::new(
        topo_proto::json::from_json::<vschema::Keyspace>(json)?,
    ))
}
