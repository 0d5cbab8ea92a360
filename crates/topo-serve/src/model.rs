//! What the pages and the API show, read from the topology: the overview, the raw tree and
//! decoded files, and the locks and elections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{join_all, try_join_all};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;
use topo_core::types::{DirEntry, DirEntryType};
use topo_core::{Conn, ErrorKind, Result, TopoError, Version};
use topo_proto::json::{message_type_for_path, to_json, to_text, JsonForm};
use topo_proto::names::{alias_string, key_range_string};
use topo_proto::topodata::TabletType;
use toposphere::serving::order_and_check_partitions;
use toposphere::{Server, GLOBAL_CELL};

/// The name under which the pages and the API address the global cell.
pub const GLOBAL: &str = "global";

/// The connection of `cell` (`global` for the global cell).
pub async fn conn(ts: &Server, cell: &str) -> Result<Arc<dyn Conn>> {
    if cell == GLOBAL || cell == GLOBAL_CELL {
        Ok(ts.global().clone())
    } else {
        ts.conn_for_cell(cell).await
    }
}

/// A cell with whether it answers and how fast.
#[derive(Clone, Debug, Serialize)]
pub struct CellView {
    /// The cell's name.
    pub name: String,
    /// Its server address.
    pub server_address: String,
    /// Its root.
    pub root: String,
    /// Whether a listing of its root answered.
    pub reachable: bool,
    /// How long that listing took, in milliseconds.
    pub latency_ms: f64,
    /// Why it is unreachable.
    pub error: Option<String>,
}

/// A shard as the overview shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ShardView {
    /// Keyspace.
    pub keyspace: String,
    /// Shard name.
    pub shard: String,
    /// Key range (`-80`), empty for the whole range.
    pub key_range: String,
    /// The primary's alias, if any.
    pub primary: Option<String>,
    /// `is_primary_serving`.
    pub primary_serving: bool,
    /// Tablet controls: `TYPE cells=[..] denied=[..] frozen`.
    pub tablet_controls: Vec<String>,
    /// The record's version.
    pub version: String,
}

/// A tablet as the overview shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TabletView {
    /// `cell-uid`.
    pub alias: String,
    /// Cell.
    pub cell: String,
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// Tablet type name.
    pub tablet_type: String,
    /// Host name.
    pub hostname: String,
    /// Named ports (`vt`, `grpc`) and the MySQL port.
    pub ports: Vec<(String, i32)>,
}

/// One partition of a SrvKeyspace.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionView {
    /// Served tablet type.
    pub served_type: String,
    /// The shards serving it, with key ranges (`-80`).
    pub shards: Vec<String>,
}

/// A keyspace's serving data in one cell.
#[derive(Clone, Debug, Serialize)]
pub struct ServingView {
    /// Cell.
    pub cell: String,
    /// Keyspace.
    pub keyspace: String,
    /// Partitions; empty when the SrvKeyspace is missing.
    pub partitions: Vec<PartitionView>,
    /// What is wrong: a missing SrvKeyspace, gaps or overlaps; `None` when healthy.
    pub problem: Option<String>,
}

/// Everything the overview page shows.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    /// Cells.
    pub cells: Vec<CellView>,
    /// Keyspace names.
    pub keyspaces: Vec<String>,
    /// Shards of every keyspace.
    pub shards: Vec<ShardView>,
    /// Tablets of every reachable cell.
    pub tablets: Vec<TabletView>,
    /// The serving graph: each keyspace in each cell.
    pub serving: Vec<ServingView>,
}

async fn cell_view(ts: &Server, name: String) -> CellView {
    let info = ts.get_cell_info(&name, false).await;
    let (server_address, root) = match &info {
        Ok(i) => (i.server_address.clone(), i.root.clone()),
        Err(_) => (String::new(), String::new()),
    };
    let start = Instant::now();
    let probe = async {
        info?;
        let c = ts.conn_for_cell(&name).await?;
        match c.list_dir("/", false).await {
            Err(e) if !e.is_no_node() => Err(e),
            _ => Ok(()),
        }
    }
    .await;
    CellView {
        name,
        server_address,
        root,
        reachable: probe.is_ok(),
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        error: probe.err().map(|e| e.to_string()),
    }
}

/// The shards of `keyspace`, by name (one prefix read where the backend has them).
pub async fn shards(ts: &Server, keyspace: &str) -> Result<Vec<ShardView>> {
    let mut out = Vec::new();
    for (name, si) in ts.find_all_shards_in_keyspace(keyspace).await? {
        let s = &si.shard;
        out.push(ShardView {
            keyspace: keyspace.to_string(),
            shard: name,
            key_range: key_range_string(s.key_range.as_ref()),
            primary: s.primary_alias.as_ref().map(alias_string),
            primary_serving: s.is_primary_serving,
            tablet_controls: s
                .tablet_controls
                .iter()
                .map(|tc| {
                    format!(
                        "{} cells={:?} denied={:?}{}",
                        type_name(tc.tablet_type),
                        tc.cells,
                        tc.denied_tables,
                        if tc.frozen { " frozen" } else { "" }
                    )
                })
                .collect(),
            version: si.version.to_string(),
        });
    }
    Ok(out)
}

