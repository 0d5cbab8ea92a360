//! Files (Vitess's `file.go`): create with parents, update, get, delete with empty parents,
//! fenced variants as multi-ops, and `list` by walking the tree.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use topo_core::{path, ErrorKind, Fence, KvInfo, Result, TopoError, Version};
use zookeeper_client::{MultiWriteResult, MultiWriter, Permission, Stat};

use crate::error::{convert, unknown};
use crate::ZkConn;

/// A leaf znode found by a tree walk: key, data, version.
pub(crate) type Leaf = (String, Vec<u8>, Version);

/// How many znodes a tree walk reads at once.
const WALK_CONCURRENCY: usize = 32;

fn version(v: i32) -> Version {
    Version::new(i64::from(v))
}

/// ZooKeeper's expected version for a compare-and-set: `None` is unconditional. A version
/// that does not fit ZooKeeper's 32 bits matches no znode (-2 is never a version).
fn expected(v: Option<&Version>) -> Option<i32> {
    v.map(|v| i32::try_from(v.raw()).unwrap_or(-2))
}

impl ZkConn {
    /// Creates `key` with `contents`, making missing parent directories. With a fence the
    /// creation is a multi-op checking the lock node.
    pub(crate) async fn create_key(
        &self,
        fence: Option<&Fence>,
        key: &str,
        contents: &[u8],
    ) -> Result<Version> {
        match self.create_here(fence, key, contents).await {
            Err(e) if e.is_no_node() => {
                // A missing parent: make the directories, then once more.
                self.mkdirs(&path::parent(key)).await?;
                self.create_here(fence, key, contents).await
            }
            other => other,
        }
    }

    async fn create_here(
        &self,
        fence: Option<&Fence>,
        key: &str,
        contents: &[u8],
    ) -> Result<Version> {
        let opts = self.file_options();
        let created = match fence {
            None => {
                self.call_once(key, |c| async move {
                    c.create(key, contents, &opts).await.map(|_| ())
                })
                .await
            }
            Some(f) => self
                .multi(f, key, |w| w.add_create(key, contents, &opts))
                .await
                .map(|_| ()),
        };
        match created {
            // A new znode's version is always 0.
            Ok(()) => Ok(version(0)),
            Err(e) if fence.is_none() && e.is(ErrorKind::OutcomeUnknown) => {
                self.settle_create(key, contents, e).await
            }
            Err(e) => Err(e),
        }
    }

    /// The outcome of a create of `key` whose answer was `lost`, read back (never sent
    /// again: a second copy would bring the file back if another client deleted it after
    /// ours applied). A file with our contents, never written since: applied (as on etcd,
    /// another client creating the same bytes meanwhile cannot be told apart); another
    /// creation, never written since: ours cannot have applied (`NodeExists`); anything
    /// else, a missing node included, stays `lost`.
    async fn settle_create(&self, key: &str, contents: &[u8], lost: TopoError) -> Result<Version> {
        let (data, stat) = match self
            .call(key, |c| async move { c.get_data(key).await })
            .await
        {
            Ok(read) => read,
            Err(e) if e.is_no_node() => return Err(lost),
            Err(e) => return Err(unknown(key, format!("{lost}; then reading back: {e}"))),
        };
        if stat.version != 0 || stat.ephemeral_owner != 0 {
            return Err(lost);
        }
        if data != contents {
            return Err(TopoError::NodeExists(key.to_string()));
        }
        // Empty data and no children is also what a directory looks like.
        let file = !data.is_empty() || self.is_empty_file(key).await.unwrap_or(false);
        if file && stat.num_children == 0 {
            Ok(version(0))
        } else {
            Err(lost)
        }
    }

