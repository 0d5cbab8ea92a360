//! `backup --keep N DIR`: timestamped backups in a directory, keeping the newest N; and
//! `diff-backups`: two backups compared key for key, decoded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use topo_proto::json::{message_type_for_path, to_json, JsonForm};

use topo_core::{Result, TopoError};
use toposphere::Server;

use crate::cmd::migrate;

/// Rotated backups are named `<PREFIX><UTC time><SUFFIX>`; nothing else in the directory is
/// touched.
const PREFIX: &str = "topo-backup-";
const SUFFIX: &str = ".json";
/// The time in a rotated backup's name: sorting the names sorts the backups by age.
const TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

/// The rotated backups in `dir`, oldest first, each with the time its name gives.
pub(crate) fn list(dir: &Path) -> Result<Vec<(PathBuf, chrono::DateTime<chrono::Utc>)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| TopoError::invalid(format!("cannot list {}: {e}", dir.display())))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| TopoError::invalid(format!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(time) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, TIME_FORMAT).ok())
        else {
            continue;
        };
        found.push((entry.path(), time.and_utc()));
    }
    found.sort_by_key(|(_, t)| *t);
    Ok(found)
}

/// Writes a new backup into `dir` (created if missing), then removes the oldest rotated
/// backups so that `keep` remain.
pub(crate) async fn backup_rotated(ts: &Server, dir: &Path, keep: usize) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(TopoError::invalid(format!(
            "backup --keep: {} is not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| TopoError::invalid(format!("cannot create {}: {e}", dir.display())))?;
    let name = format!("{PREFIX}{}{SUFFIX}", chrono::Utc::now().format(TIME_FORMAT));
    migrate::backup(ts, &dir.join(name)).await?;
    let backups = list(dir)?;
    let excess = backups.len().saturating_sub(keep);
    for (old, _) in &backups[..excess] {
        std::fs::remove_file(old)
            .map_err(|e| TopoError::invalid(format!("cannot remove {}: {e}", old.display())))?;
        crate::out!("Removed old backup {}", old.display());
    }
    Ok(())
}

/// A backup's keys by `cell:path`, each decoded to JSON when its path names a record (raw
/// bytes otherwise), so backups of different backends compare.
fn decoded(file: &Path, ignore_cell_addresses: bool) -> Result<BTreeMap<String, Value>> {
    let backup = migrate::load(file)?;
    let mut keys = BTreeMap::new();
    for (cell, entries) in migrate::check(file, &backup)? {
        for (path, bytes) in entries {
            let mut value = match message_type_for_path(&path) {
                Some(t) => to_json(&bytes, t, JsonForm::Pretty).map_err(|e| {
                    TopoError::invalid(format!(
                        "{}: {cell}:{path} does not decode as {t}: {e}",
                        file.display()
                    ))
                })?,
                None => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            };
            if ignore_cell_addresses && path.ends_with("/CellInfo") {
                if let Some(o) = value.as_object_mut() {
                    o.remove("server_address");
                }
            }
            keys.insert(format!("{cell}:{path}"), value);
        }
    }
    Ok(keys)
}

/// Compares two backups key for key, decoded; lists every difference and fails when there
/// is one.
pub(crate) fn diff(a: &Path, b: &Path, ignore_cell_addresses: bool) -> Result<ExitCode> {
    let left = decoded(a, ignore_cell_addresses)?;
    let right = decoded(b, ignore_cell_addresses)?;
    let mut differences = 0;
    for (key, value) in &left {
        match right.get(key) {
            None => crate::out!("only in {}: {key}", a.display()),
            Some(other) if other != value => crate::out!("differs: {key}"),
            Some(_) => continue,
        }
        differences += 1;
    }
    for key in right.keys().filter(|k| !left.contains_key(*k)) {
        crate::out!("only in {}: {key}", b.display());
        differences += 1;
    }
    if differences == 0 {
        crate::out!(
            "{} and {} hold the same {} keys, decoded",
            a.display(),
            b.display(),
            left.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        crate::out!("{differences} keys differ");
        Ok(ExitCode::FAILURE)
    }
}