fn type_name(t: i32) -> &'static str {
    TabletType::try_from(t)
        .map(|t| t.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// The tablets of `cell`.
pub async fn tablets(ts: &Server, cell: &str) -> Result<Vec<TabletView>> {
    let mut out: Vec<TabletView> = ts
        .get_tablets_by_cell(cell, None, None)
        .await?
        .into_iter()
        .map(|ti| {
            let t = &ti.tablet;
            let mut ports: Vec<(String, i32)> =
                t.port_map.iter().map(|(k, v)| (k.clone(), *v)).collect();
            if t.mysql_port != 0 {
                ports.push(("mysql".into(), t.mysql_port));
            }
            TabletView {
                alias: ti.alias(),
                cell: cell.to_string(),
                keyspace: t.keyspace.clone(),
                shard: t.shard.clone(),
                tablet_type: type_name(t.r#type).to_string(),
                hostname: t.hostname.clone(),
                ports,
            }
        })
        .collect();
    out.sort_by(|a, b| a.alias.cmp(&b.alias));
    Ok(out)
}

/// The serving graph of `keyspaces` in `cell`, each flagged when missing or broken (the
/// keyspaces read in parallel).
pub async fn serving(ts: &Server, cell: &str, keyspaces: &[String]) -> Result<Vec<ServingView>> {
    try_join_all(keyspaces.iter().map(|ks| serving_of(ts, cell, ks))).await
}

async fn serving_of(ts: &Server, cell: &str, ks: &str) -> Result<ServingView> {
    let srv = match ts.get_srv_keyspace(cell, ks).await {
        Ok(srv) => srv,
        Err(e) if e.is_no_node() => {
            return Ok(ServingView {
                cell: cell.to_string(),
                keyspace: ks.to_string(),
                partitions: Vec::new(),
                problem: Some(format!("cell {cell} has no SrvKeyspace for {ks}")),
            })
        }
        Err(e) => return Err(e),
    };
    let partitions = srv
        .partitions
        .iter()
        .map(|p| PartitionView {
            served_type: type_name(p.served_type).to_string(),
            shards: p
                .shard_references
                .iter()
                .map(|r| key_range_string(r.key_range.as_ref()))
                .collect(),
        })
        .collect();
    // Vitess's own check finds gaps and overlaps between key ranges.
    let problem = order_and_check_partitions(ks, &mut srv.clone())
        .err()
        .map(|e| e.to_string());
    Ok(ServingView {
        cell: cell.to_string(),
        keyspace: ks.to_string(),
        partitions,
        problem,
    })
}

/// Reads the overview, keyspaces and cells in parallel. Cells that do not answer are
/// reported as unreachable and their tablets and serving data left out; a global cell that
/// does not answer is an error.
pub async fn overview(ts: &Server) -> Result<Overview> {
    let names = ts.get_cell_info_names().await?;
    let cells = join_all(names.into_iter().map(|n| cell_view(ts, n))).await;
    let keyspaces = ts.get_keyspaces().await?;
    let shards = try_join_all(keyspaces.iter().map(|ks| shards(ts, ks)));
    let per_cell = try_join_all(cells.iter().filter(|c| c.reachable).map(|c| async {
        let (t, s) = tokio::try_join!(tablets(ts, &c.name), serving(ts, &c.name, &keyspaces))?;
        Ok::<_, TopoError>((t, s))
    }));
    let (shards, per_cell) = tokio::try_join!(shards, per_cell)?;
    let (tablets, serving): (Vec<_>, Vec<_>) = per_cell.into_iter().unzip();
    Ok(Overview {
        cells,
        keyspaces,
        shards: shards.into_iter().flatten().collect(),
        tablets: tablets.into_iter().flatten().collect(),
        serving: serving.into_iter().flatten().collect(),
    })
}

/// A file's identity in a listing.
#[derive(Clone, Debug, Serialize)]
pub struct FileEntry {
    /// Path relative to the cell's root (`/keyspaces/ks/Keyspace`).
    pub path: String,
    /// Version.
    pub version: String,
    /// Size in bytes.
    pub size: usize,
}

/// Every file of a cell with its contents, sorted by path: one prefix read where the backend
/// has them, else a walk of the directories.
pub async fn all_files(conn: &dyn Conn) -> Result<Vec<(FileEntry, Vec<u8>)>> {
    match conn.list("/").await {
        Ok(items) => Ok(items
            .into_iter()
            .map(|kv| {
                let path = canonical(&kv.key);
                (
                    FileEntry {
                        path,
                        version: kv.version.to_string(),
                        size: kv.value.len(),
                    },
                    kv.value,
                )
            })
            .collect()),
        Err(e) if e.is_no_node() => Ok(Vec::new()),
        Err(e) if e.is(ErrorKind::NoImplementation) || e.is(ErrorKind::ResourceExhausted) => {
            walk(conn).await
        }
        Err(e) => Err(e),
    }
}

fn canonical(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// How many reads a directory walk keeps in flight.
const WALK_READS: usize = 16;

/// Lists every file by walking directories (ZooKeeper has no prefix read), a level at a
/// time with the listings and reads of a level in parallel: a few round trips per level
/// instead of one per directory and file (Vitess's tree is a directory per tablet and
/// shard, each holding one file).
async fn walk(conn: &dyn Conn) -> Result<Vec<(FileEntry, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut dirs = vec![String::from("/")];
    while !dirs.is_empty() {
        let listings: Vec<(String, Vec<DirEntry>)> = stream::iter(std::mem::take(&mut dirs))
            .map(|dir| async move {
                match conn.list_dir(&dir, true).await {
                    Ok(entries) => Ok((dir, entries)),
                    Err(e) if e.is_no_node() => Ok((dir, Vec::new())),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(WALK_READS)
            .try_collect()
            .await?;
        let mut files = Vec::new();
        for (dir, entries) in listings {
            for e in entries {
                let path = format!("{}/{}", dir.trim_end_matches('/'), e.name);
                if e.entry_type == DirEntryType::Directory {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        let read: Vec<Option<(FileEntry, Vec<u8>)>> = stream::iter(files)
            .map(|path| async move {
                match conn.get(&path).await {
                    Ok((bytes, version)) => Ok(Some((
                        FileEntry {
                            path,
                            version: version.to_string(),
                            size: bytes.len(),
                        },
                        bytes,
                    ))),
                    // Deleted since the listing.
                    Err(e) if e.is_no_node() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(WALK_READS)
            .try_collect()
            .await?;
        out.extend(read.into_iter().flatten());
    }
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(out)
}

/// One file, decoded where its name says what it holds.
#[derive(Clone, Debug, Serialize)]
pub struct FileView {
    /// The cell (`global` or a cell name).
    pub cell: String,
    /// Path relative to the cell's root.
    pub path: String,
    /// Version, to hand back for a compare-and-set.
    pub version: String,
    /// Size in bytes.
    pub size: usize,
    /// The record type the path implies (`topodata.Shard`), if any.
    pub record_type: Option<String>,
    /// Decoded as JSON (proto field and enum names), when it decodes.
    pub json: Option<Value>,
    /// Decoded as protobuf text, when it decodes.
    pub prototext: Option<String>,
    /// The contents as text, for files of no record type that are valid UTF-8.
    pub text: Option<String>,
    /// The contents in hex, when nothing else shows them.
    pub hex: Option<String>,
    /// Why the contents did not decode.
    pub decode_error: Option<String>,
}

/// Lower-case hex of `bytes`, 32 bytes a line.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decodes a file's contents for display; never fails (undecodable bytes are shown as hex).
pub fn decode(cell: &str, path: &str, bytes: &[u8], version: Version) -> FileView {
    let mut view = FileView {
        cell: cell.to_string(),
        path: canonical(path),
        version: version.to_string(),
        size: bytes.len(),
        record_type: message_type_for_path(path).map(String::from),
        json: None,
        prototext: None,
        text: None,
        hex: None,
        decode_error: None,
    };
    match view.record_type.as_deref() {
        Some(t) => match (to_json(bytes, t, JsonForm::Pretty), to_text(bytes, t)) {
            (Ok(j), Ok(text)) => {
                view.json = Some(j);
                view.prototext = Some(text);
            }
            (Err(e), _) | (_, Err(e)) => {
                view.decode_error = Some(e.to_string());
                view.hex = Some(hex(bytes));
            }
        },
        None => match std::str::from_utf8(bytes) {
            Ok(s) if !s.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
                view.json = serde_json::from_str(s).ok();
                view.text = Some(s.to_string());
            }
            _ => view.hex = Some(hex(bytes)),
        },
    }
    view
}

/// Reads and decodes one file.
pub async fn file(ts: &Server, cell: &str, path: &str) -> Result<FileView> {
    let c = conn(ts, cell).await?;
    let (bytes, version) = c.get(path).await?;
    Ok(decode(cell, path, &bytes, version))
}

/// Writes `json` to the record at `path` if its version is still `version`.
///
/// # Errors
/// `InvalidArgument` when the path names no record type or the JSON does not fit it;
/// `BadVersion` when someone changed the file since `version` was read.
pub async fn save(
    ts: &Server,
    cell: &str,
    path: &str,
    json: &str,
    version: Version,
) -> Result<Version> {
    let Some(t) = message_type_for_path(path) else {
        return Err(TopoError::invalid(format!(
            "{path} holds no known record type; only records can be edited"
        )));
    };
    let bytes = topo_proto::json::json_to_bytes(json, t)?;
    conn(ts, cell)
        .await?
        .update(path, &bytes, Some(&version))
        .await
}

/// A held or queued lock entry.
#[derive(Clone, Debug, Serialize)]
pub struct LockView {
    /// The locked directory (`keyspaces/commerce`).
    pub dir: String,
    /// The entry's path.
    pub entry: String,
    /// True for the entry that holds the lock, false for queued waiters.
    pub holder: bool,
    /// The action from Vitess's lock descriptor.
    pub action: String,
    /// Host name from the descriptor.
    pub host: String,
    /// User name from the descriptor.
    pub user: String,
    /// When it was taken (RFC 3339), if the descriptor says.
    pub since: Option<String>,
    /// How long it has been held, in seconds.
    pub held_secs: Option<u64>,
    /// The entry's version: on etcd and the embedded store the lock's fencing token.
    pub token: String,
    /// Held longer than the stale threshold.
    pub stale: bool,
}

/// An election and its participants.
#[derive(Clone, Debug, Serialize)]
pub struct ElectionView {
    /// The election's name.
    pub name: String,
    /// The current leader's id (empty when there is none).
    pub leader: String,
    /// Every participant's id, in queue order.
    pub participants: Vec<String>,
}

/// Locks and elections.
#[derive(Clone, Debug, Serialize)]
pub struct LocksView {
    /// Lock entries, holders first in each directory.
    pub locks: Vec<LockView>,
    /// Elections.
    pub elections: Vec<ElectionView>,
}

/// The directory an entry locks: `<dir>/locks/<entry>` (etcd, ZooKeeper, the embedded store)
/// or `<dir>/Lock` (Consul).
fn lock_dir(path: &str) -> Option<&str> {
    let (parent, _) = path.rsplit_once('/')?;
    if let Some(dir) = parent.strip_suffix("/locks") {
        return Some(dir);
    }
    path.strip_suffix("/Lock")
}

/// Reads every lock entry and election of the global cell.
pub async fn locks(ts: &Server, stale_after: Duration) -> Result<LocksView> {
    let files = all_files(ts.global().as_ref()).await?;
    let mut locks: Vec<(i64, LockView)> = Vec::new();
    let mut elections: Vec<ElectionView> = Vec::new();
    for (f, bytes) in &files {
        let rel = f.path.trim_start_matches('/');
        if let Some(rest) = rel.strip_prefix("elections/") {
            let name = rest.split('/').next().unwrap_or(rest).to_string();
            let id = String::from_utf8_lossy(bytes).into_owned();
            match elections.iter_mut().find(|e| e.name == name) {
                Some(e) => e.participants.push(id),
                None => elections.push(ElectionView {
                    name,
                    leader: String::new(),
                    participants: vec![id],
                }),
            }
            continue;
        }
        let Some(dir) = lock_dir(rel) else { continue };
        let d: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let field = |k: &str| d[k].as_str().unwrap_or("?").to_string();
        let since = d["Time"].as_str().map(String::from);
        let held = since
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| {
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                    .to_std()
                    .ok()
            });
        locks.push((
            f.version.parse().unwrap_or(i64::MAX),
            LockView {
                dir: dir.to_string(),
                entry: f.path.clone(),
                holder: false,
                action: field("Action"),
                host: field("HostName"),
                user: field("UserName"),
                since,
                held_secs: held.map(|h| h.as_secs()),
                token: f.version.clone(),
                stale: held.is_some_and(|h| h > stale_after),
            },
        ));
    }
    // The queue's head holds the lock: the oldest entry (lowest version, then name).
    locks.sort_by(|a, b| {
        (a.1.dir.as_str(), a.0, a.1.entry.as_str()).cmp(&(
            b.1.dir.as_str(),
            b.0,
            b.1.entry.as_str(),
        ))
    });
    let mut out: Vec<LockView> = Vec::new();
    for (_, mut l) in locks {
        l.holder = out.last().is_none_or(|p| p.dir != l.dir);
        out.push(l);
    }
    // The backend knows its own queue order; asking it avoids re-implementing each. The
    // elections are asked in parallel.
    join_all(elections.iter_mut().map(|e| async move {
        e.leader = match ts
            .global()
            .new_leader_participation(&e.name, "topo-serve-observer")
            .await
        {
            Ok(p) => p.current_leader_id().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
    }))
    .await;
    Ok(LocksView {
        locks: out,
        elections,
    })
}
