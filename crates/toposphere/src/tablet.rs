//! Tablets and the replication graph (spec §3.4, §3.5).

use std::collections::BTreeMap;

use futures::{stream, StreamExt};
use topo_core::{ErrorKind, Result, TopoError, Version};
use topo_proto::names::{alias_cmp, alias_string, parse_alias};
use topo_proto::topodata::{
    shard_replication, shard_replication_error, ShardReplication, ShardReplicationError, Tablet,
    TabletAlias, TabletType,
};
use topo_proto::vttime;
use topo_proto::Stored;

use crate::names::{validate_cell_name, validate_object_name, validate_shard_name};
use crate::records::{self, read, update_loop, IfMissing, Versioned};
use crate::{paths, Partial, Server};

/// How many tablet reads run at once when tablets are read one by one.
const TABLET_READ_CONCURRENCY: usize = 32;

/// A tablet record with its version.
#[derive(Clone, Debug, PartialEq)]
pub struct TabletInfo {
    /// The record.
    pub tablet: Stored<Tablet>,
    /// Its version when read.
    pub version: Version,
}

impl TabletInfo {
    /// The tablet's alias (`cell-0000000100`).
    pub fn alias(&self) -> String {
        self.tablet
            .alias
            .as_ref()
            .map(alias_string)
            .unwrap_or_default()
    }

    /// The tablet's type.
    pub fn tablet_type(&self) -> TabletType {
        TabletType::try_from(self.tablet.r#type).unwrap_or(TabletType::Unknown)
    }
}

/// Checks an alias's cell and returns (cell, text form).
fn alias_parts(alias: &TabletAlias) -> Result<(String, String)> {
    validate_cell_name(&alias.cell)?;
    Ok((alias.cell.clone(), alias_string(alias)))
}

/// The current time as Vitess's `vttime.Time`.
pub fn now_vttime() -> vttime::Time {
    let now = chrono::Utc::now();
    vttime::Time {
        seconds: now.timestamp(),
        nanoseconds: now.timestamp_subsec_nanos() as i32,
    }
}

impl Server {
    /// Creates a tablet record in its cell and adds it to that cell's replication graph
    /// for its shard.
    ///
    /// # Errors
    /// `InvalidArgument` for bad names; `NodeExists` when the tablet exists.
    pub async fn create_tablet(&self, tablet: &Tablet) -> Result<()> {
        let alias = tablet
            .alias
            .clone()
            .ok_or_else(|| TopoError::invalid("tablet has no alias"))?;
        let (cell, text) = alias_parts(&alias)?;
        validate_object_name(&tablet.keyspace)?;
        validate_object_name(&tablet.shard)?;
        let conn = self.conn_for_cell(&cell).await?;
        conn.create(&paths::tablet(&text), &Stored::new(tablet.clone()).encode())
            .await?;
        self.update_shard_replication_record(&cell, &tablet.keyspace, &tablet.shard, &alias)
            .await?;
        tracing::info!(tablet = %text, "created tablet");
        Ok(())
    }

    /// Reads a tablet.
    ///
    /// # Errors
    /// `NoNode` when absent (or its cell is unknown).
    pub async fn get_tablet(&self, alias: &TabletAlias) -> Result<TabletInfo> {
        let (cell, text) = alias_parts(alias)?;
        let conn = self.conn_for_cell(&cell).await?;
        let v = read::<Tablet>(conn.as_ref(), &paths::tablet(&text)).await?;
        Ok(TabletInfo {
            tablet: v.value,
            version: v.version,
        })
    }

    /// Writes a changed tablet with compare-and-set on the version it was read at, and
    /// updates `info.version`.
    ///
    /// # Errors
    /// `BadVersion` when it changed since it was read.
    pub async fn update_tablet(&self, info: &mut TabletInfo) -> Result<()> {
        let alias = info
            .tablet
            .alias
            .clone()
            .ok_or_else(|| TopoError::invalid("tablet has no alias"))?;
        let (cell, text) = alias_parts(&alias)?;
        let conn = self.conn_for_cell(&cell).await?;
        info.version = records::write(
            conn.as_ref(),
            &paths::tablet(&text),
            &info.tablet,
            Some(&info.version),
            None,
        )
        .await?;
        Ok(())
    }

    /// Read-modify-write of a tablet, retried on version conflicts. `update` returning
    /// `NoUpdateNeeded` skips the write (then `Ok(None)`).
    ///
    /// # Errors
    /// `NoNode` when the tablet does not exist; errors from `update`.
    pub async fn update_tablet_fields<F>(
        &self,
        alias: &TabletAlias,
        update: F,
    ) -> Result<Option<TabletInfo>>
    where
        F: FnMut(&mut Stored<Tablet>) -> Result<()> + Send,
    {
        let (cell, text) = alias_parts(alias)?;
        let conn = self.conn_for_cell(&cell).await?;
        let r = update_loop(
            conn.as_ref(),
            &paths::tablet(&text),
            None,
            IfMissing::Fail,
            update,
        )
        .await?;
        Ok(r.map(|v| TabletInfo {
            tablet: v.value,
            version: v.version,
        }))
    }

