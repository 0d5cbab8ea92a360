//! Deletions and cell removals as vtctld does them (spec §3.12, DeleteKeyspace).

use topo_core::{Result, TopoError};
use topo_proto::names::alias_string;
use topo_proto::topodata::{TabletAlias, TabletType};

use crate::names::validate_object_name;
use crate::records::no_update_needed;
use crate::tablet::now_vttime;
use crate::{paths, Server};

impl Server {
    /// Deletes a keyspace the way vtctld's `DeleteKeyspace` does: under the keyspace lock
    /// (`force` goes on without it), refusing while shards exist unless `recursive` (which
    /// deletes every shard, even serving ones, with their tablets), then removes the
    /// keyspace's serving data in every cell and its `Keyspace` and `VSchema` records.
    ///
    /// # Errors
    /// `FailedPrecondition` when shards exist and not `recursive`; `NoNode` for an unknown
    /// keyspace.
    pub async fn delete_keyspace_recursive(
        &self,
        ks: &str,
        recursive: bool,
        force: bool,
    ) -> Result<()> {
        validate_object_name(ks)?;
        let lock = match self.lock_keyspace(ks, "DeleteKeyspace").await {
            Ok(l) => Some(l),
            Err(e) if force => {
                tracing::warn!(
                    keyspace = ks,
                    "deleting without the keyspace lock (--force): {e}"
                );
                None
            }
            Err(e) => return Err(e),
        };
        let result = async {
            let shards = self.get_shard_names(ks).await?;
            if !shards.is_empty() && !recursive {
                return Err(TopoError::precondition(format!(
                    "keyspace {ks} still has {} shards; use --recursive to delete them",
                    shards.len()
                )));
            }
            for shard in &shards {
                self.delete_shard_recursive(ks, shard, true, true, force)
                    .await?;
            }
            for cell in self.get_cell_info_names().await? {
                match self.delete_keyspace_replication(&cell, ks).await {
                    Err(e) if !e.is_no_node() => tracing::warn!(cell, keyspace = ks, "{e}"),
                    _ => {}
                }
                match self.delete_srv_keyspace(&cell, ks).await {
                    Err(e) if !e.is_no_node() => return Err(e),
                    _ => {}
                }
            }
            self.delete_keyspace(ks).await
        }
        .await;
        if let Some(l) = lock {
            // The keyspace directory may be gone with the records, and the lock with it.
            match l.unlock().await {
                Err(e)
                    if result.is_ok()
                        && !e.is_no_node()
                        && !e.is(topo_core::ErrorKind::LockLost) =>
                {
                    return Err(e)
                }
                _ => {}
            }
        }
        result
    }

    /// Deletes a shard the way vtctld's `DeleteShards` does: under the shard lock (`force`
    /// goes on without it); refuses while it serves in any cell unless `even_if_serving`,
    /// and while it has tablets unless `recursive` (which deletes them); removes its
    /// replication data in every cell and its record. A missing shard is deleted
    /// best-effort and counts as done.
    pub async fn delete_shard_recursive(
        &self,
        ks: &str,
        shard: &str,
        recursive: bool,
        even_if_serving: bool,
        force: bool,
    ) -> Result<()> {
        validate_object_name(ks)?;
        validate_object_name(shard)?;
        if let Err(e) = self.get_shard(ks, shard).await {
            if e.is_no_node() {
                tracing::info!(
                    keyspace = ks,
                    shard,
                    "shard does not exist; nothing to delete"
                );
                return Ok(());
            }
            return Err(e);
        }
        let lock = match self.lock_shard(ks, shard, "DeleteShard").await {
            Ok(l) => Some(l),
            Err(e) if force => {
                tracing::warn!(
                    keyspace = ks,
                    shard,
                    "deleting without the shard lock (--force): {e}"
                );
                None
            }
            Err(e) => return Err(e),
        };
        let result = async {
            let serving = self.get_shard_serving_cells(ks, shard).await?;
            if !serving.is_empty() && !even_if_serving {
                return Err(TopoError::precondition(format!(
                    "shard {ks}/{shard} is still serving in cells {}; use --even-if-serving",
                    serving.join(", ")
                )));
            }
            let cells = self.get_cell_info_names().await?;
            for cell in &cells {
                let tablets = self
                    .get_tablets_by_cell(cell, Some(ks), Some(shard))
                    .await?;
                if !tablets.is_empty() && !recursive {
                    return Err(TopoError::precondition(format!(
                        "shard {ks}/{shard} still has {} tablets in cell {cell}; use --recursive",
                        tablets.len()
                    )));
                }
                for t in tablets {
                    tracing::info!(tablet = %t.alias(), "deleting tablet of a deleted shard");
                    match self.delete_tablet_and_replication(&t.tablet).await {
                        Err(e) if !e.is_no_node() => return Err(e),
                        _ => {}
                    }
                }
            }
            for cell in &cells {
                match self.delete_shard_replication(cell, ks, shard).await {
                    Err(e) if !e.is_no_node() => return Err(e),
                    _ => {}
                }
            }
            self.delete_shard(ks, shard).await
        }
        .await;
        if let Some(l) = lock {
            match l.unlock().await {
                Err(e)
                    if result.is_ok()
                        && !e.is_no_node()
                        && !e.is(topo_core::ErrorKind::LockLost) =>
                {
                    return Err(e)
                }
                _ => {}
            }
        }
        result
    }

