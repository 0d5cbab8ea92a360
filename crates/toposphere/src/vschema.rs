//! VSchema, routing rules of every kind, metadata and external clusters (spec §3.9).

use std::collections::BTreeMap;

use topo_core::{ErrorKind, Result, Version};
use topo_proto::topodata::ExternalVitessCluster;
use topo_proto::vschema::{
    self, KeyspaceRoutingRules, MirrorRules, RoutingRules, ShardRoutingRules,
};
use topo_proto::{Record, Stored};

use crate::locks::TopoLock;
use crate::names::{validate_object_name, validate_path_element};
use crate::records::{self, read, read_opt, Versioned};
use crate::{paths, Server};

/// Writes `value` at `path`, or deletes the file when the record is empty (Vitess stores
/// no file for "no rules").
async fn save_or_delete<M: Record>(server: &Server, path: &str, value: &M) -> Result<()> {
    let stored = Stored::new(value.clone());
    let bytes = stored.encode();
    if bytes.is_empty() {
        return records::delete_if_exists(server.global().as_ref(), path, None).await;
    }
    server.global().update(path, &bytes, None).await.map(|_| ())
}

/// Reads the record at `path`, or the empty record when absent.
async fn get_or_default<M: Record>(server: &Server, path: &str) -> Result<M> {
    Ok(read_opt::<M>(server.global().as_ref(), path)
        .await?
        .map(|v| v.value.into_inner())
        .unwrap_or_default())
}

/// A simple SQL `LIKE` matcher (`%` any run, `_` any one character).
fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

impl Server {
    /// A keyspace's VSchema.
    ///
    /// # Errors
    /// `NoNode` when it has none.
    pub async fn get_vschema(&self, ks: &str) -> Result<Versioned<vschema::Keyspace>> {
        validate_object_name(ks)?;
        read(self.global().as_ref(), &paths::vschema(ks)).await
    }

    /// Saves a keyspace's VSchema: compare-and-set with `version`, unconditional without.
    pub async fn save_vschema(
        &self,
        ks: &str,
        vs: &Stored<vschema::Keyspace>,
        version: Option<&Version>,
    ) -> Result<Version> {
        validate_object_name(ks)?;
        records::write(
            self.global().as_ref(),
            &paths::vschema(ks),
            vs,
            version,
            None,
        )
        .await
    }

    /// Deletes a keyspace's VSchema.
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn delete_vschema(&self, ks: &str) -> Result<()> {
        validate_object_name(ks)?;
        self.global().delete(&paths::vschema(ks), None).await
    }

    /// Creates the empty unsharded VSchema of a keyspace when it has none.
    pub async fn ensure_vschema(&self, ks: &str) -> Result<()> {
        validate_object_name(ks)?;
        let empty = Stored::new(vschema::Keyspace::default());
        match self
            .global()
            .create(&paths::vschema(ks), &empty.encode())
            .await
        {
            Err(e) if !e.is(ErrorKind::NodeExists) => Err(e),
            _ => Ok(()),
        }
    }

    /// The routing rules (empty when none are stored).
    pub async fn get_routing_rules(&self) -> Result<RoutingRules> {
        get_or_default(self, paths::ROUTING_RULES).await
    }

    /// Saves the routing rules; empty rules delete the file.
    pub async fn save_routing_rules(&self, rules: &RoutingRules) -> Result<()> {
        save_or_delete(self, paths::ROUTING_RULES, rules).await
    }

    /// The shard routing rules (empty when none are stored).
    pub async fn get_shard_routing_rules(&self) -> Result<ShardRoutingRules> {
        get_or_default(self, paths::SHARD_ROUTING_RULES).await
    }

    /// Saves the shard routing rules; empty rules delete the file.
    pub async fn save_shard_routing_rules(&self, rules: &ShardRoutingRules) -> Result<()> {
        save_or_delete(self, paths::SHARD_ROUTING_RULES, rules).await
    }

    /// The mirror rules (empty when none are stored).
    pub async fn get_mirror_rules(&self) -> Result<MirrorRules> {
        get_or_default(self, paths::MIRROR_RULES).await
    }

    /// Saves the mirror rules; empty rules delete the file.
    pub async fn save_mirror_rules(&self, rules: &MirrorRules) -> Result<()> {
        save_or_delete(self, paths::MIRROR_RULES, rules).await
    }

    /// The keyspace routing rules, `None` when none are stored.
    pub async fn get_keyspace_routing_rules(&self) -> Result<Option<KeyspaceRoutingRules>> {
        Ok(
            read_opt::<KeyspaceRoutingRules>(self.global().as_ref(), paths::KEYSPACE_ROUTING_RULES)
                .await?
                .map(|v| v.value.into_inner()),
        )
    }