    /// Deletes a tablet's record (its replication entry stays; see
    /// [`Server::delete_tablet_and_replication`]).
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn delete_tablet(&self, alias: &TabletAlias) -> Result<()> {
        let (cell, text) = alias_parts(alias)?;
        self.conn_for_cell(&cell)
            .await?
            .delete(&paths::tablet(&text), None)
            .await
    }

    /// Removes a tablet from its shard's replication graph (a missing entry is fine), then
    /// deletes its record (Vitess's `topotools.DeleteTablet`).
    ///
    /// # Errors
    /// `NoNode` when the tablet does not exist.
    pub async fn delete_tablet_and_replication(&self, tablet: &Tablet) -> Result<()> {
        let alias = tablet
            .alias
            .clone()
            .ok_or_else(|| TopoError::invalid("tablet has no alias"))?;
        match self
            .remove_shard_replication_record(&alias.cell, &tablet.keyspace, &tablet.shard, &alias)
            .await
        {
            Err(e) if !e.is_no_node() => return Err(e),
            _ => {}
        }
        self.delete_tablet(&alias).await
    }

    /// The aliases of every tablet in `cell`, sorted.
    ///
    /// # Errors
    /// `NoNode` for an unknown cell.
    pub async fn get_tablet_aliases_by_cell(&self, cell: &str) -> Result<Vec<TabletAlias>> {
        let conn = self.conn_for_cell(cell).await?;
        let entries = match conn.list_dir(paths::TABLETS_DIR, false).await {
            Ok(e) => e,
            Err(e) if e.is_no_node() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match parse_alias(&e.name) {
                Ok(a) => out.push(a),
                Err(err) => {
                    tracing::warn!(cell, entry = %e.name, "skipping a tablet directory: {err}")
                }
            }
        }
        out.sort_by(alias_cmp);
        Ok(out)
    }

