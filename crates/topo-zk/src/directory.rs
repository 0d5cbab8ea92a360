//! Directories (Vitess's `directory.go`): real znodes with empty data, listed with
//! ZooKeeper's own children.

use futures::StreamExt;
use topo_core::{DirEntry, DirEntryType, Result};

use crate::ZkConn;

/// How many children a full listing stats at once.
const STAT_CONCURRENCY: usize = 16;

impl ZkConn {
    /// Creates the directory znodes of `key` and its missing parents.
    pub(crate) async fn mkdirs(&self, key: &str) -> Result<()> {
        let opts = self.dir_options();
        let opts = &opts;
        match self
            .call(key, |c| async move { c.mkdir(key, opts).await })
            .await
        {
            Err(e) if e.is(topo_core::ErrorKind::NodeExists) => Ok(()),
            other => other,
        }
    }

    /// The children of `key` (the absolute form of `dir`), sorted. With `full`, each is
    /// typed as Vitess does: no children → File (so an empty directory reads as a file),
    /// an ephemeral owner → ephemeral, and the root's `elections` is an ephemeral
    /// directory.
    pub(crate) async fn list_dir_key(
        &self,
        dir: &str,
        key: &str,
        full: bool,
    ) -> Result<Vec<DirEntry>> {
        self.catch_up(key).await?;
        let mut children = self
            .call(key, |c| async move { c.list_children(key).await })
            .await?;
        children.sort();
        if !full {
            return Ok(children.into_iter().map(DirEntry::name_only).collect());
        }
        let at_root = key == self.root || dir.trim_matches('/').is_empty();
        let stats = futures::stream::iter(children.into_iter().map(|name| async move {
            let child = format!("{}/{name}", key.trim_end_matches('/'));
            let c = child.as_str();
            let stat = self
                .call(c, |cl| async move { cl.check_stat(c).await })
                .await?;
            Ok::<_, topo_core::TopoError>((name, stat))
        }))
        .buffered(STAT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        let mut out = Vec::with_capacity(stats.len());
        for r in stats {
            // A child deleted between the listing and its stat is left out.
            let (name, Some(stat)) = r? else { continue };
            let (entry_type, ephemeral) = if at_root && name == "elections" {
                (DirEntryType::Directory, true)
            } else if stat.num_children == 0 {
                (DirEntryType::File, stat.ephemeral_owner != 0)
            } else {
                (DirEntryType::Directory, stat.ephemeral_owner != 0)
            };
            out.push(DirEntry {
                name,
                entry_type,
                ephemeral,
            });
        }
        Ok(out)
    }
}
