//! The serving graph: SrvKeyspace and SrvVSchema per cell, their watches, the rebuilds
//! that roll them up from global data, and the partition editors (spec §3.6, §3.7, §3.11).

use std::collections::BTreeMap;

use futures::stream::BoxStream;
use futures::{future, StreamExt};
use topo_core::{Result, TopoError};
use topo_proto::names::{key_range_starts_at_min, key_range_string};
use topo_proto::topodata::{
    srv_keyspace, KeyspaceType, ShardReference, ShardTabletControl, SrvKeyspace, TabletType,
};
use topo_proto::vschema::{self, SrvVSchema};
use topo_proto::{Record, Stored};

use crate::locks::TopoLock;
use crate::names::validate_object_name;
use crate::records::{self, read};
use crate::{paths, Server};

/// A typed watch: the current record, then a stream of new values. A value that does not
/// decode ends the stream with a `Corrupt` error; deletion ends it with `NoNode`.
pub type TypedWatch<M> = (M, BoxStream<'static, Result<M>>);

async fn watch_record<M: Record>(conn: &dyn topo_core::Conn, path: &str) -> Result<TypedWatch<M>> {
    let (current, changes) = conn.watch(path).await?;
    let first = Stored::<M>::decode(&current.contents, path)?.into_inner();
    let path = path.to_string();
    // After the first error (a decode failure or the watch's own end) the stream stops at
    // once, dropping (and so cancelling) the underlying watch.
    let stream = futures::stream::unfold(Some(changes), move |state| {
        let path = path.clone();
        async move {
            let mut changes = state?;
            let item = changes.next().await?;
            let item =
                item.and_then(|d| Stored::<M>::decode(&d.contents, &path).map(Stored::into_inner));
            let next = if item.is_ok() { Some(changes) } else { None };
            Some((item, next))
        }
    })
    .boxed();
    Ok((first, stream))
}

/// Vitess's `OrderAndCheckPartitions`: sorts each partition's shards by key range and
/// checks that they cover the whole key space without gaps (or that none has a range).
///
/// # Errors
/// `FailedPrecondition` naming the keyspace and the problem.
pub fn order_and_check_partitions(ks: &str, srv: &mut SrvKeyspace) -> Result<()> {
    for p in &mut srv.partitions {
        let served = TabletType::try_from(p.served_type)
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN");
        p.shard_references.sort_by(|a, b| {
            let ka = a
                .key_range
                .as_ref()
                .map(|k| k.start.clone())
                .unwrap_or_default();
            let kb = b
                .key_range
                .as_ref()
                .map(|k| k.start.clone())
                .unwrap_or_default();
            ka.cmp(&kb)
        });
        let with_ranges = p
            .shard_references
            .iter()
            .filter(|r| r.key_range.is_some())
            .count();
        if with_ranges == 0 {
            continue;
        }
        if with_ranges != p.shard_references.len() {
            return Err(TopoError::precondition(format!(
                "keyspace {ks} partition for {served}: some shards have key ranges and some do not"
            )));
        }
        let refs = &p.shard_references;
        let first = refs[0].key_range.as_ref().expect("checked");
        if !key_range_starts_at_min(first) {
            return Err(TopoError::precondition(format!(
                "keyspace {ks} partition for {served} does not start with the first key ({})",
                key_range_string(Some(first))
            )));
        }
        let last = refs[refs.len() - 1].key_range.as_ref().expect("checked");
        if !last.end.is_empty() {
            return Err(TopoError::precondition(format!(
                "keyspace {ks} partition for {served} does not end with the last key ({})",
                key_range_string(Some(last))
            )));
        }
        for w in refs.windows(2) {
            let (a, b) = (
                w[0].key_range.as_ref().expect("checked"),
                w[1].key_range.as_ref().expect("checked"),
            );
            if a.end != b.start {
                return Err(TopoError::precondition(format!(
                    "keyspace {ks} partition for {served} has a gap or overlap between {} and {}",
                    key_range_string(Some(a)),
                    key_range_string(Some(b))
                )));
            }
        }
    }
    Ok(())
}

impl Server {
    /// The names of the keyspaces a cell has serving data for (any keyspace directory).
    pub async fn get_srv_keyspace_names(&self, cell: &str) -> Result<Vec<String>> {
        let conn = self.conn_for_cell(cell).await?;
        match conn.list_dir("keyspaces", false).await {
            Ok(e) => Ok(e.into_iter().map(|e| e.name).collect()),
            Err(e) if e.is_no_node() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// A keyspace's serving graph in a cell.
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn get_srv_keyspace(&self, cell: &str, ks: &str) -> Result<SrvKeyspace> {
        validate_object_name(ks)?;
        let conn = self.conn_for_cell(cell).await?;
        Ok(read::<SrvKeyspace>(conn.as_ref(), &paths::srv_keyspace(ks))
            .await?
            .value
            .into_inner())
    }

    /// Writes a keyspace's serving graph in a cell (unconditionally).
    pub async fn update_srv_keyspace(&self, cell: &str, ks: &str, srv: &SrvKeyspace) -> Result<()> {
        validate_object_name(ks)?;
        let conn = self.conn_for_cell(cell).await?;
        records::write(
            conn.as_ref(),
            &paths::srv_keyspace(ks),
            &Stored::new(srv.clone()),
            None,
            None,
        )
        .await?;
        Ok(())
    }

    /// Deletes a keyspace's serving graph in a cell.
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn delete_srv_keyspace(&self, cell: &str, ks: &str) -> Result<()> {
        validate_object_name(ks)?;
        self.conn_for_cell(cell)
            .await?
            .delete(&paths::srv_keyspace(ks), None)
            .await
    }

    /// Watches a keyspace's serving graph in a cell.
    ///
    /// # Errors
    /// `NoNode` when absent; `Corrupt` when the current value does not decode.
    pub async fn watch_srv_keyspace(
        &self,
        cell: &str,
        ks: &str,
    ) -> Result<TypedWatch<SrvKeyspace>> {
        validate_object_name(ks)?;
        let conn = self.conn_for_cell(cell).await?;
        watch_record(conn.as_ref(), &paths::srv_keyspace(ks)).await
    }

    /// Watches a shard record.
    ///
    /// # Errors
    /// As [`Server::watch_srv_keyspace`].
    pub async fn watch_shard(
        &self,
        ks: &str,
        shard: &str,
    ) -> Result<TypedWatch<topo_proto::topodata::Shard>> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        watch_record(self.global().as_ref(), &paths::shard(ks, shard)).await
    }

    /// A cell's serving VSchema.
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn get_srv_vschema(&self, cell: &str) -> Result<SrvVSchema> {
        let conn = self.conn_for_cell(cell).await?;
        Ok(read::<SrvVSchema>(conn.as_ref(), paths::SRV_VSCHEMA)
            .await?
            .value
            .into_inner())
    }

    /// Writes a cell's serving VSchema (unconditionally).
    pub async fn update_srv_vschema(&self, cell: &str, srv: &SrvVSchema) -> Result<()> {
        let conn = self.conn_for_cell(cell).await?;
        records::write(
            conn.as_ref(),
            paths::SRV_VSCHEMA,
            &Stored::new(srv.clone()),
            None,
            None,
        )
        .await?;
        Ok(())
    }

    /// Deletes a cell's serving VSchema.
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn delete_srv_vschema(&self, cell: &str) -> Result<()> {
        self.conn_for_cell(cell)
            .await?
            .delete(paths::SRV_VSCHEMA, None)
            .await
    }

    /// Watches a cell's serving VSchema.
    ///
    /// # Errors
    /// As [`Server::watch_srv_keyspace`].
    pub async fn watch_srv_vschema(&self, cell: &str) -> Result<TypedWatch<SrvVSchema>> {
        let conn = self.conn_for_cell(cell).await?;
        watch_record(conn.as_ref(), paths::SRV_VSCHEMA).await
    }

    /// Rebuilds every cell's SrvVSchema (or only `cells`) from the keyspaces' VSchemas and
    /// the routing rules (Vitess's `RebuildSrvVSchema`).
    ///
    /// # Errors
    /// The last error of a cell write; reading errors.
    pub async fn rebuild_srv_vschema(&self, cells: &[String]) -> Result<()> {
        let cells = if cells.is_empty() {
            self.get_known_cells().await?
        } else {
            cells.to_vec()
        };
        let mut keyspaces = BTreeMap::new();
        for ks in self.get_keyspaces().await? {
            let vs = match self.get_vschema(&ks).await {
                Ok(v) => v.value.into_inner(),
                Err(e) if e.is_no_node() => vschema::Keyspace::default(),
                Err(e) => return Err(e),
            };
            keyspaces.insert(ks, vs);
        }
        let srv = SrvVSchema {
            keyspaces,
            routing_rules: Some(self.get_routing_rules().await?),
            shard_routing_rules: Some(self.get_shard_routing_rules().await?),
            keyspace_routing_rules: self.get_keyspace_routing_rules().await?,
            mirror_rules: Some(self.get_mirror_rules().await?),
        };
        let results =
            future::join_all(cells.iter().map(|c| self.update_srv_vschema(c, &srv))).await;
        let mut last = Ok(());
        for (cell, r) in cells.iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(cell, "cannot write SrvVSchema: {e}");
                last = Err(e);
            }
        }
        last
    }

    /// Rebuilds a keyspace's serving graph in every cell (or only `cells`) under the
    /// keyspace lock (Vitess's `RebuildKeyspace`): each serving shard goes into the PRIMARY,
    /// REPLICA and RDONLY partitions, which must then cover the key space (unless the
    /// keyspace is a SNAPSHOT and `allow_partial`).
    ///
    /// # Errors
    /// `NoNode` for a missing keyspace; `FailedPrecondition` for a partition with gaps, or
    /// while a migration disabled query service; the last cell write error.
    pub async fn rebuild_keyspace(
        &self,
        ks: &str,
        cells: &[String],
        allow_partial: bool,
    ) -> Result<()> {
        validate_object_name(ks)?;
        let cells = self.cells_or_all(cells).await?;
        if let Err(e) = self.get_keyspace(ks).await {
            if e.is_no_node() {
                for cell in &cells {
                    self.delete_orphaned_keyspace_files(cell, ks).await?;
                }
            }
            return Err(e);
        }
        let lock = self.lock_keyspace(ks, "RebuildKeyspace").await?;
        let result = self
            .rebuild_keyspace_locked(&lock, ks, &cells, allow_partial)
            .await;
        let unlocked = lock.unlock().await;
        result?;
        unlocked
    }

    /// [`Server::rebuild_keyspace`] for a caller that holds the keyspace lock.
    pub async fn rebuild_keyspace_locked(
        &self,
        lock: &TopoLock,
        ks: &str,
        cells: &[String],
        allow_partial: bool,
    ) -> Result<()> {
        lock.require_keyspace(ks).await?;
        let ki = self.get_keyspace(ks).await?;
        let shards = self.find_all_shards_in_keyspace(ks).await?;
        let mut per_cell = Vec::new();
        for cell in cells {
            match self.get_srv_keyspace(cell, ks).await {
                Ok(existing) => {
                    let migrating = existing.partitions.iter().any(|p| {
                        p.shard_tablet_controls
                            .iter()
                            .any(|c| c.query_service_disabled)
                    });
                    if migrating {
                        return Err(TopoError::precondition(format!(
                            "can't rebuild serving keyspace {ks} in cell {cell} while a migration is on going"
                        )));
                    }
                }
                Err(e) if e.is_no_node() => {}
                Err(e) => return Err(e),
            }
            let mut srv = SrvKeyspace {
                throttler_config: ki.keyspace.throttler_config.clone(),
                ..Default::default()
            };
            for si in shards.values().filter(|s| s.shard.is_primary_serving) {
                for served in [TabletType::Primary, TabletType::Replica, TabletType::Rdonly] {
                    partition_mut(&mut srv, served)
                        .shard_references
                        .push(ShardReference {
                            name: si.name.clone(),
                            key_range: si.shard.key_range.clone(),
                        });
                }
            }
            let snapshot = ki.keyspace.keyspace_type == KeyspaceType::Snapshot as i32;
            if !(snapshot && allow_partial) {
                order_and_check_partitions(ks, &mut srv)?;
            }
            per_cell.push((cell.clone(), srv));
        }
        let writes = future::join_all(
            per_cell
                .iter()
                .map(|(cell, srv)| self.update_srv_keyspace(cell, ks, srv)),
        )
        .await;
        let failures: Vec<String> = per_cell
            .iter()
            .zip(writes)
            .filter_map(|((cell, _), r)| r.err().map(|e| format!("{cell}: {e}")))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(TopoError::PartialResult(format!(
                "rebuilding keyspace {ks} failed in {}",
                failures.join("; ")
            )))
        }
    }

    /// Deletes every file under `keyspaces/<ks>` in a cell (for a keyspace that no longer
    /// exists).
    pub async fn delete_orphaned_keyspace_files(&self, cell: &str, ks: &str) -> Result<()> {
        validate_object_name(ks)?;
        let conn = self.conn_for_cell(cell).await?;
        let mut dirs = vec![paths::keyspace_dir(ks)];
        while let Some(dir) = dirs.pop() {
            let entries = match conn.list_dir(&dir, true).await {
                Ok(e) => e,
                Err(e) if e.is_no_node() => continue,
                Err(e) => return Err(e),
            };
            for e in entries {
                let child = format!("{dir}/{}", e.name);
                match e.entry_type {
                    topo_core::DirEntryType::Directory => dirs.push(child),
                    topo_core::DirEntryType::File if !e.ephemeral => {
                        tracing::info!(cell, path = %child, "deleting an orphaned keyspace file");
                        records::delete_if_exists(conn.as_ref(), &child, None).await?;
                    }
                    topo_core::DirEntryType::File => {}
                }
            }
        }
        Ok(())
    }

    /// Applies `edit` to the keyspace's SrvKeyspace in each of `cells` (every cell when
    /// empty) that has one, under the keyspace lock; cells that fail are reported together.
    async fn edit_srv_keyspaces<F>(
        &self,
        lock: &TopoLock,
        ks: &str,
        cells: &[String],
        mut edit: F,
    ) -> Result<()>
    where
        F: FnMut(&mut SrvKeyspace) -> Result<()>,
    {
        lock.require_keyspace(ks).await?;
        let cells = self.cells_or_all(cells).await?;
        let mut failures = Vec::new();
        for cell in &cells {
            let mut srv = match self.get_srv_keyspace(cell, ks).await {
                Ok(s) => s,
                Err(e) if e.is_no_node() => continue,
                Err(e) => {
                    failures.push(format!("{cell}: {e}"));
                    continue;
                }
            };
            edit(&mut srv)?;
            if let Err(e) = self.update_srv_keyspace(cell, ks, &srv).await {
                failures.push(format!("{cell}: {e}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(TopoError::PartialResult(failures.join("; ")))
        }
    }

    /// Adds shards to the `tablet_type` partition of a keyspace's SrvKeyspaces.
    pub async fn add_srv_keyspace_partitions(
        &self,
        lock: &TopoLock,
        ks: &str,
        shards: &[crate::ShardInfo],
        tablet_type: TabletType,
        cells: &[String],
    ) -> Result<()> {
        self.edit_srv_keyspaces(lock, ks, cells, |srv| {
            let p = partition_mut(srv, tablet_type);
            for si in shards {
                let present = p
                    .shard_references
                    .iter()
                    .any(|r| r.key_range == si.shard.key_range);
                if !present {
                    p.shard_references.push(ShardReference {
                        name: si.name.clone(),
                        key_range: si.shard.key_range.clone(),
                    });
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes shards from the `tablet_type` partition of a keyspace's SrvKeyspaces.
    pub async fn delete_srv_keyspace_partitions(
        &self,
        lock: &TopoLock,
        ks: &str,
        shard_names: &[String],
        tablet_type: TabletType,
        cells: &[String],
    ) -> Result<()> {
        self.edit_srv_keyspaces(lock, ks, cells, |srv| {
            for p in srv
                .partitions
                .iter_mut()
                .filter(|p| p.served_type == tablet_type as i32)
            {
                p.shard_references
                    .retain(|r| !shard_names.contains(&r.name));
                p.shard_tablet_controls
                    .retain(|c| !shard_names.contains(&c.name));
            }
            Ok(())
        })
        .await
    }

    /// Sets `query_service_disabled` for shards of the `tablet_type` partition.
    ///
    /// # Errors
    /// `FailedPrecondition` when a shard has denied tables, or re-enabling a frozen control.
    pub async fn update_disable_query_service(
        &self,
        lock: &TopoLock,
        ks: &str,
        shards: &[crate::ShardInfo],
        tablet_type: TabletType,
        cells: &[String],
        disable: bool,
    ) -> Result<()> {
        for si in shards {
            if si
                .shard
                .tablet_controls
                .iter()
                .any(|tc| !tc.denied_tables.is_empty())
            {
                return Err(TopoError::precondition(format!(
                    "shard {} has denied tables; cannot change its query service",
                    si.key()
                )));
            }
            if !disable && si.shard.tablet_controls.iter().any(|tc| tc.frozen) {
                return Err(TopoError::precondition(format!(
                    "shard {} is frozen; cannot enable its query service",
                    si.key()
                )));
            }
        }
        self.edit_srv_keyspaces(lock, ks, cells, |srv| {
            let p = partition_mut(srv, tablet_type);
            for si in shards {
                match p
                    .shard_tablet_controls
                    .iter_mut()
                    .find(|c| c.name == si.name)
                {
                    Some(c) => c.query_service_disabled = disable,
                    None => p.shard_tablet_controls.push(ShardTabletControl {
                        name: si.name.clone(),
                        key_range: si.shard.key_range.clone(),
                        query_service_disabled: disable,
                    }),
                }
            }
            Ok(())
        })
        .await
    }

    /// Moves the `tablet_type` partition from `remove` shards to `add` shards, then checks
    /// the partitions (a PRIMARY migration also clears every tablet control).
    pub async fn migrate_served_type(
        &self,
        lock: &TopoLock,
        ks: &str,
        add: &[crate::ShardInfo],
        remove: &[crate::ShardInfo],
        tablet_type: TabletType,
        cells: &[String],
    ) -> Result<()> {
        let ks_name = ks.to_string();
        self.edit_srv_keyspaces(lock, ks, cells, |srv| {
            let p = partition_mut(srv, tablet_type);
            p.shard_references
                .retain(|r| !remove.iter().any(|s| s.name == r.name));
            for si in add {
                if !p.shard_references.iter().any(|r| r.name == si.name) {
                    p.shard_references.push(ShardReference {
                        name: si.name.clone(),
                        key_range: si.shard.key_range.clone(),
                    });
                }
            }
            if tablet_type == TabletType::Primary {
                for p in &mut srv.partitions {
                    p.shard_tablet_controls.clear();
                }
            }
            order_and_check_partitions(&ks_name, srv)
        })
        .await
    }

    /// Checks the SrvKeyspace of each of `cells` (every cell when empty) with
    /// [`order_and_check_partitions`].
    pub async fn validate_srv_keyspace(&self, ks: &str, cells: &[String]) -> Result<()> {
        let cells = self.cells_or_all(cells).await?;
        for cell in &cells {
            let mut srv = self.get_srv_keyspace(cell, ks).await?;
            order_and_check_partitions(ks, &mut srv)?;
        }
        Ok(())
    }

    /// The cells whose SrvKeyspace serves `shard`.
    pub async fn get_shard_serving_cells(&self, ks: &str, shard: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for cell in self.get_cell_info_names().await? {
            match self.get_srv_keyspace(&cell, ks).await {
                Ok(srv)
                    if srv
                        .partitions
                        .iter()
                        .any(|p| p.shard_references.iter().any(|r| r.name == shard)) =>
                {
                    out.push(cell)
                }
                Ok(_) => {}
                Err(e) if e.is_no_node() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The tablet types `shard` serves in any cell.
    pub async fn get_shard_serving_types(&self, ks: &str, shard: &str) -> Result<Vec<TabletType>> {
        let mut out: Vec<TabletType> = Vec::new();
        for cell in self.get_cell_info_names().await? {
            match self.get_srv_keyspace(&cell, ks).await {
                Ok(srv) => {
                    for p in &srv.partitions {
                        let t = TabletType::try_from(p.served_type).unwrap_or(TabletType::Unknown);
                        if p.shard_references.iter().any(|r| r.name == shard) && !out.contains(&t) {
                            out.push(t);
                        }
                    }
                }
                Err(e) if e.is_no_node() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

fn partition_mut(
    srv: &mut SrvKeyspace,
    tablet_type: TabletType,
) -> &mut srv_keyspace::KeyspacePartition {
    let idx = match srv
        .partitions
        .iter()
        .position(|p| p.served_type == tablet_type as i32)
    {
        Some(i) => i,
        None => {
            srv.partitions.push(srv_keyspace::KeyspacePartition {
                served_type: tablet_type as i32,
                ..Default::default()
            });
            srv.partitions.len() - 1
        }
    };
    &mut srv.partitions[idx]
}