    /// Every tablet of `cell` (optionally only those of `keyspace` and `shard`), in one
    /// prefix read; backends without prefix reads, or whose answer would be too large, fall
    /// back to reading tablets one by one.
    ///
    /// # Errors
    /// `NoNode` for an unknown cell.
    pub async fn get_tablets_by_cell(
        &self,
        cell: &str,
        keyspace: Option<&str>,
        shard: Option<&str>,
    ) -> Result<Vec<TabletInfo>> {
        let conn = self.conn_for_cell(cell).await?;
        let keep = |t: &TabletInfo| {
            keyspace.is_none_or(|k| t.tablet.keyspace == k)
                && shard.is_none_or(|s| t.tablet.shard == s)
        };
        match conn.list(&format!("{}/", paths::TABLETS_DIR)).await {
            Ok(items) => {
                let mut out = Vec::new();
                for kv in items.into_iter().filter(|kv| kv.key.ends_with("/Tablet")) {
                    let t = TabletInfo {
                        tablet: Stored::decode(&kv.value, &kv.key)?,
                        version: kv.version,
                    };
                    if keep(&t) {
                        out.push(t);
                    }
                }
                Ok(out)
            }
            Err(e) if e.is_no_node() => Ok(Vec::new()),
            Err(e) if e.is(ErrorKind::NoImplementation) || e.is(ErrorKind::ResourceExhausted) => {
                tracing::debug!(
                    cell,
                    "prefix read unavailable ({e}); reading tablets one by one"
                );
                let aliases = match (keyspace, shard) {
                    (Some(k), Some(s)) => {
                        self.find_all_tablet_aliases_in_shard_by_cell(k, s, &[cell.to_string()])
                            .await?
                            .value
                    }
                    _ => self.get_tablet_aliases_by_cell(cell).await?,
                };
                let map = self.get_tablet_map(&aliases).await?;
                Ok(map.value.into_values().filter(keep).collect())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the given tablets concurrently; missing ones are left out, unreadable cells
    /// are reported in the partial error.
    pub async fn get_tablet_map(
        &self,
        aliases: &[TabletAlias],
    ) -> Result<Partial<BTreeMap<String, TabletInfo>>> {
        let results: Vec<(TabletAlias, Result<TabletInfo>)> = stream::iter(aliases.iter().cloned())
            .map(|a| async move {
                let r = self.get_tablet(&a).await;
                (a, r)
            })
            .buffer_unordered(TABLET_READ_CONCURRENCY)
            .collect()
            .await;
        let mut map = BTreeMap::new();
        let mut failed = Vec::new();
        for (alias, r) in results {
            match r {
                Ok(t) => {
                    map.insert(alias_string(&alias), t);
                }
                Err(e) if e.is_no_node() => {}
                Err(e) => {
                    tracing::warn!(tablet = %alias_string(&alias), "cannot read tablet: {e}");
                    if !failed.contains(&alias.cell) {
                        failed.push(alias.cell.clone());
                    }
                }
            }
        }
        Ok(Partial::new(map, failed))
    }

    /// Vitess's `topo.Validate`: the tablet exists under its alias and is in its cell's
    /// replication graph.
    ///
    /// # Errors
    /// `FailedPrecondition` describing what does not match.
    pub async fn validate_tablet(&self, alias: &TabletAlias) -> Result<()> {
        let ti = self.get_tablet(alias).await?;
        if ti.tablet.alias.as_ref() != Some(alias) {
            return Err(TopoError::precondition(format!(
                "tablet {} has alias {} in its record",
                alias_string(alias),
                ti.alias()
            )));
        }
        let listed = match self
            .get_shard_replication(&alias.cell, &ti.tablet.keyspace, &ti.tablet.shard)
            .await
        {
            Ok(sr) => sr
                .value
                .nodes
                .iter()
                .any(|n| n.tablet_alias.as_ref() == Some(alias)),
            Err(e) if e.is_no_node() => false,
            Err(e) => return Err(e),
        };
        if !listed {
            return Err(TopoError::precondition(format!(
                "tablet {} is not in the replication graph of {}/{} in cell {}",
                alias_string(alias),
                ti.tablet.keyspace,
                ti.tablet.shard,
                alias.cell
            )));
        }
        Ok(())
    }

    /// Registers a tablet the way vttablet's `InitTablet` does: checks and normalises its
    /// shard, creates the keyspace and shard when asked, refuses to displace another PRIMARY
    /// unless allowed, stamps a PRIMARY's term start, and creates the record (replacing an
    /// existing one of the same keyspace and shard when `allow_update`).
    ///
    /// # Errors
    /// `InvalidArgument` for bad names or a key range that is not the shard's;
    /// `FailedPrecondition` when another tablet is the shard's primary; `NodeExists` when
    /// the tablet exists and updates are not allowed.
    pub async fn init_tablet(
        &self,
        mut tablet: Tablet,
        allow_primary_override: bool,
        create_shard_and_keyspace: bool,
        allow_update: bool,
    ) -> Result<()> {
        let alias = tablet
            .alias
            .clone()
            .ok_or_else(|| TopoError::invalid("tablet has no alias"))?;
        validate_object_name(&tablet.keyspace)?;
        let (shard, key_range) = validate_shard_name(&tablet.shard)?;
        tablet.shard = shard;
        tablet.key_range = key_range;
        let si = if create_shard_and_keyspace {
            self.get_or_create_shard(&tablet.keyspace, &tablet.shard)
                .await?
        } else {
            self.get_shard(&tablet.keyspace, &tablet.shard).await?
        };
        if si.shard.key_range != tablet.key_range {
            return Err(TopoError::invalid(format!(
                "shard {} has a different key range than tablet {}",
                si.key(),
                alias_string(&alias)
            )));
        }
        if tablet.r#type == TabletType::Primary as i32 {
            if let Some(p) = si.shard.primary_alias.as_ref().filter(|p| **p != alias) {
                if !allow_primary_override {
                    return Err(TopoError::precondition(format!(
                        "shard {} already has primary {}; allow a primary override to replace it",
                        si.key(),
                        alias_string(p)
                    )));
                }
            }
            tablet.primary_term_start_time = Some(now_vttime());
        }
        match self.create_tablet(&tablet).await {
            Err(e) if e.is(ErrorKind::NodeExists) && allow_update => {
                let existing = self.get_tablet(&alias).await?;
                if existing.tablet.keyspace != tablet.keyspace
                    || existing.tablet.shard != tablet.shard
                {
                    return Err(TopoError::invalid(format!(
                        "tablet {} exists in {}/{}; it cannot move to {}/{}",
                        alias_string(&alias),
                        existing.tablet.keyspace,
                        existing.tablet.shard,
                        tablet.keyspace,
                        tablet.shard
                    )));
                }
                let mut updated = TabletInfo {
                    tablet: {
                        let mut s = existing.tablet.clone();
                        s.msg = tablet.clone();
                        s
                    },
                    version: existing.version,
                };
                self.update_tablet(&mut updated).await?;
                self.update_shard_replication_record(
                    &alias.cell,
                    &tablet.keyspace,
                    &tablet.shard,
                    &alias,
                )
                .await
            }
            other => other,
        }
    }

    /// The replication graph of a shard in a cell.
    ///
    /// # Errors
    /// `NoNode` when the cell has no replication data for the shard.
    pub async fn get_shard_replication(
        &self,
        cell: &str,
        ks: &str,
        shard: &str,
    ) -> Result<Versioned<ShardReplication>> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        let conn = self.conn_for_cell(cell).await?;
        read(conn.as_ref(), &paths::shard_replication(ks, shard)).await
    }

    /// Read-modify-write of a shard's replication graph in a cell, creating it when absent.
    pub async fn update_shard_replication_fields<F>(
        &self,
        cell: &str,
        ks: &str,
        shard: &str,
        update: F,
    ) -> Result<Option<Versioned<ShardReplication>>>
    where
        F: FnMut(&mut Stored<ShardReplication>) -> Result<()> + Send,
    {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        let conn = self.conn_for_cell(cell).await?;
        let path = paths::shard_replication(ks, shard);
        update_loop(conn.as_ref(), &path, None, IfMissing::Create, update).await
    }

    /// Adds `alias` to the shard's replication graph in `cell` (exactly once).
    pub async fn update_shard_replication_record(
        &self,
        cell: &str,
        ks: &str,
        shard: &str,
        alias: &TabletAlias,
    ) -> Result<()> {
        let path = paths::shard_replication(ks, shard);
        self.update_shard_replication_fields(cell, ks, shard, |sr| {
            let count = sr
                .nodes
                .iter()
                .filter(|n| n.tablet_alias.as_ref() == Some(alias))
                .count();
            if count == 1 {
                return Err(records::no_update_needed(&path));
            }
            sr.nodes.retain(|n| n.tablet_alias.as_ref() != Some(alias));
            sr.nodes.push(shard_replication::Node {
                tablet_alias: Some(alias.clone()),
            });
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Removes `alias` from the shard's replication graph in `cell`.
    ///
    /// # Errors
    /// `NoNode` when the cell has no replication data for the shard.
    pub async fn remove_shard_replication_record(
        &self,
        cell: &str,
        ks: &str,
        shard: &str,
        alias: &TabletAlias,
    ) -> Result<()> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        let conn = self.conn_for_cell(cell).await?;
        update_loop(
            conn.as_ref(),
            &paths::shard_replication(ks, shard),
            None,
            IfMissing::Fail,
            |sr: &mut Stored<ShardReplication>| {
                sr.nodes.retain(|n| n.tablet_alias.as_ref() != Some(alias));
                Ok(())
            },
        )
        .await
        .map(|_| ())
    }

    /// Deletes a shard's replication graph in a cell.
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn delete_shard_replication(&self, cell: &str, ks: &str, shard: &str) -> Result<()> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        self.conn_for_cell(cell)
            .await?
            .delete(&paths::shard_replication(ks, shard), None)
            .await
    }

    /// Vitess's `DeleteKeyspaceReplication`: a delete of the keyspace *directory* in a cell,
    /// which on stores without directory entries finds nothing (`NoNode`).
    ///
    /// # Errors
    /// `NoNode` when there is no such entry.
    pub async fn delete_keyspace_replication(&self, cell: &str, ks: &str) -> Result<()> {
        validate_object_name(ks)?;
        self.conn_for_cell(cell)
            .await?
            .delete(&paths::keyspace_dir(ks), None)
            .await
    }

    /// Finds the first node of a shard's replication graph in a cell whose tablet is
    /// missing (`NOT_FOUND`) or belongs elsewhere (`TOPOLOGY_MISMATCH`), removes it, and
    /// returns what was wrong; `None` when every node is valid. One fix per call.
    pub async fn fix_shard_replication(
        &self,
        cell: &str,
        ks: &str,
        shard: &str,
    ) -> Result<Option<ShardReplicationError>> {
        let sr = self.get_shard_replication(cell, ks, shard).await?;
        for node in &sr.value.nodes {
            let Some(alias) = node.tablet_alias.as_ref() else {
                continue;
            };
            let problem = match self.get_tablet(alias).await {
                Err(e) if e.is_no_node() => Some(shard_replication_error::Type::NotFound),
                Err(e) => return Err(e),
                Ok(t)
                    if t.tablet.keyspace != ks || t.tablet.shard != shard || alias.cell != cell =>
                {
                    Some(shard_replication_error::Type::TopologyMismatch)
                }
                Ok(_) => None,
            };
            if let Some(kind) = problem {
                tracing::warn!(cell, keyspace = ks, shard, tablet = %alias_string(alias), ?kind, "fixing the replication graph");
                self.remove_shard_replication_record(cell, ks, shard, alias)
                    .await?;
                return Ok(Some(ShardReplicationError {
                    r#type: kind as i32,
                    tablet_alias: Some(alias.clone()),
                }));
            }
        }
        Ok(None)
    }
}
