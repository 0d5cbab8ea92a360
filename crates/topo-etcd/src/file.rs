//! Files: create, update, get, list and delete as Vitess's etcd2topo does them, with
//! Version = the key's ModRevision; writes may be fenced by a held lock.
//!
//! A write is sent once, and again only when it provably never reached a server. When its
//! reply is lost it may or may not have been applied; its outcome is then settled from the
//! key's state: a compare-and-set or conditional delete is sent again, which is safe
//! because the revision it compares is gone once it applied, and a refusal is judged from
//! the key it reads back; a create or an unconditional write is never repeated, only read
//! back (a create sent again would re-create the file if another client deleted it after
//! ours applied). What the key shows cannot tell apart is reported as `OutcomeUnknown`,
//! never as a definite answer that may be wrong. One ambiguity is accepted: a key that now
//! holds exactly our contents, written right after the version we expected (for a create:
//! never changed since its creation), counts as our write even if another client wrote the
//! same bytes.

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
use topo_core::{Fence, KvInfo, Result, TopoError, Version};

use crate::client::WriteError;
use crate::EtcdConn;

/// Attempts of a write whose earlier attempt's outcome is unknown.
const ATTEMPTS: u32 = 4;

/// The write a transaction makes.
#[derive(Clone, Copy)]
enum Write<'a> {
    /// Create `contents`; the key must not exist.
    Create(&'a [u8]),
    /// Set `contents`, at the given version or whatever the version.
    Update(&'a [u8], Option<&'a Version>),
    /// Delete, at the given version or whatever the version.
    Delete(Option<&'a Version>),
}

impl Write<'_> {
    /// True when sending the transaction again after a lost reply cannot apply it over a
    /// later change: it compares a mod revision, which no longer matches once it applied,
    /// whatever happened to the key since. Not a create: after ours applied and another
    /// client deleted the key, its "does not exist" comparison holds again.
    fn resendable(&self) -> bool {
        matches!(self, Write::Update(_, Some(_)) | Write::Delete(Some(_)))
    }

    /// The comparisons on the key.
    fn when(&self, key: &str) -> Vec<Compare> {
        match self {
            Write::Create(_) => vec![Compare::version(key, CompareOp::Equal, 0)],
            Write::Update(_, Some(v)) | Write::Delete(Some(v)) => {
                vec![Compare::mod_revision(key, CompareOp::Equal, v.raw())]
            }
            Write::Update(_, None) | Write::Delete(None) => vec![],
        }
    }

    fn op(&self, key: &str) -> TxnOp {
        match self {
            Write::Create(c) | Write::Update(c, _) => TxnOp::put(key, *c, None),
            Write::Delete(_) => TxnOp::delete(key, None),
        }
    }

    /// Why a first attempt was refused, from the key's current state.
    fn refusal(&self, key: &str, current: Option<&KeyValue>) -> TopoError {
        match (self, current) {
            // A failed create means the key exists.
            (Write::Create(_), _) => TopoError::NodeExists(key.to_string()),
            (Write::Delete(_), None) => TopoError::NoNode(key.to_string()),
            // etcd reports a missing key as a version mismatch too.
            _ => TopoError::BadVersion(key.to_string()),
        }
    }

    /// The outcome of a write after an attempt whose reply was lost, from the key's state
    /// (read in the same transaction as a later attempt that was refused). `Ok(Some(rev))`:
    /// our write is what the key shows; `Ok(None)`: a deletion took effect; `Err` with a
    /// definite kind: ours cannot have applied; else `OutcomeUnknown`.
    fn settle(
        &self,
        key: &str,
        current: Option<&KeyValue>,
        lock_held: bool,
        lost: &TopoError,
    ) -> Result<Option<i64>> {
        let refused = |e: TopoError| {
            if lock_held {
                e
            } else {
                TopoError::LockLost(key.to_string())
            }
        };
        match (self, current) {
            // Created with our contents and not changed since.
            (Write::Create(c), Some(kv)) if kv.version() == 1 && kv.value() == *c => {
                Ok(Some(kv.mod_revision()))
            }
            // Someone else's creation, not changed since: ours never applied.
            (Write::Create(_), Some(kv)) if kv.version() == 1 => {
                Err(refused(TopoError::NodeExists(key.to_string())))
            }
            (Write::Update(c, v), Some(kv))
                if kv.value() == *c && v.is_none_or(|v| v.raw() != kv.mod_revision()) =>
            {
                Ok(Some(kv.mod_revision()))
            }
            (Write::Delete(_), None) => Ok(None),
            // The incarnation we meant to delete is still there, changed by someone else:
            // ours, had it applied, would have removed it.
            (Write::Delete(Some(v)), Some(kv))
                if kv.create_revision() <= v.raw() && kv.mod_revision() != v.raw() =>
            {
                Err(refused(TopoError::BadVersion(key.to_string())))
            }
            _ => Err(TopoError::OutcomeUnknown(format!(
                "{key}: the reply to a write was lost ({lost}) and the key's state cannot \
                 tell whether it applied; read it before trying again"
            ))),
        }
    }
}

