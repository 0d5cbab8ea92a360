//! Keyspaces and shards (spec §3.2, §3.3).

use std::collections::BTreeMap;

use futures::{stream, StreamExt, TryStreamExt};
use topo_core::{ErrorKind, Result, TopoError, Version};
use topo_proto::names::{alias_cmp, key_ranges_intersect};
use topo_proto::topodata::{shard, KeyRange, Keyspace, Shard, TabletAlias, TabletType};
use topo_proto::Stored;

use crate::locks::TopoLock;
use crate::names::{validate_object_name, validate_shard_name};
use crate::records::{read, update_loop, IfMissing};
use crate::{paths, Partial, Server};

/// How many shard reads run at once when shards are read one by one.
const SHARD_READ_CONCURRENCY: usize = 32;

/// A keyspace record with its name and version.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyspaceInfo {
    /// The keyspace's name.
    pub name: String,
    /// The record.
    pub keyspace: Stored<Keyspace>,
    /// Its version when read.
    pub version: Version,
}

/// A shard record with its keyspace, name and version.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardInfo {
    /// The keyspace.
    pub keyspace: String,
    /// The shard's name.
    pub name: String,
    /// The record.
    pub shard: Stored<Shard>,
    /// Its version when read.
    pub version: Version,
}

impl ShardInfo {
    /// `keyspace/shard`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.keyspace, self.name)
    }

    /// True when the shard has a primary.
    pub fn has_primary(&self) -> bool {
        self.shard.primary_alias.is_some()
    }

    /// Adds or removes `tables` in the denied tables of `tablet_type` for `cells` (Vitess's
    /// `UpdateDeniedTables`). A control left with no tables is removed.
    ///
    /// # Errors
    /// `InvalidArgument` when cells are given for PRIMARY (its control applies everywhere).
    pub fn update_denied_tables(
        &mut self,
        tablet_type: TabletType,
        cells: &[String],
        remove: bool,
        tables: &[String],
    ) -> Result<()> {
        if tablet_type == TabletType::Primary && !cells.is_empty() {
            return Err(TopoError::invalid(
                "the PRIMARY denied tables apply to every cell; give no cells",
            ));
        }
        let controls = &mut self.shard.tablet_controls;
        let pos = controls
            .iter()
            .position(|tc| tc.tablet_type == tablet_type as i32);
        match (pos, remove) {
            (None, true) => {}
            (None, false) => controls.push(shard::TabletControl {
                tablet_type: tablet_type as i32,
                cells: cells.to_vec(),
                denied_tables: tables.to_vec(),
                frozen: false,
            }),
            (Some(i), true) => {
                let tc = &mut controls[i];
                tc.denied_tables.retain(|t| !tables.contains(t));
                if !cells.is_empty() {
                    tc.cells.retain(|c| !cells.contains(c));
                }
                if tc.denied_tables.is_empty() || (!cells.is_empty() && tc.cells.is_empty()) {
                    controls.remove(i);
                }
            }
            (Some(i), false) => {
                let tc = &mut controls[i];
                for t in tables {
                    if !tc.denied_tables.contains(t) {
                        tc.denied_tables.push(t.clone());
                    }
                }
                for c in cells {
                    if !tc.cells.contains(c) {
                        tc.cells.push(c.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Vitess lets keyspace names arrive SQL-quoted with backticks.
fn unescape(ks: &str) -> &str {
    ks.strip_prefix('`')
        .and_then(|k| k.strip_suffix('`'))
        .unwrap_or(ks)
}

impl Server {
    /// Creates a keyspace.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad name; `NodeExists` when it exists.
    pub async fn create_keyspace(&self, ks: &str, value: &Keyspace) -> Result<()> {
        validate_object_name(ks)?;
        self.global()
            .create(&paths::keyspace(ks), &Stored::new(value.clone()).encode())
            .await?;
        tracing::info!(keyspace = ks, "created keyspace");
        Ok(())
    }

    /// Reads a keyspace.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad name; `NoNode` when absent.
    pub async fn get_keyspace(&self, ks: &str) -> Result<KeyspaceInfo> {
        validate_object_name(ks)?;
        let v = read::<Keyspace>(self.global().as_ref(), &paths::keyspace(ks)).await?;
        Ok(KeyspaceInfo {
            name: ks.to_string(),
            keyspace: v.value,
            version: v.version,
        })
    }

    /// Writes a changed keyspace under its lock (compare-and-set with the version it was
    /// read at, fenced by the lock), and updates `info.version`.
    ///
    /// # Errors
    /// `InvalidArgument` when `lock` is not this keyspace's lock; `LockLost`; `BadVersion`
    /// when the record changed since it was read.
    pub async fn update_keyspace(&self, lock: &TopoLock, info: &mut KeyspaceInfo) -> Result<()> {
        lock.require_keyspace(&info.name).await?;
        info.version = self
            .global()
            .update_fenced(
                &lock.fence(),
                &paths::keyspace(&info.name),
                &info.keyspace.encode(),
                Some(&info.version),
            )
            .await?;
        Ok(())
    }

    /// Deletes a keyspace's `Keyspace` and `VSchema` records (not its shards; see
    /// [`Server::delete_keyspace_recursive`]).
    ///
    /// # Errors
    /// `NoNode` when the keyspace record is absent.
    pub async fn delete_keyspace(&self, ks: &str) -> Result<()> {
        validate_object_name(ks)?;
        self.global().delete(&paths::keyspace(ks), None).await?;
        crate::records::delete_if_exists(self.global().as_ref(), &paths::vschema(ks), None).await
    }

    /// The names of every keyspace, sorted.
    pub async fn get_keyspaces(&self) -> Result<Vec<String>> {
        match self.global().list_dir("keyspaces", false).await {
            Ok(e) => Ok(e.into_iter().map(|e| e.name).collect()),
            Err(e) if e.is_no_node() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The names of a keyspace's shards, sorted.
    ///
    /// # Errors
    /// `NoNode` when the keyspace does not exist.
    pub async fn get_shard_names(&self, ks: &str) -> Result<Vec<String>> {
        validate_object_name(ks)?;
        match self.global().list_dir(&paths::shards_dir(ks), false).await {
            Ok(e) => Ok(e.into_iter().map(|e| e.name).collect()),
            Err(e) if e.is_no_node() => {
                self.get_keyspace(ks).await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Every shard of a keyspace by name, in one prefix read where the backend can (only
    /// files named `Shard` count, so lock entries never look like shards, Vitess #15118),
    /// else shard by shard.
    ///
    /// # Errors
    /// `NoNode` when the keyspace does not exist.
    pub async fn find_all_shards_in_keyspace(
        &self,
        ks: &str,
    ) -> Result<BTreeMap<String, ShardInfo>> {
        let ks = unescape(ks);
        validate_object_name(ks)?;
        let prefix = format!("{}/", paths::shards_dir(ks));
        match self.global().list(&prefix).await {
            Ok(items) => {
                let mut out = BTreeMap::new();
                for kv in items {
                    let mut parts = kv.key.rsplit('/');
                    if parts.next() != Some("Shard") {
                        continue;
                    }
                    let Some(name) = parts.next() else { continue };
                    if validate_object_name(name).is_err() {
                        tracing::warn!(key = %kv.key, "skipping a shard with an invalid name");
                        continue;
                    }
                    let shard = Stored::decode(&kv.value, &kv.key)?;
                    out.insert(
                        name.to_string(),
                        ShardInfo {
                            keyspace: ks.to_string(),
                            name: name.to_string(),
                            shard,
                            version: kv.version,
                        },
                    );
                }
                Ok(out)
            }
            Err(e) if e.is_no_node() => {
                self.get_keyspace(ks).await?;
                Ok(BTreeMap::new())
            }
            Err(e) if e.is(ErrorKind::NoImplementation) || e.is(ErrorKind::ResourceExhausted) => {
                tracing::debug!(
                    keyspace = ks,
                    "prefix reads unavailable ({e}); reading shards one by one"
                );
                let names = self.get_shard_names(ks).await?;
                let shards: Vec<Option<ShardInfo>> = stream::iter(names)
                    .map(|name| async move {
                        match self.get_shard(ks, &name).await {
                            Ok(s) => Ok(Some(s)),
                            Err(e) if e.is_no_node() => {
                                tracing::warn!(keyspace = ks, shard = %name, "shard vanished while listing");
                                Ok(None)
                            }
                            Err(e) => Err(e),
                        }
                    })
                    .buffer_unordered(SHARD_READ_CONCURRENCY)
                    .try_collect()
                    .await?;
                Ok(shards
                    .into_iter()
                    .flatten()
                    .map(|s| (s.name.clone(), s))
                    .collect())
            }
            Err(e) => Err(e),
        }
    }

    /// The serving shards of a keyspace (`is_primary_serving`), ordered by key range.
    ///
    /// # Errors
    /// `FailedPrecondition` when no shard serves.
    pub async fn get_serving_shards(&self, ks: &str) -> Result<Vec<ShardInfo>> {
        let mut shards: Vec<ShardInfo> = self
            .find_all_shards_in_keyspace(ks)
            .await?
            .into_values()
            .filter(|s| s.shard.is_primary_serving)
            .collect();
        if shards.is_empty() {
            return Err(TopoError::precondition(format!(
                "keyspace {ks} has no serving shards"
            )));
        }
        shards.sort_by(|a, b| {
            let ka = a
                .shard
                .key_range
                .as_ref()
                .map(|k| k.start.clone())
                .unwrap_or_default();
            let kb = b
                .shard
                .key_range
                .as_ref()
                .map(|k| k.start.clone())
                .unwrap_or_default();
            ka.cmp(&kb)
        });
        Ok(shards)
    }

    /// The one shard of an unsharded keyspace.
    ///
    /// # Errors
    /// `InvalidArgument` when the keyspace has zero or several shards.
    pub async fn get_only_shard(&self, ks: &str) -> Result<ShardInfo> {
        let mut all = self.find_all_shards_in_keyspace(ks).await?;
        if all.len() != 1 {
            return Err(TopoError::invalid(format!(
                "keyspace {ks} must have exactly one shard, it has {}",
                all.len()
            )));
        }
        Ok(all.pop_first().map(|(_, s)| s).expect("one shard"))
    }

    /// The keyspace's durability policy (`none` when unset).
    pub async fn get_keyspace_durability(&self, ks: &str) -> Result<String> {
        let k = self.get_keyspace(ks).await?;
        Ok(if k.keyspace.durability_policy.is_empty() {
            "none".into()
        } else {
            k.keyspace.durability_policy.clone()
        })
    }

    /// The keyspace's sidecar database name (`_vt` when unset).
    pub async fn get_sidecar_db_name(&self, ks: &str) -> Result<String> {
        let k = self.get_keyspace(ks).await?;
        Ok(if k.keyspace.sidecar_db_name.is_empty() {
            "_vt".into()
        } else {
            k.keyspace.sidecar_db_name.clone()
        })
    }

    /// Reads a shard.
    ///
    /// # Errors
    /// `InvalidArgument` for bad names; `NoNode` when absent.
    pub async fn get_shard(&self, ks: &str, shard: &str) -> Result<ShardInfo> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        let v = read::<Shard>(self.global().as_ref(), &paths::shard(ks, shard)).await?;
        Ok(ShardInfo {
            keyspace: ks.to_string(),
            name: shard.to_string(),
            shard: v.value,
            version: v.version,
        })
    }

    /// Creates a shard under the keyspace lock. Its key range comes from its name; it is
    /// primary-serving unless another shard already covers any of its range.
    ///
    /// # Errors
    /// `InvalidArgument` for bad names; `NodeExists` when it exists; `NoNode` when the
    /// keyspace has nothing to lock.
    pub async fn create_shard(&self, ks: &str, shard: &str) -> Result<ShardInfo> {
        validate_object_name(ks)?;
        let (_, key_range) = validate_shard_name(shard)?;
        let lock = self.lock_keyspace(ks, "CreateShard").await?;
        let result = self.create_shard_locked(&lock, ks, shard, key_range).await;
        let unlocked = lock.unlock().await;
        let info = result?;
        unlocked?;
        Ok(info)
    }

    async fn create_shard_locked(
        &self,
        lock: &TopoLock,
        ks: &str,
        shard: &str,
        key_range: Option<KeyRange>,
    ) -> Result<ShardInfo> {
        let existing = self.find_all_shards_in_keyspace(ks).await?;
        let serving = existing.values().all(|s| {
            s.shard.key_range.is_some()
                && key_range.is_some()
                && !key_ranges_intersect(s.shard.key_range.as_ref(), key_range.as_ref())
        });
        let value = Stored::new(Shard {
            key_range,
            is_primary_serving: serving,
            ..Default::default()
        });
        let version = self
            .global()
            .create_fenced(&lock.fence(), &paths::shard(ks, shard), &value.encode())
            .await?;
        tracing::info!(keyspace = ks, shard, serving, "created shard");
        Ok(ShardInfo {
            keyspace: ks.to_string(),
            name: shard.to_string(),
            shard: value,
            version,
        })
    }

    /// Reads a shard, creating it (and its keyspace and an empty VSchema) when absent.
    pub async fn get_or_create_shard(&self, ks: &str, shard: &str) -> Result<ShardInfo> {
        match self.get_shard(ks, shard).await {
            Err(e) if e.is_no_node() => {}
            other => return other,
        }
        let keyspace = Keyspace {
            sidecar_db_name: "_vt".into(),
            ..Default::default()
        };
        match self.create_keyspace(ks, &keyspace).await {
            Err(e) if !e.is(ErrorKind::NodeExists) => return Err(e),
            _ => {}
        }
        self.ensure_vschema(ks).await?;
        match self.create_shard(ks, shard).await {
            Err(e) if !e.is(ErrorKind::NodeExists) => return Err(e),
            _ => {}
        }
        self.get_shard(ks, shard).await
    }

    /// Read-modify-write of a shard, retried on version conflicts. With a lock (keyspace or
    /// shard) the writes are fenced by it. `update` returning `NoUpdateNeeded` skips the
    /// write (then `Ok(None)`).
    ///
    /// # Errors
    /// `NoNode` when the shard does not exist; `LockLost`; errors from `update`.
    pub async fn update_shard_fields<F>(
        &self,
        ks: &str,
        shard: &str,
        lock: Option<&TopoLock>,
        mut update: F,
    ) -> Result<Option<ShardInfo>>
    where
        F: FnMut(&mut ShardInfo) -> Result<()> + Send,
    {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        let fence = lock.map(TopoLock::fence);
        let r = update_loop(
            self.global().as_ref(),
            &paths::shard(ks, shard),
            fence.as_ref(),
            IfMissing::Fail,
            |s: &mut Stored<Shard>| {
                let mut info = ShardInfo {
                    keyspace: ks.to_string(),
                    name: shard.to_string(),
                    shard: s.clone(),
                    version: Version::new(0),
                };
                update(&mut info)?;
                *s = info.shard;
                Ok(())
            },
        )
        .await?;
        Ok(r.map(|v| ShardInfo {
            keyspace: ks.to_string(),
            name: shard.to_string(),
            shard: v.value,
            version: v.version,
        }))
    }

    /// Deletes a shard's record (not its tablets or replication data).
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn delete_shard(&self, ks: &str, shard: &str) -> Result<()> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        self.global().delete(&paths::shard(ks, shard), None).await
    }

    /// The aliases of a shard's tablets in `cells` (every cell when empty): the shard
    /// primary's alias plus each cell's replication graph, sorted by cell and uid. Cells that
    /// cannot be read are reported in the partial error.
    pub async fn find_all_tablet_aliases_in_shard_by_cell(
        &self,
        ks: &str,
        shard: &str,
        cells: &[String],
    ) -> Result<Partial<Vec<TabletAlias>>> {
        let si = self.get_shard(ks, shard).await?;
        let cells = self.cells_or_all(cells).await?;
        let mut aliases: Vec<TabletAlias> = Vec::new();
        if let Some(p) = &si.shard.primary_alias {
            if cells.contains(&p.cell) {
                aliases.push(p.clone());
            }
        }
        let mut failed = Vec::new();
        for cell in &cells {
            match self.get_shard_replication(cell, ks, shard).await {
                Ok(sr) => {
                    aliases.extend(sr.value.nodes.iter().filter_map(|n| n.tablet_alias.clone()))
                }
                Err(e) if e.is_no_node() => {}
                Err(e) => {
                    tracing::warn!(
                        cell,
                        keyspace = ks,
                        shard,
                        "cannot read the replication graph: {e}"
                    );
                    failed.push(cell.clone());
                }
            }
        }
        aliases.sort_by(alias_cmp);
        aliases.dedup();
        Ok(Partial::new(aliases, failed))
    }
}
