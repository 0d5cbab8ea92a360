//! Cells and cells aliases.

use topo_core::{Result, TopoError};
use topo_proto::topodata::{CellInfo, CellsAlias};
use toposphere::records::no_update_needed;
use toposphere::Server;

use crate::args::Command;
use crate::output::{go_msg, msg, object, print, print_go};

pub(crate) async fn run(ts: &Server, command: Command, compact: bool) -> Result<()> {
    match command {
        Command::AddCellInfo {
            root,
            server_address,
            cell,
        } => {
            if root.is_empty() {
                return Err(TopoError::invalid("--root must be non-empty"));
            }
            ts.create_cell_info(
                &cell,
                &CellInfo {
                    server_address,
                    root,
                },
            )
            .await?;
            crate::out!("Created cell: {cell}");
        }
        Command::UpdateCellInfo {
            root,
            server_address,
            cell,
        } => {
            let path = format!("cells/{cell}/CellInfo");
            let updated = ts
                .update_cell_info_fields(&cell, |ci| {
                    let mut changed = false;
                    if !server_address.is_empty() && ci.server_address != server_address {
                        ci.server_address = server_address.clone();
                        changed = true;
                    }
                    if !root.is_empty() && ci.root != root {
                        ci.root = root.clone();
                        changed = true;
                    }
                    if changed {
                        Ok(())
                    } else {
                        Err(no_update_needed(&path))
                    }
                })
                .await?;
            let info = match updated {
                Some(i) => i,
                None => ts.get_cell_info(&cell, true).await?,
            };
            crate::out!("Updated cell {cell}. New CellInfo:");
            print(&msg(&info, compact));
        }
        Command::DeleteCellInfo { force, cell } => {
            ts.delete_cell_info(&cell, force).await?;
            crate::out!("Deleted cell {cell}");
        }
        Command::GetCellInfo { cell } => {
            print(&msg(&ts.get_cell_info(&cell, true).await?, compact))
        }
        Command::GetCellInfoNames => {
            crate::out!("{}", ts.get_cell_info_names().await?.join("\n"));
        }
        Command::AddCellsAlias { cells, alias } => {
            ts.create_cells_alias(
                &alias,
                &CellsAlias {
                    cells: cells.clone(),
                },
            )
            .await?;
            // Go's %v of a []string: `[zone1 zone2]`.
            crate::out!(
                "Created cells alias: {alias} (cells = [{}])",
                cells.join(" ")
            );
        }
        Command::UpdateCellsAlias { cells, alias } => {
            let updated = ts
                .update_cells_alias(&alias, |ca| {
                    ca.cells = cells.clone();
                    Ok(())
                })
                .await?
                .unwrap_or_default();
            crate::out!("Updated cells alias {alias}. New CellsAlias:");
            print(&msg(&updated, compact));
        }
        Command::DeleteCellsAlias { alias } => {
            ts.delete_cells_alias(&alias).await?;
            crate::out!("Delete cells alias {alias}");
        }
        Command::GetCellsAliases => {
            // vtctldclient marshals the map[string]*CellsAlias with encoding/json.
            let aliases = ts.get_cells_aliases().await?;
            print_go(&object(aliases.iter().map(|(k, v)| (k.clone(), go_msg(v)))));
        }
        other => unreachable!("not a cells command: {other:?}"),
    }
    Ok(())
}
