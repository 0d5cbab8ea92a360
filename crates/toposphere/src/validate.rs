//! Vitess's `Validate`, `ValidateKeyspace` and `ValidateShard` checks that need only the
//! topology (grpcvtctldserver's server.go without `--ping-tablets`, which asks the tablets
//! themselves): every shard has exactly one PRIMARY tablet and it is the shard record's
//! primary, every tablet a shard's replication graph lists has a record, and every tablet of
//! a cell that holds a shard's tablets passes [`Server::validate_tablet`].
//!
//! The texts of the problems are Vitess's. Results are in a stable order (keyspaces and
//! shards sorted by name, tablets by alias) where Vitess's order depends on goroutines.

use std::collections::{BTreeMap, BTreeSet};

use topo_proto::names::alias_string;
use topo_proto::topodata::{TabletAlias, TabletType};

use crate::Server;

/// The problems found in one keyspace: its own, and each shard's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyspaceResults {
    /// Problems of the keyspace itself (its shards could not be listed).
    pub results: Vec<String>,
    /// Problems per shard, every shard listed (an empty list when the shard is valid).
    pub by_shard: BTreeMap<String, Vec<String>>,
}

impl KeyspaceResults {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.results.is_empty() && self.by_shard.values().all(Vec::is_empty)
    }
}

/// The problems found in the whole topology.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ValidateResults {
    /// Problems outside any one keyspace (tablet records of the cells).
    pub results: Vec<String>,
    /// Problems per keyspace, every keyspace listed.
    pub by_keyspace: BTreeMap<String, KeyspaceResults>,
}

impl ValidateResults {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.results.is_empty() && self.by_keyspace.values().all(KeyspaceResults::is_clean)
    }
}

/// Go's `topoproto.TabletAliasString`, which prints `<nil>` for a missing alias.
fn alias_or_nil(alias: Option<&TabletAlias>) -> String {
    alias.map(alias_string).unwrap_or_else(|| "<nil>".into())
}

impl Server {
    /// The aliases of a shard's tablets in every cell, failing when a cell cannot be read
    /// (as Vitess's `FindAllTabletAliasesInShard` returns a partial-result error).
    async fn shard_tablet_aliases(
        &self,
        ks: &str,
        shard: &str,
    ) -> topo_core::Result<Vec<TabletAlias>> {
        let found = self
            .find_all_tablet_aliases_in_shard_by_cell(ks, shard, &[])
            .await?;
        if found.failed_cells.is_empty() {
            Ok(found.value)
        } else {
            Err(topo_core::TopoError::PartialResult(format!(
                "cells {} could not be read",
                found.failed_cells.join(", ")
            )))
        }
    }

    /// `ValidateShard` without `--ping-tablets`: the problems of one shard.
    pub async fn validate_shard(&self, ks: &str, shard: &str) -> Vec<String> {
        let mut results = Vec::new();
        let si = match self.get_shard(ks, shard).await {
            Ok(si) => si,
            Err(e) => {
                results.push(format!(
                    "TopologyServer.GetShard({ks}, {shard}) failed: {e}"
                ));
                return results;
            }
        };
        let aliases = match self.shard_tablet_aliases(ks, shard).await {
            Ok(a) => a,
            Err(e) => {
                results.push(format!(
                    "TopologyServer.FindAllTabletAliasesInShard({ks}, {shard}) failed: {e}"
                ));
                return results;
            }
        };
        let tablets = match self.get_tablet_map(&aliases).await {
            Ok(m) => m.value,
            Err(e) => {
                tracing::warn!(keyspace = ks, shard, "cannot read the shard's tablets: {e}");
                BTreeMap::new()
            }
        };
        let mut primary: Option<&TabletAlias> = None;
        for alias in &aliases {
            let key = alias_string(alias);
            let Some(ti) = tablets.get(&key) else {
                results.push(format!("tablet {key} not found in map"));
                continue;
            };
            if ti.tablet_type() == TabletType::Primary {
                match primary {
                    None => primary = Some(alias),
                    Some(first) => results.push(format!(
                        "shard {ks}/{shard} already has primary {} but found other primary {key}",
                        alias_string(first)
                    )),
                }
            }
        }
        match primary {
            None => results.push(format!("no primary for shard {ks}/{shard}")),
            Some(p) if si.shard.primary_alias.as_ref() != Some(p) => results.push(format!(
                "primary mismatch for shard {ks}/{shard}: found {}, expected {}",
                alias_string(p),
                alias_or_nil(si.shard.primary_alias.as_ref())
            )),
            Some(_) => {}
        }
        for alias in &aliases {
            if let Err(e) = self.validate_tablet(alias).await {
                results.push(format!(
                    "topo.Validate({}) failed: {e}",
                    alias_string(alias)
                ));
            }
        }
        results
    }

