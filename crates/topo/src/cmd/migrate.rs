//! topo2topo, backup, restore and verify-backup.

use std::collections::HashSet;
use std::path::Path;

use base64::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use topo_core::{Conn, Result, TopoError};
use topo_proto::json::{message_type_for_path, to_json, JsonForm};
use topo_proto::topodata::CellInfo;
use topo_proto::Stored;
use toposphere::copy::{
    check_sizes, compare, copy, verify_all, write_all, CopyOptions, RecordKind,
};
use toposphere::{Server, GLOBAL_CELL};

use crate::args::{GlobalArgs, Topo2TopoArgs};
use crate::cmd::raw::walk;
use crate::cmd::{open, read_file, write_file};

/// The format name written into every backup.
const FORMAT: &str = "toposphere-backup";

/// A backup file: every non-ephemeral key of the global topology and of every cell.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Backup {
    format: String,
    format_version: u32,
    created: String,
    implementation: String,
    cells: Vec<CellBackup>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CellBackup {
    cell: String,
    root: String,
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// Path relative to the cell's root.
    path: String,
    /// The version in the source (for reference; restore writes new versions).
    version: String,
    /// The raw bytes, base64.
    value: String,
    /// The record type, when the path names one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    r#type: Option<String>,
    /// The decoded record, for people reading the file.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    json: Option<Value>,
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn kinds(a: &Topo2TopoArgs) -> Vec<RecordKind> {
    let mut k = Vec::new();
    let all = a.all;
    let mut add = |on: bool, kind| {
        if on || all {
            k.push(kind);
        }
    };
    add(a.do_cells_aliases, RecordKind::CellsAlias);
    add(a.do_keyspaces, RecordKind::Keyspaces);
    add(a.do_shards, RecordKind::Shards);
    add(a.do_shard_replications, RecordKind::ShardReplications);
    add(a.do_tablets, RecordKind::Tablets);
    add(a.do_routing_rules, RecordKind::RoutingRules);
    add(a.do_serving, RecordKind::SrvKeyspaces);
    add(a.do_serving, RecordKind::SrvVSchemas);
    if a.do_cell_info {
        k.push(RecordKind::CellInfo);
    }
    k
}

pub(crate) async fn topo2topo(ts: &Server, g: &GlobalArgs, a: Topo2TopoArgs) -> Result<()> {
    let kinds = kinds(&a);
    if kinds.is_empty() {
        return Err(TopoError::invalid(
            "nothing to do: give --do-keyspaces, --do-shards, --do-shard-replications, --do-tablets, --do-routing-rules, --do-cells-aliases, --do-serving, --do-cell-info or --all",
        ));
    }
    let from = match (&a.from_implementation, &a.from_server, &a.from_root) {
        (None, None, None) => ts.clone(),
        _ => {
            open(
                g,
                a.from_implementation
                    .as_deref()
                    .unwrap_or(&g.implementation),
                a.from_server.as_deref().unwrap_or(&g.server_address),
                a.from_root.as_deref().unwrap_or(&g.root),
            )
            .await?
        }
    };
    let to = open(g, &a.to_implementation, &a.to_server, &a.to_root).await?;
    if a.compare {
        let n = compare(&from, &to, &kinds).await?;
        crate::out!("Topologies are in sync ({n} records compared)");
        return Ok(());
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message("copying");
    let how = CopyOptions {
        dry_run: a.dry_run,
        skip_too_large: a.skip_too_large,
        concurrency: a.concurrency,
    };
    let summary = copy(&from, &to, &kinds, how, &|r| {
        bar.inc(1);
        bar.set_message(r.to_string());
    })
    .await;
    bar.finish_and_clear();
    let summary = summary?;
    report_skipped(&summary.skipped);
    let verb = if a.dry_run { "Would copy" } else { "Copied" };
    crate::out!(
        "{verb} {} records ({} already up to date): {}",
        summary.copied,
        summary.unchanged,
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

async fn dump(conn: &dyn Conn, cell: &str, root: &str, bar: &ProgressBar) -> Result<CellBackup> {
    let paths = walk(conn, "/").await?;
    bar.inc_length(paths.len() as u64);
    let mut entries = Vec::with_capacity(paths.len());
    for p in paths {
        let (bytes, version) = match conn.get(&p).await {
            Ok(v) => v,
            // Deleted while we walked: it is not part of the backup.
            Err(e) if e.is_no_node() => continue,
            Err(e) => return Err(e),
        };
        let ty = message_type_for_path(&p);
        entries.push(Entry {
            json: ty.and_then(|t| to_json(&bytes, t, JsonForm::Pretty).ok()),
            r#type: ty.map(String::from),
            value: base64::engine::general_purpose::STANDARD.encode(&bytes),
            version: version.to_string(),
            path: p,
        });
        bar.inc(1);
    }
    Ok(CellBackup {
        cell: cell.to_string(),
        root: root.to_string(),
        entries,
    })
}

pub(crate) async fn backup(ts: &Server, file: &Path) -> Result<()> {
    let bar = progress(0, "backing up");
    let global_root = String::new();
    let mut cells = vec![dump(ts.global().as_ref(), GLOBAL_CELL, &global_root, &bar).await?];
    for cell in ts.get_cell_info_names().await? {
        let info = ts.get_cell_info(&cell, true).await?;
        let conn = ts.conn_for_cell(&cell).await?;
        cells.push(dump(conn.as_ref(), &cell, &info.root, &bar).await?);
    }
    bar.finish_and_clear();
    let total: usize = cells.iter().map(|c| c.entries.len()).sum();
    let b = Backup {
        format: FORMAT.into(),
        format_version: 1,
        created: chrono::Utc::now().to_rfc3339(),
        implementation: ts.implementation().into(),
        cells,
    };
    let text = serde_json::to_vec_pretty(&b)
        .map_err(|e| TopoError::invalid(format!("cannot encode the backup: {e}")))?;
    // Written beside the file, then renamed: a backup interrupted half-way never looks
    // like a whole one.
    let partial = file.with_file_name(format!(
        ".{}.partial-{}",
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    write_file(&partial, &text)?;
    std::fs::rename(&partial, file).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        TopoError::invalid(format!("cannot write {}: {e}", file.display()))
    })?;
    crate::out!(
        "Backed up {total} keys from {} cells to {}",
        b.cells.len(),
        file.display()
    );
    Ok(())
}

pub(crate) fn load(file: &Path) -> Result<Backup> {
    let b: Backup = serde_json::from_slice(&read_file(file)?).map_err(|e| {
        TopoError::invalid(format!(
            "{} is not a toposphere backup: {e}",
            file.display()
        ))
    })?;
    if b.format != FORMAT || b.format_version != 1 {
        return Err(TopoError::invalid(format!(
            "{} has format {} version {}; this topo reads {FORMAT} version 1",
            file.display(),
            b.format,
            b.format_version
        )));
    }
    Ok(b)
}

fn entry_bytes(file: &Path, cell: &str, e: &Entry) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(&e.value)
        .map_err(|err| {
            TopoError::invalid(format!(
                "{}: {cell}:{}: bad base64: {err}",
                file.display(),
                e.path
            ))
        })
}

/// The keys of one cell of a backup, decoded: `(path, bytes)`.
pub(crate) type CellKeys = (String, Vec<(String, Vec<u8>)>);

/// Checks a backup and decodes it: every value is valid base64 and every record's bytes
/// decode to the JSON stored beside them. Returns each cell's keys.
pub(crate) fn check(file: &Path, b: &Backup) -> Result<Vec<CellKeys>> {
    let mut cells = Vec::with_capacity(b.cells.len());
    for c in &b.cells {
        let mut keys = Vec::with_capacity(c.entries.len());
        for e in &c.entries {
            let bytes = entry_bytes(file, &c.cell, e)?;
            if let Some(t) = &e.r#type {
                let decoded = to_json(&bytes, t, JsonForm::Pretty).map_err(|err| {
                    TopoError::invalid(format!(
                        "{}: {}:{} does not decode as {t}: {err}",
                        file.display(),
                        c.cell,
                        e.path
                    ))
                })?;
                if e.json.as_ref().is_some_and(|j| *j != decoded) {
                    return Err(TopoError::invalid(format!(
                        "{}: {}:{}: the stored JSON does not match the stored bytes",
                        file.display(),
                        c.cell,
                        e.path
                    )));
                }
            }
            keys.push((e.path.clone(), bytes));
        }
        cells.push((c.cell.clone(), keys));
    }
    Ok(cells)
}

pub(crate) fn verify_backup(file: &Path) -> Result<()> {
    let b = load(file)?;
    let n: usize = check(file, &b)?.iter().map(|(_, keys)| keys.len()).sum();
    crate::out!(
        "{} is a valid backup: {n} keys in {} cells, taken {} from {}",
        file.display(),
        b.cells.len(),
        b.created,
        b.implementation
    );
    Ok(())
}

/// Prints, on stderr, what was left out for being over the target's value limit.
fn report_skipped<L: std::fmt::Display>(skipped: &[L]) {
    if !skipped.is_empty() {
        eprintln!(
            "topo: left out {} value(s) over the target's size limit:",
            skipped.len()
        );
        for s in skipped {
            eprintln!("  {s}");
        }
    }
}

/// How `restore` treats the target.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RestoreOptions {
    /// Restore into a topology that holds data.
    pub(crate) force: bool,
    /// Do not ask before restoring over data.
    pub(crate) yes: bool,
    /// Keep the backup's cell addresses.
    pub(crate) keep_cell_addresses: bool,
    /// Leave out values over the target's limit instead of refusing.
    pub(crate) skip_too_large: bool,
    /// Writes and reads in flight at once.
    pub(crate) concurrency: usize,
}

pub(crate) async fn restore(
    ts: &Server,
    g: &GlobalArgs,
    file: &Path,
    how: RestoreOptions,
) -> Result<()> {
    let b = load(file)?;
    let mut cells = check(file, &b)?;
    if !cells.iter().any(|(cell, _)| cell == GLOBAL_CELL) {
        return Err(TopoError::invalid(format!(
            "{} has no global cell",
            file.display()
        )));
    }
    // Every value against the target's limit before the first write (cells are on the
    // same implementation, so the global connection's limit holds for them too).
    let skipped = check_sizes(
        ts.global().value_limit(),
        cells.iter().flat_map(|(cell, keys)| {
            keys.iter()
                .map(move |(path, bytes)| (format!("{cell}:{path}"), bytes.len()))
        }),
        how.skip_too_large,
    )?;
    if !skipped.is_empty() {
        let left_out: HashSet<&str> = skipped.iter().map(String::as_str).collect();
        for (cell, keys) in &mut cells {
            keys.retain(|(path, _)| !left_out.contains(format!("{cell}:{path}").as_str()));
        }
    }
    match ts.global().list_dir("/", false).await {
        Ok(entries) if !entries.is_empty() && !how.force => {
            return Err(TopoError::precondition(format!(
                "the target topology {} is not empty; use --force to restore into it",
                g.root
            )))
        }
        Ok(entries) if !entries.is_empty() => {
            let names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
            crate::cmd::confirm(
                &format!(
                    "restore --force writes {} keys over the topology at {} {} {}, which holds: \
                     {}; keys of the backup replace the ones there, other keys stay",
                    cells.iter().map(|(_, keys)| keys.len()).sum::<usize>(),
                    g.implementation,
                    g.server_address,
                    g.root,
                    names.join(", ")
                ),
                how.yes,
            )?;
        }
        Err(e) if !e.is_no_node() => return Err(e),
        _ => {}
    }
    // The global cell first: its CellInfo records make the other cells reachable.
    cells.sort_by_key(|(cell, _)| cell != GLOBAL_CELL);
    let total = cells.iter().map(|(_, keys)| keys.len()).sum::<usize>();
    let bar = progress(total as u64, "restoring");
    let tick = |_: &str| bar.inc(1);
    let mut written = Vec::with_capacity(cells.len());
    for (cell, mut keys) in cells {
        let conn = if cell == GLOBAL_CELL {
            if !how.keep_cell_addresses {
                for (path, bytes) in &mut keys {
                    if path.starts_with("/cells/") && path.ends_with("/CellInfo") {
                        // Point the cell at the target's server; keep its root.
                        let mut info = Stored::<CellInfo>::decode(bytes, path)?;
                        info.server_address = g.server_address.clone();
                        *bytes = info.encode();
                    }
                }
            }
            ts.global().clone()
        } else {
            ts.conn_for_cell(&cell).await.map_err(|e| {
                TopoError::precondition(format!(
                    "cannot reach cell {cell} of the backup after restoring its record: {e}"
                ))
            })?
        };
        write_all(conn.as_ref(), &keys, how.concurrency, &tick).await?;
        written.push((cell, conn, keys));
    }
    bar.finish_and_clear();
    report_skipped(&skipped);
    // Read everything back: the restore is done only when the topology equals the archive.
    for (cell, conn, keys) in &written {
        verify_all(conn.as_ref(), cell, keys, how.concurrency).await?;
    }
    crate::out!(
        "Restored and verified {} keys in {} cells from {}",
        total,
        b.cells.len(),
        file.display()
    );
    Ok(())
}