    /// Saves the keyspace routing rules the way Vitess does: under the routing-rules lock
    /// (fenced), or, when nothing exists under `routing_rules` yet to lock, by creating the
    /// file.
    pub async fn save_keyspace_routing_rules(&self, rules: &KeyspaceRoutingRules) -> Result<()> {
        let bytes = Stored::new(rules.clone()).encode();
        let lock = match self.lock_routing_rules("SaveKeyspaceRoutingRules").await {
            Ok(l) => l,
            Err(e) if e.is_no_node() => {
                return match self
                    .global()
                    .create(paths::KEYSPACE_ROUTING_RULES, &bytes)
                    .await
                {
                    // Someone created it meanwhile: now there is something to lock.
                    Err(e) if e.is(ErrorKind::NodeExists) => {
                        Box::pin(self.save_keyspace_routing_rules(rules)).await
                    }
                    other => other.map(|_| ()),
                };
            }
            Err(e) => return Err(e),
        };
        let r = self.save_keyspace_routing_rules_locked(&lock, &bytes).await;
        let unlocked = lock.unlock().await;
        r?;
        unlocked
    }

    async fn save_keyspace_routing_rules_locked(
        &self,
        lock: &TopoLock,
        bytes: &[u8],
    ) -> Result<()> {
        lock.require_routing_rules().await?;
        self.global()
            .update_fenced(&lock.fence(), paths::KEYSPACE_ROUTING_RULES, bytes, None)
            .await
            .map(|_| ())
    }

    /// Writes `metadata/<key>` (a plain string).
    pub async fn upsert_metadata(&self, key: &str, value: &str) -> Result<()> {
        validate_path_element("metadata key", key)?;
        self.global()
            .update(&paths::metadata(key), value.as_bytes(), None)
            .await
            .map(|_| ())
    }

    /// Metadata whose keys match the SQL `LIKE` pattern (every key for an empty pattern).
    pub async fn get_metadata(&self, like_pattern: &str) -> Result<BTreeMap<String, String>> {
        let entries = match self.global().list_dir("metadata", false).await {
            Ok(e) => e,
            Err(e) if e.is_no_node() => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let mut out = BTreeMap::new();
        for e in entries {
            if !like_pattern.is_empty() && !like(like_pattern, &e.name) {
                continue;
            }
            match self.global().get(&paths::metadata(&e.name)).await {
                Ok((bytes, _)) => {
                    out.insert(e.name, String::from_utf8_lossy(&bytes).into_owned());
                }
                Err(err) if err.is_no_node() => {}
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// Deletes `metadata/<key>`.
    ///
    /// # Errors
    /// `NoNode` when absent.
    pub async fn delete_metadata(&self, key: &str) -> Result<()> {
        validate_path_element("metadata key", key)?;
        self.global().delete(&paths::metadata(key), None).await
    }

    /// Creates an external Vitess cluster record.
    pub async fn create_external_vitess_cluster(
        &self,
        name: &str,
        value: &ExternalVitessCluster,
    ) -> Result<()> {
        validate_path_element("cluster name", name)?;
        self.global()
            .create(
                &paths::external_cluster(name),
                &Stored::new(value.clone()).encode(),
            )
            .await
            .map(|_| ())
    }

    /// An external Vitess cluster record, `None` when absent.
    pub async fn get_external_vitess_cluster(
        &self,
        name: &str,
    ) -> Result<Option<Versioned<ExternalVitessCluster>>> {
        validate_path_element("cluster name", name)?;
        read_opt(self.global().as_ref(), &paths::external_cluster(name)).await
    }

    /// Writes an external Vitess cluster record with compare-and-set.
    pub async fn update_external_vitess_cluster(
        &self,
        name: &str,
        value: &Stored<ExternalVitessCluster>,
        version: &Version,
    ) -> Result<Version> {
        validate_path_element("cluster name", name)?;
        records::write(
            self.global().as_ref(),
            &paths::external_cluster(name),
            value,
            Some(version),
            None,
        )
        .await
    }

    /// Deletes an external Vitess cluster record.
    pub async fn delete_external_vitess_cluster(&self, name: &str) -> Result<()> {
        validate_path_element("cluster name", name)?;
        self.global()
            .delete(&paths::external_cluster(name), None)
            .await
    }

    /// The names of the external Vitess clusters.
    pub async fn get_external_vitess_clusters(&self) -> Result<Vec<String>> {
        match self
            .global()
            .list_dir("ExternalClusters/vitess", false)
            .await
        {
            Ok(e) => Ok(e.into_iter().map(|e| e.name).collect()),
            Err(e) if e.is_no_node() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn sql_like() {
        assert!(like("%", "anything"));
        assert!(like("a%", "abc"));
        assert!(like("a_c", "abc"));
        assert!(!like("a_c", "abbc"));
        assert!(like("%b%", "abc"));
        assert!(!like("b%", "abc"));
    }
}