    /// `ValidateKeyspace` without `--ping-tablets`: the problems of every shard.
    pub async fn validate_keyspace(&self, ks: &str) -> KeyspaceResults {
        let mut out = KeyspaceResults::default();
        let shards = match self.get_shard_names(ks).await {
            Ok(s) => s,
            Err(e) => {
                out.results
                    .push(format!("TopologyServer.GetShardNames({ks}) failed: {e}"));
                return out;
            }
        };
        for shard in shards {
            let found = self.validate_shard(ks, &shard).await;
            out.by_shard.insert(shard, found);
        }
        out
    }

    /// `Validate` without `--ping-tablets`: every tablet record of the cells that hold a
    /// shard's tablets, then every keyspace.
    pub async fn validate_all(&self) -> ValidateResults {
        let mut out = ValidateResults::default();
        let keyspaces = match self.get_keyspaces().await {
            Ok(k) => k,
            Err(e) => {
                out.results.push(format!("GetKeyspaces failed: {e}"));
                return out;
            }
        };
        let mut cells = BTreeSet::new();
        for ks in &keyspaces {
            let shards = match self.get_shard_names(ks).await {
                Ok(s) => s,
                Err(e) => {
                    out.results
                        .push(format!("TopologyServer.GetShardNames({ks}) failed: {e}"));
                    continue;
                }
            };
            for shard in &shards {
                match self.shard_tablet_aliases(ks, shard).await {
                    Ok(aliases) => cells.extend(aliases.into_iter().map(|a| a.cell)),
                    Err(e) => out.results.push(format!(
                        "TopologyServer.FindAllTabletAliasesInShard({ks}/{shard}) failed: {e}"
                    )),
                }
            }
        }
        for cell in &cells {
            let aliases = match self.get_tablet_aliases_by_cell(cell).await {
                Ok(a) => a,
                Err(e) => {
                    out.results.push(format!(
                        "TopologyServer.GetTabletsByCell({cell}) failed: {e}"
                    ));
                    continue;
                }
            };
            for alias in &aliases {
                if let Err(e) = self.validate_tablet(alias).await {
                    out.results.push(format!(
                        "topo.Validate({}) failed: {e}",
                        alias_string(alias)
                    ));
                }
            }
        }
        for ks in keyspaces {
            let found = self.validate_keyspace(&ks).await;
            out.by_keyspace.insert(ks, found);
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use topo_proto::topodata::{CellInfo, Keyspace, Tablet, TabletAlias, TabletType};

    use crate::{Registry, Server, ServerConfig};

    /// A memory topology with cell zone1 and the shard ks/0 (no tablets).
    pub(crate) async fn server() -> Server {
        let ts = Server::open(
            &Registry::with_memory(),
            "memory",
            "mem",
            "/g",
            ServerConfig::default(),
        )
        .await
        .unwrap();
        let cell = CellInfo {
            server_address: "mem".into(),
            root: "/z1".into(),
        };
        ts.create_cell_info("zone1", &cell).await.unwrap();
        ts.create_keyspace("ks", &Keyspace::default())
            .await
            .unwrap();
        ts.create_shard("ks", "0").await.unwrap();
        ts
    }

    fn tablet(uid: u32, t: TabletType) -> Tablet {
        Tablet {
            alias: Some(TabletAlias {
                cell: "zone1".into(),
                uid,
            }),
            keyspace: "ks".into(),
            shard: "0".into(),
            r#type: t as i32,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_shard_without_a_primary_is_reported_with_vitess_text() {
        let ts = server().await;
        ts.init_tablet(tablet(101, TabletType::Replica), false, false, false)
            .await
            .unwrap();
        assert_eq!(
            ts.validate_shard("ks", "0").await,
            ["no primary for shard ks/0"]
        );
        let all = ts.validate_all().await;
        assert!(!all.is_clean());
        assert_eq!(
            all.by_keyspace["ks"].by_shard["0"],
            ["no primary for shard ks/0"]
        );
        assert_eq!(
            ts.validate_shard("ks", "9").await[0],
            "TopologyServer.GetShard(ks, 9) failed: node doesn't exist: /g/keyspaces/ks/shards/9/Shard"
        );
    }

    #[tokio::test]
    async fn a_primary_the_shard_record_names_is_clean() {
        let ts = server().await;
        ts.init_tablet(tablet(100, TabletType::Primary), false, false, false)
            .await
            .unwrap();
        ts.update_shard_fields("ks", "0", None, |si| {
            si.shard.primary_alias = Some(TabletAlias {
                cell: "zone1".into(),
                uid: 100,
            });
            Ok(())
        })
        .await
        .unwrap();
        assert!(
            ts.validate_all().await.is_clean(),
            "{:?}",
            ts.validate_all().await
        );
        ts.update_shard_fields("ks", "0", None, |si| {
            si.shard.primary_alias = Some(TabletAlias {
                cell: "zone1".into(),
                uid: 7,
            });
            Ok(())
        })
        .await
        .unwrap();
        let found = ts.validate_shard("ks", "0").await;
        assert!(
            found.contains(&"primary mismatch for shard ks/0: found zone1-0000000100, expected zone1-0000000007".to_string()),
            "{found:?}"
        );
    }
}
