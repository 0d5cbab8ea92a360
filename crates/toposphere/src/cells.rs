//! Cells (`CellInfo`) and cell aliases (`CellsAlias`), spec §3.8.

use std::collections::{BTreeMap, BTreeSet};

use topo_core::{Result, TopoError};
use topo_proto::topodata::{CellInfo, CellsAlias};
use topo_proto::Stored;

use crate::names::validate_cell_name;
use crate::records::{read, read_opt, update_loop, IfMissing};
use crate::{paths, Server};

impl Server {
    /// The names of every cell with a `CellInfo`, sorted (empty when there are none).
    pub async fn get_cell_info_names(&self) -> Result<Vec<String>> {
        match self.global().list_dir("cells", false).await {
            Ok(entries) => Ok(entries.into_iter().map(|e| e.name).collect()),
            Err(e) if e.is_no_node() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// `cells`, or every cell when it is empty (how most multi-cell operations read their
    /// cell list).
    pub async fn cells_or_all(&self, cells: &[String]) -> Result<Vec<String>> {
        if cells.is_empty() {
            self.get_cell_info_names().await
        } else {
            Ok(cells.to_vec())
        }
    }

    /// The names of every cell (Vitess's `GetKnownCells`, read through the read-only
    /// global connection).
    ///
    /// # Errors
    /// `NoNode` when no cell exists.
    pub async fn get_known_cells(&self) -> Result<Vec<String>> {
        let entries = self.global_read_only().list_dir("cells", false).await?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }

    /// The `CellInfo` of `cell`; `strong_read` reads through the global connection rather
    /// than the read-only one.
    ///
    /// # Errors
    /// `NoNode` for an unknown cell.
    pub async fn get_cell_info(&self, cell: &str, strong_read: bool) -> Result<CellInfo> {
        validate_cell_name(cell)?;
        let conn = if strong_read {
            self.global()
        } else {
            self.global_read_only()
        };
        Ok(read::<CellInfo>(conn.as_ref(), &paths::cell_info(cell))
            .await?
            .value
            .into_inner())
    }

    /// Creates the `CellInfo` of `cell`.
    ///
    /// # Errors
    /// `NodeExists` when the cell exists.
    pub async fn create_cell_info(&self, cell: &str, info: &CellInfo) -> Result<()> {
        validate_cell_name(cell)?;
        let bytes = Stored::new(info.clone()).encode();
        self.global()
            .create(&paths::cell_info(cell), &bytes)
            .await?;
        Ok(())
    }

    /// Read-modify-write of a cell's `CellInfo`, creating it when absent. `update` returning
    /// `NoUpdateNeeded` skips the write (then `Ok(None)`).
    pub async fn update_cell_info_fields<F>(
        &self,
        cell: &str,
        update: F,
    ) -> Result<Option<CellInfo>>
    where
        F: FnMut(&mut Stored<CellInfo>) -> Result<()> + Send,
    {
        validate_cell_name(cell)?;
        let r = update_loop(
            self.global().as_ref(),
            &paths::cell_info(cell),
            None,
            IfMissing::Create,
            update,
        )
        .await?;
        Ok(r.map(|v| v.value.into_inner()))
    }

    /// Deletes a cell's `CellInfo`. Refuses while the cell serves keyspaces, unless `force`
    /// (which also tolerates an unreachable cell).
    ///
    /// # Errors
    /// `FailedPrecondition` when the cell serves keyspaces; `NoNode` for an unknown cell.
    pub async fn delete_cell_info(&self, cell: &str, force: bool) -> Result<()> {
        validate_cell_name(cell)?;
        let listing = tokio::time::timeout(
            self.config().remote_operation_timeout,
            self.get_srv_keyspace_names(cell),
        )
        .await
        .unwrap_or_else(|_| {
            Err(TopoError::Timeout(format!(
                "listing keyspaces of cell {cell}"
            )))
        });
        match listing {
            Ok(names) if !names.is_empty() && !force => {
                return Err(TopoError::precondition(format!(
                    "cell {cell} has serving keyspaces ({}); use --force to delete it anyway",
                    names.join(", ")
                )))
            }
            Err(e) if !force => {
                return Err(TopoError::precondition(format!(
                "cannot list the keyspaces of cell {cell} ({e}); use --force to delete it anyway"
            )))
            }
            _ => {}
        }
        self.global().delete(&paths::cell_info(cell), None).await
    }

    /// Expands a comma-separated list of cells and aliases into sorted, unique cell names;
    /// an empty list means every cell.
    ///
    /// # Errors
    /// `NoNode` naming a token that is neither a cell nor an alias.
    pub async fn expand_cells(&self, csv: &str) -> Result<Vec<String>> {
        let tokens: Vec<&str> = csv
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            return self.get_cell_info_names().await;
        }
        let mut out = BTreeSet::new();
        let mut aliases: Option<BTreeMap<String, CellsAlias>> = None;
        for token in tokens {
            match self.get_cell_info(token, false).await {
                Ok(_) => {
                    out.insert(token.to_string());
                }
                Err(e) if e.is_no_node() || e.is(topo_core::ErrorKind::InvalidArgument) => {
                    if aliases.is_none() {
                        aliases = Some(self.get_cells_aliases().await?);
                    }
                    match aliases.as_ref().and_then(|a| a.get(token)) {
                        Some(alias) => out.extend(alias.cells.iter().cloned()),
                        None => return Err(TopoError::NoNode(format!("cell or alias {token}"))),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Every cells alias by name (empty when there are none).
    pub async fn get_cells_aliases(&self) -> Result<BTreeMap<String, CellsAlias>> {
        let names = match self.global().list_dir("cells_aliases", false).await {
            Ok(entries) => entries,
            Err(e) if e.is_no_node() => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let mut out = BTreeMap::new();
        for e in names {
            if let Some(v) =
                read_opt::<CellsAlias>(self.global().as_ref(), &paths::cells_alias(&e.name)).await?
            {
                out.insert(e.name, v.value.into_inner());
            }
        }
        Ok(out)
    }

    /// One cells alias.
    ///
    /// # Errors
    /// `NoNode` when it does not exist.
    pub async fn get_cells_alias(&self, alias: &str) -> Result<CellsAlias> {
        validate_cell_name(alias)?;
        Ok(
            read::<CellsAlias>(self.global().as_ref(), &paths::cells_alias(alias))
                .await?
                .value
                .into_inner(),
        )
    }

    /// The alias that contains `cell`, or the cell itself (Vitess's `GetAliasByCell`).
    pub async fn get_alias_by_cell(&self, cell: &str) -> String {
        match self.get_cells_aliases().await {
            Ok(aliases) => aliases
                .into_iter()
                .find(|(_, a)| a.cells.iter().any(|c| c == cell))
                .map(|(name, _)| name)
                .unwrap_or_else(|| cell.to_string()),
            Err(_) => cell.to_string(),
        }
    }

    /// Creates a cells alias, refusing one that overlaps another alias.
    ///
    /// # Errors
    /// `InvalidArgument` on overlap; `NodeExists` when it exists.
    pub async fn create_cells_alias(&self, alias: &str, value: &CellsAlias) -> Result<()> {
        validate_cell_name(alias)?;
        check_overlap(&self.get_cells_aliases().await?, alias, &value.cells)?;
        self.global()
            .create(
                &paths::cells_alias(alias),
                &Stored::new(value.clone()).encode(),
            )
            .await?;
        Ok(())
    }

    /// Read-modify-write of a cells alias (created when absent), refusing overlaps.
    pub async fn update_cells_alias<F>(
        &self,
        alias: &str,
        mut update: F,
    ) -> Result<Option<CellsAlias>>
    where
        F: FnMut(&mut Stored<CellsAlias>) -> Result<()> + Send,
    {
        validate_cell_name(alias)?;
        let aliases = self.get_cells_aliases().await?;
        let r = update_loop(
            self.global().as_ref(),
            &paths::cells_alias(alias),
            None,
            IfMissing::Create,
            |ca: &mut Stored<CellsAlias>| {
                update(ca)?;
                check_overlap(&aliases, alias, &ca.cells)
            },
        )
        .await?;
        Ok(r.map(|v| v.value.into_inner()))
    }

    /// Deletes a cells alias.
    ///
    /// # Errors
    /// `NoNode` when it does not exist.
    pub async fn delete_cells_alias(&self, alias: &str) -> Result<()> {
        validate_cell_name(alias)?;
        self.global().delete(&paths::cells_alias(alias), None).await
    }
}

/// Refuses a cell list for `alias` that overlaps another alias. An empty list means every
/// cell, so it overlaps any other alias.
fn check_overlap(
    aliases: &BTreeMap<String, CellsAlias>,
    alias: &str,
    cells: &[String],
) -> Result<()> {
    for (name, other) in aliases {
        let overlaps = name != alias
            && (other.cells.is_empty()
                || cells.is_empty()
                || other.cells.iter().any(|c| cells.contains(c)));
        if overlaps {
            return Err(TopoError::invalid(format!(
                "cell set overlaps with existing alias {name}"
            )));
        }
    }
    Ok(())
}