    /// Deletes a tablet (and its replication entry). The shard's primary is deleted only
    /// with `allow_primary`, and then the shard loses its primary under the shard lock.
    ///
    /// # Errors
    /// `FailedPrecondition` for a primary without `allow_primary`; `NoNode` when absent.
    pub async fn delete_tablet_recursive(
        &self,
        alias: &TabletAlias,
        allow_primary: bool,
    ) -> Result<()> {
        let ti = self.get_tablet(alias).await?;
        let ks = ti.tablet.keyspace.clone();
        let shard = ti.tablet.shard.clone();
        let is_primary = match self.get_shard(&ks, &shard).await {
            Ok(si) => si.shard.primary_alias.as_ref() == Some(alias),
            Err(e) if e.is_no_node() => false,
            Err(e) => return Err(e),
        };
        if is_primary || ti.tablet_type() == TabletType::Primary {
            if !allow_primary {
                return Err(TopoError::precondition(format!(
                    "tablet {} is a primary; use --allow-primary to delete it",
                    alias_string(alias)
                )));
            }
            if is_primary {
                let lock = self.lock_shard(&ks, &shard, "DeleteTablet").await?;
                let path = paths::shard(&ks, &shard);
                let r = self
                    .update_shard_fields(&ks, &shard, Some(&lock), |si| {
                        if si.shard.primary_alias.as_ref() != Some(alias) {
                            return Err(no_update_needed(&path));
                        }
                        si.shard.primary_alias = None;
                        si.shard.primary_term_start_time = Some(now_vttime());
                        Ok(())
                    })
                    .await;
                let unlocked = lock.unlock().await;
                r?;
                unlocked?;
            }
        }
        self.delete_tablet_and_replication(&ti.tablet).await
    }

    /// Removes a shard from a cell (vtctld's `RemoveShardCell`): deletes the cell's
    /// replication graph of the shard (and its tablets with `recursive`), then takes the
    /// shard out of the cell's serving partitions.
    ///
    /// # Errors
    /// `FailedPrecondition` when the shard does not serve in the cell, its primary lives
    /// there, or it has tablets there and not `recursive`.
    pub async fn remove_shard_cell(
        &self,
        ks: &str,
        shard: &str,
        cell: &str,
        recursive: bool,
        force: bool,
    ) -> Result<()> {
        let si = self.get_shard(ks, shard).await?;
        let serving = self.get_shard_serving_cells(ks, shard).await?;
        if !serving.iter().any(|c| c == cell) {
            return Err(TopoError::precondition(format!(
                "shard {ks}/{shard} does not serve in cell {cell}"
            )));
        }
        if si
            .shard
            .primary_alias
            .as_ref()
            .is_some_and(|p| p.cell == cell)
        {
            return Err(TopoError::precondition(format!(
                "shard {ks}/{shard} has its primary in cell {cell}; reparent it first"
            )));
        }
        match self.get_shard_replication(cell, ks, shard).await {
            Ok(sr) => {
                let aliases: Vec<TabletAlias> = sr
                    .value
                    .nodes
                    .iter()
                    .filter_map(|n| n.tablet_alias.clone())
                    .collect();
                if !aliases.is_empty() && !recursive {
                    return Err(TopoError::precondition(format!(
                        "cell {cell} has {} tablets of shard {ks}/{shard}; use --recursive",
                        aliases.len()
                    )));
                }
                for a in &aliases {
                    match self.delete_tablet(a).await {
                        Err(e) if !e.is_no_node() => return Err(e),
                        _ => {}
                    }
                }
                match self.delete_shard_replication(cell, ks, shard).await {
                    Err(e) if !e.is_no_node() => return Err(e),
                    _ => {}
                }
            }
            Err(e) if e.is_no_node() => {}
            Err(e) if force => tracing::warn!(
                cell,
                "cannot read the replication graph, going on (--force): {e}"
            ),
            Err(e) => return Err(e),
        }
        let lock = self.lock_keyspace(ks, "RemoveShardCell").await?;
        let cells = [cell.to_string()];
        let names = [shard.to_string()];
        let mut r = Ok(());
        for t in [TabletType::Rdonly, TabletType::Replica, TabletType::Primary] {
            r = self
                .delete_srv_keyspace_partitions(&lock, ks, &names, t, &cells)
                .await;
            if r.is_err() {
                break;
            }
        }
        let unlocked = lock.unlock().await;
        r?;
        unlocked
    }

    /// Removes a keyspace from a cell (vtctld's `RemoveKeyspaceCell`): every shard, then the
    /// cell's SrvKeyspace.
    pub async fn remove_keyspace_cell(
        &self,
        ks: &str,
        cell: &str,
        recursive: bool,
        force: bool,
    ) -> Result<()> {
        for shard in self.get_shard_names(ks).await? {
            // A shard that never served in this cell has nothing to remove there.
            if self
                .get_shard_serving_cells(ks, &shard)
                .await?
                .iter()
                .any(|c| c == cell)
            {
                self.remove_shard_cell(ks, &shard, cell, recursive, force)
                    .await?;
            }
        }
        match self.delete_srv_keyspace(cell, ks).await {
            Err(e) if !e.is_no_node() => Err(e),
            _ => Ok(()),
        }
    }
}
