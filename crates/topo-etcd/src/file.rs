//! Files: create, update, get, list and delete as Vitess's etcd2topo does them, with
//! Version = the key's ModRevision; writes may be fenced by a held lock.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use topo_core::{Fence, KvInfo, Result, TopoError, Version};

use crate::EtcdConn;

impl EtcdConn {
    /// A conditional write: `when` (plus the fence's lock-key check) then `op`. On failure,
    /// `on_fail` explains it from the current state of `key` (and the lock is checked
    /// first).
    pub(crate) async fn txn(
        &self,
        key: &str,
        fence: Option<&Fence>,
        mut when: Vec<Compare>,
        op: TxnOp,
        on_fail: impl FnOnce(Option<i64>) -> TopoError,
    ) -> Result<(i64, Option<TxnOpResponse>)> {
        let mut else_ops = vec![TxnOp::get(key, None)];
        if let Some(f) = fence {
            when.push(Compare::create_revision(
                f.key(),
                CompareOp::Equal,
                f.token() as i64,
            ));
            else_ops.push(TxnOp::get(f.key(), None));
        }
        let txn = Txn::new().when(when).and_then(vec![op]).or_else(else_ops);
        let resp = self
            .call(key, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut responses = resp.op_responses().into_iter();
        if resp.succeeded() {
            return Ok((revision, responses.next()));
        }
        let current = match responses.next() {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        };
        if let Some(f) = fence {
            let lock_held = match responses.next() {
                Some(TxnOpResponse::Get(g)) => g
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == f.token() as i64),
                _ => false,
            };
            if !lock_held {
                return Err(TopoError::LockLost(f.dir().to_string()));
            }
        }
        Err(on_fail(current))
    }

    pub(crate) async fn write(
        &self,
        fence: Option<&Fence>,
        rel: &str,
        contents: &[u8],
        version: Option<Option<&Version>>,
    ) -> Result<Version> {
        let key = self.key(rel)?;
        let put = TxnOp::put(key.as_str(), contents, None);
        let creating = version.is_none();
        let when = match version {
            None => vec![Compare::version(key.as_str(), CompareOp::Equal, 0)],
            Some(None) => vec![],
            Some(Some(v)) => vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                v.raw(),
            )],
        };
        let k2 = key.clone();
        // A failed create means the key exists; a failed compare-and-set means another
        // version (etcd reports a missing key as a version mismatch too).
        let fail = move |_| {
            if creating {
                TopoError::NodeExists(k2)
            } else {
                TopoError::BadVersion(k2)
            }
        };
        let (revision, _) = self.txn(&key, fence, when, put, fail).await?;
        Ok(Version::new(revision))
    }

    pub(crate) async fn remove(
        &self,
        fence: Option<&Fence>,
        rel: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        let key = self.key(rel)?;
        let when = match version {
            Some(v) => vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                v.raw(),
            )],
            None => vec![],
        };
        let k2 = key.clone();
        let (_, resp) = self
            .txn(
                &key,
                fence,
                when,
                TxnOp::delete(key.as_str(), None),
                move |cur| match cur {
                    Some(_) => TopoError::BadVersion(k2),
                    None => TopoError::NoNode(k2),
                },
            )
            .await?;
        match resp {
            Some(TxnOpResponse::Delete(d)) if d.deleted() == 0 => Err(TopoError::NoNode(key)),
            _ => Ok(()),
        }
    }

    /// The contents and version of `path`.
    pub(crate) async fn read(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        let key = self.key(path)?;
        let resp = self
            .call(&key, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok((kv.value().to_vec(), Version::new(kv.mod_revision()))),
            None => Err(TopoError::NoNode(key)),
        }
    }

    /// The contents `path` had at `version`.
    pub(crate) async fn read_version(&self, path: &str, version: &Version) -> Result<Vec<u8>> {
        let key = self.key(path)?;
        let rev = version.raw();
        let what = format!("{key} at version {rev}");
        let resp = self
            .call(&what, |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_revision(rev))).await }
            })
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok(kv.value().to_vec()),
            None => Err(TopoError::NoNode(what)),
        }
    }

    /// Every file whose key starts with `root + prefix`, keys relative to the root.
    pub(crate) async fn list_prefix(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        let mut key_prefix = self.key(prefix)?;
        if prefix.ends_with('/') && !key_prefix.ends_with('/') {
            key_prefix.push('/');
        }
        let (items, _) = self.range(&key_prefix, false).await?;
        if items.is_empty() {
            return Err(TopoError::NoNode(key_prefix));
        }
        Ok(items
            .into_iter()
            .map(|i| KvInfo {
                key: self.rel(&i.key),
                value: i.value,
                version: Version::new(i.mod_revision),
            })
            .collect())
    }
}