/// What one transaction did.
enum Outcome {
    /// It applied, at this revision, with the response of its operation.
    Applied(i64, Option<TxnOpResponse>),
    /// Its comparisons failed: the key as it is, and whether the fence's lock is held.
    Refused(Option<KeyValue>, bool),
}

impl EtcdConn {
    /// One transaction: `when` (plus the fence's lock-key check) then `op`, else read the
    /// key (and the lock key).
    async fn txn_once(
        &self,
        key: &str,
        fence: Option<&Fence>,
        mut when: Vec<Compare>,
        op: TxnOp,
        deadline: tokio::time::Instant,
    ) -> std::result::Result<Outcome, WriteError> {
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
            .call_write(key, deadline, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let succeeded = resp.succeeded();
        let mut responses = resp.op_responses().into_iter();
        if succeeded {
            return Ok(Outcome::Applied(revision, responses.next()));
        }
        let current = match responses.next() {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
            _ => None,
        };
        let lock_held = match fence {
            None => true,
            Some(f) => match responses.next() {
                Some(TxnOpResponse::Get(g)) => g
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == f.token() as i64),
                _ => false,
            },
        };
        Ok(Outcome::Refused(current, lock_held))
    }

    /// Runs `write` on `key` (fenced by `fence`), settling a lost reply as the module docs
    /// say. `Ok(Some(rev))` when a put applied at `rev`; `Ok(None)` for a deletion.
    async fn run_write(
        &self,
        key: &str,
        fence: Option<&Fence>,
        write: Write<'_>,
    ) -> Result<Option<i64>> {
        let deadline = tokio::time::Instant::now() + self.options.remote_operation_timeout;
        // The error of an attempt whose reply was lost, once there was one.
        let mut lost: Option<TopoError> = None;
        let mut attempt = 1;
        loop {
            // After a lost reply, a write that is not resendable is only read back: a
            // comparison that never holds turns the transaction into a read of the key.
            let when = if lost.is_some() && !write.resendable() {
                vec![Compare::version(key, CompareOp::Less, 0)]
            } else {
                write.when(key)
            };
            let outcome = self
                .txn_once(key, fence, when, write.op(key), deadline)
                .await;
            match (outcome, &lost) {
                (Ok(Outcome::Applied(_, Some(TxnOpResponse::Delete(d)))), _) => {
                    return if d.deleted() == 0 {
                        Err(TopoError::NoNode(key.to_string()))
                    } else {
                        Ok(None)
                    }
                }
                (Ok(Outcome::Applied(rev, _)), _) => return Ok(Some(rev)),
                (Ok(Outcome::Refused(_, false)), None) => {
                    return Err(TopoError::LockLost(
                        fence.map(|f| f.dir().to_string()).unwrap_or_default(),
                    ))
                }
                (Ok(Outcome::Refused(current, true)), None) => {
                    return Err(write.refusal(key, current.as_ref()))
                }
                (Ok(Outcome::Refused(current, held)), Some(e)) => {
                    return write.settle(key, current.as_ref(), held, e)
                }
                (Err(WriteError::NotApplied(e)), None) => return Err(e),
                (Err(WriteError::NotApplied(e) | WriteError::MaybeApplied(e)), Some(_))
                | (Err(WriteError::MaybeApplied(e)), None)
                    if attempt == ATTEMPTS || tokio::time::Instant::now() >= deadline =>
                {
                    return Err(TopoError::OutcomeUnknown(format!(
                        "{key}: the reply to a write was lost and its state could not be \
                         read back: {e}"
                    )));
                }
                (Err(WriteError::NotApplied(e) | WriteError::MaybeApplied(e)), _) => {
                    tracing::debug!(key, attempt, "a write's reply was lost: {e}");
                    lost.get_or_insert(e);
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    pub(crate) async fn write(
        &self,
        fence: Option<&Fence>,
        rel: &str,
        contents: &[u8],
        version: Option<Option<&Version>>,
    ) -> Result<Version> {
        let key = self.key(rel)?;
        let write = match version {
            None => Write::Create(contents),
            Some(v) => Write::Update(contents, v),
        };
        match self.run_write(&key, fence, write).await? {
            Some(rev) => Ok(Version::new(rev)),
            None => Err(TopoError::backend_msg(
                crate::BACKEND,
                format!("{key}: a put reported no revision"),
            )),
        }
    }

    pub(crate) async fn remove(
        &self,
        fence: Option<&Fence>,
        rel: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        let key = self.key(rel)?;
        self.run_write(&key, fence, Write::Delete(version))
            .await
            .map(|_| ())
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