    /// A multi-op of a check that the lock node behind `fence` is still there, then
    /// `add`'s write; a failed check is `LockLost` and nothing is written.
    async fn multi(
        &self,
        fence: &Fence,
        key: &str,
        add: impl FnOnce(&mut MultiWriter<'_>) -> std::result::Result<(), zookeeper_client::Error>,
    ) -> Result<Vec<MultiWriteResult>> {
        // The lock node must be the very one we created (its creation zxid is the token):
        // a node of the same name made after the queue directory was recreated is not ours.
        // ZooKeeper's check op compares only data versions, so this read precedes the
        // multi-op; a replacement between the two would need our node deleted, its queue
        // removed and remade, and a new node of the same name, all in one round trip.
        let fk = fence.key();
        let stat = self
            .call(fk, |c| async move { c.check_stat(fk).await })
            .await?;
        if stat.is_none_or(|s| u64::try_from(s.czxid).ok() != Some(fence.token())) {
            return Err(TopoError::LockLost(fence.dir().to_string()));
        }
        let client = self.client().await?;
        let mut w = client.new_multi_writer();
        // Lock nodes are never written after creation: version 0 means "still there", and
        // the multi-op makes that check atomic with the write.
        w.add_check_version(fk, 0).map_err(|e| convert(e, fk))?;
        add(&mut w).map_err(|e| convert(e, key))?;
        self.commit(key, w, |index, e| match index {
            0 => TopoError::LockLost(fence.dir().to_string()),
            _ => convert(e, key),
        })
        .await
    }

    /// Writes `contents` to `key`, at `at_version` when given; an unconditional write of a
    /// missing file creates it (as Vitess does).
    pub(crate) async fn update_key(
        &self,
        fence: Option<&Fence>,
        key: &str,
        contents: &[u8],
        at_version: Option<&Version>,
    ) -> Result<Version> {
        let want = expected(at_version);
        let r = match (fence, want) {
            (None, _) => self.set_data(key, contents, want).await,
            (Some(f), _) => self
                .multi(f, key, |w| w.add_set_data(key, contents, want))
                .await
                .and_then(|r| match r.get(1) {
                    Some(MultiWriteResult::SetData { stat }) => Ok(*stat),
                    other => Err(TopoError::backend(
                        crate::BACKEND,
                        format!("{key}: unexpected multi-op answer {other:?}"),
                        zookeeper_client::Error::UnexpectedError("set_data".into()),
                    )),
                }),
        };
        match r {
            Ok(stat) => Ok(version(stat.version)),
            Err(e) if e.is_no_node() && want.is_none() => {
                self.create_key(fence, key, contents).await
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `contents` to `key`, if its version is `version` when given, once. A lost
    /// answer is resolved by reading the node back, never by writing again blindly (the
    /// write may have been applied and followed by another, which a second copy would
    /// undo). Unconditional, it was applied if the node holds our bytes, and the outcome
    /// is unknown otherwise. Conditional: still at `version`, it was not applied and is
    /// sent again (still conditional, so a late copy cannot apply twice); one version on
    /// with our bytes, it was applied; one version on with other bytes, another write won
    /// (`BadVersion`); further on, the outcome is unknown.
    async fn set_data(&self, key: &str, contents: &[u8], version: Option<i32>) -> Result<Stat> {
        let deadline = tokio::time::Instant::now() + self.options().remote_operation_timeout;
        loop {
            let lost = match self
                .call_once(
                    key,
                    |c| async move { c.set_data(key, contents, version).await },
                )
                .await
            {
                Err(e) if e.is(ErrorKind::OutcomeUnknown) => e,
                done => return done,
            };
            tracing::debug!(%key, %lost, "the answer to a write was lost; reading it back");
            let (data, stat) = match self
                .call(key, |c| async move { c.get_data(key).await })
                .await
            {
                Ok(read) => read,
                Err(e) => return Err(unknown(key, format!("{lost}; then reading back: {e}"))),
            };
            let ours = data == contents;
            match version.map(|v| stat.version.checked_sub(v)) {
                None if ours => return Ok(stat),
                Some(Some(0)) if tokio::time::Instant::now() < deadline => continue,
                Some(Some(1)) if ours => return Ok(stat),
                Some(Some(1)) => return Err(TopoError::BadVersion(key.to_string())),
                _ => return Err(lost),
            }
        }
    }

    /// Reads `key`; a directory znode reads as empty data (as in Vitess).
    pub(crate) async fn get_key(&self, key: &str) -> Result<(Vec<u8>, Version)> {
        let (data, stat) = self
            .call(key, |c| async move { c.get_data(key).await })
            .await?;
        Ok((data, version(stat.version)))
    }

    /// Deletes `key` (at `at_version` when given), then the directories it leaves empty.
    pub(crate) async fn delete_key(
        &self,
        fence: Option<&Fence>,
        key: &str,
        at_version: Option<&Version>,
    ) -> Result<()> {
        let want = expected(at_version);
        match fence {
            None => match self
                .call_once(key, |c| async move { c.delete(key, want).await })
                .await
            {
                Ok(()) => {}
                // The answer was lost: a node found gone was deleted, by us or by another
                // (as etcd answers); a node still there stays an unknown outcome.
                Err(e) if e.is(ErrorKind::OutcomeUnknown) => {
                    let gone = self
                        .call(key, |c| async move { c.check_stat(key).await })
                        .await;
                    if !matches!(gone, Ok(None)) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            },
            Some(f) => {
                self.multi(f, key, |w| w.add_delete(key, want)).await?;
            }
        }
        self.remove_empty_parents(key).await;
        Ok(())
    }

    /// Deletes now-empty directory znodes above `key`, up to (not including) the root.
    pub(crate) async fn remove_empty_parents(&self, key: &str) {
        let mut dir = path::parent(key);
        while dir.len() > self.root.len() && dir.starts_with(&self.root) {
            let d = dir.as_str();
            // NotEmpty (or NoNode) when someone else still uses it: stop there.
            if self
                .call_once(d, |c| async move { c.delete(d, None).await })
                .await
                .is_err()
            {
                return;
            }
            dir = path::parent(&dir);
        }
    }

    /// Every file (leaf znode) whose key starts with `prefix` (absolute), sorted by key.
    pub(crate) async fn list_prefix(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        self.catch_up(prefix).await?;
        // Walk from the deepest directory that every match lies under.
        let base = if prefix.ends_with('/') {
            prefix.trim_end_matches('/').to_string()
        } else {
            path::parent(prefix)
        };
        let base = if base.is_empty() {
            "/".to_string()
        } else {
            base
        };
        let items: BTreeMap<String, (Vec<u8>, Version)> = self
            .walk(base)
            .await?
            .into_iter()
            .filter(|(k, _, _)| k.starts_with(prefix))
            .map(|(k, data, v)| (k, (data, v)))
            .collect();
        if items.is_empty() {
            return Err(TopoError::NoNode(prefix.to_string()));
        }
        Ok(items
            .into_iter()
            .map(|(k, (value, version))| KvInfo {
                key: self.rel(&k),
                value,
                version,
            })
            .collect())
    }

    /// Whether a znode with empty data and no children is a file rather than an empty
    /// directory: both look alike, but files are created without the CREATE permission
    /// (Vitess's file ACL is ADMIN|READ|WRITE, its directory ACL all permissions).
    pub(crate) async fn is_empty_file(&self, key: &str) -> Result<bool> {
        let (acls, _) = self
            .call(key, |c| async move { c.get_acl(key).await })
            .await?;
        Ok(!acls.iter().any(|a| a.permission().has(Permission::CREATE)))
    }

    /// Every file at or below `key` (leaf znodes, less empty directories), as (key, data,
    /// version), reading at most [`WALK_CONCURRENCY`] znodes at once per level.
    pub(crate) fn walk(&self, key: String) -> BoxFuture<'_, Result<Vec<Leaf>>> {
        async move {
            let k = key.as_str();
            let children = match self
                .call(k, |c| async move { c.list_children(k).await })
                .await
            {
                Ok(c) => c,
                Err(e) if e.is_no_node() => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            if children.is_empty() {
                let (data, v) = match self.get_key(k).await {
                    Ok(read) => read,
                    Err(e) if e.is_no_node() => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                if !data.is_empty() {
                    return Ok(vec![(key, data, v)]);
                }
                return match self.is_empty_file(k).await {
                    Ok(true) => Ok(vec![(key, data, v)]),
                    Ok(false) => Ok(Vec::new()),
                    Err(e) if e.is_no_node() => Ok(Vec::new()),
                    Err(e) => Err(e),
                };
            }
            let subs = futures::stream::iter(
                children
                    .into_iter()
                    .map(|c| self.walk(format!("{}/{c}", key.trim_end_matches('/')))),
            )
            .buffer_unordered(WALK_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
            let mut out = Vec::new();
            for s in subs {
                out.extend(s?);
            }
            Ok(out)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions() {
        assert_eq!(expected(None), None);
        assert_eq!(expected(Some(&Version::new(7))), Some(7));
        // Too large for ZooKeeper: matches nothing instead of wrapping onto a real version.
        assert_eq!(expected(Some(&Version::new(1 << 40))), Some(-2));
    }
}
