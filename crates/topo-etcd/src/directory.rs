//! Directories: etcd has none, so a listing groups the keys under `<dir>/` by their first
//! path element (Vitess's emulation); an element with a leased key is ephemeral.

use topo_core::{path, DirEntry, Result, TopoError};

use crate::EtcdConn;

impl EtcdConn {
    /// The entries of `dir`; `NoNode` when no key lies under it.
    pub(crate) async fn list_directory(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        let dir_key = self.key(dir)?;
        let prefix = path::dir_prefix(&self.root, dir)?;
        let (items, _) = self.range(&prefix, true).await?;
        let entries = topo_core::dir_entries(
            &prefix,
            items.iter().map(|i| (i.key.as_str(), i.lease != 0)),
            full,
        );
        if entries.is_empty() {
            return Err(TopoError::NoNode(dir_key));
        }
        Ok(entries)
    }
}
