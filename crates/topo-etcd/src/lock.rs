//! Locks: Vitess's layout (`<dir>/locks/<lease id>` with a lease, queued by revision) with
//! a lease kept alive in the background while the lock is held.
//!
//! An uncontended acquisition takes two round trips: a lease grant, then one transaction
//! that writes the lock key and reads the queue head (and the directory, for `lock`).
//! `try_lock` writes its key only if no lock key exists (a range compare in the same
//! transaction), so a failed attempt never stands in anyone's queue.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio_util::sync::CancellationToken;
use topo_core::{path, Fence, LockDescriptor, Result, TopoError};

use crate::EtcdConn;

/// Vitess's `NamedLockTTL`.
pub(crate) const NAMED_LOCK_TTL: Duration = Duration::from_secs(24 * 3600);

/// How a lock call behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Waits; the directory must have entries.
    Blocking,
    /// Waits; the directory need not exist.
    Named,
    /// Never waits behind others.
    Try,
}

/// A lock key of this client: queued or held. Dropping it revokes the lease.
#[derive(Debug)]
pub(crate) struct EtcdLock {
    conn: EtcdConn,
    dir: String,
    key: String,
    lease: i64,
    token: u64,
    /// Cancelled by the keep-alive task once the lease is gone (or unrenewed for a TTL).
    lost: CancellationToken,
    keepalive: CancellationToken,
    released: bool,
}

fn first_of(resp: Option<TxnOpResponse>) -> Option<(String, i64)> {
    match resp {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.create_revision(),
            )
        }),
        _ => None,
    }
}

/// Queues for the lock on `dir` and waits for it.
pub(crate) async fn acquire(
    conn: &EtcdConn,
    dir: &str,
    contents: &str,
    ttl: Duration,
    kind: Kind,
) -> Result<topo_core::LockGuard> {
    Ok(Box::new(
        acquire_lock(conn, dir, contents, ttl, kind).await?,
    ))
}

/// As [`acquire`], returning the concrete lock.
pub(crate) async fn acquire_lock(
    conn: &EtcdConn,
    dir: &str,
    contents: &str,
    ttl: Duration,
    kind: Kind,
) -> Result<EtcdLock> {
    let dir_key = conn.key(dir)?;
    let rel_dir = path::normalize(dir)?;
    let dir_prefix = path::dir_prefix(&conn.root, dir)?;
    let locks_prefix = format!("{}/locks/", dir_key.trim_end_matches('/'));
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    let grant = conn
        .call(&dir_key, |mut c| async move {
            c.lease_grant(ttl_secs, None).await
        })
        .await?;
    let (lease, granted) = (grant.id(), secs(grant.ttl()));
    let key = format!("{locks_prefix}{lease}");
    // From here on the lease is revoked if we fail or are dropped.
    let mut lock = EtcdLock::new(conn.clone(), rel_dir.clone(), key.clone(), lease, granted);
    let queue_head = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let mut when = vec![Compare::version(key.as_str(), CompareOp::Equal, 0)];
    if kind == Kind::Try {
        // Every key under the prefix must have version 0: none exists.
        when.push(Compare::version(locks_prefix.as_str(), CompareOp::Equal, 0).with_prefix());
    }
    let txn = Txn::new().when(when).and_then(vec![
        TxnOp::put(
            key.as_str(),
            contents,
            Some(PutOptions::new().with_lease(lease)),
        ),
        TxnOp::get(locks_prefix.as_str(), Some(queue_head)),
        // Two keys at most: ours, and anything else in the directory.
        TxnOp::get(
            dir_prefix.as_str(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_limit(2),
            ),
        ),
    ]);
    let resp = conn
        .call(&dir_key, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    if !resp.succeeded() {
        // Our lease is new, so its key cannot exist: the lock is held.
        return Err(held_error(&rel_dir));
    }
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    lock.token = revision as u64;
    let mut ops = resp.op_responses().into_iter().skip(1);
    let head = first_of(ops.next());
    if kind != Kind::Named {
        let others = match ops.next() {
            Some(TxnOpResponse::Get(g)) => g.kvs().iter().any(|kv| kv.key() != key.as_bytes()),
            _ => false,
        };
        if !others {
            return Err(TopoError::NoNode(dir_key));
        }
    }
    if head.as_ref().is_some_and(|(k, _)| *k == key) {
        return Ok(lock);
    }
    if kind == Kind::Try {
        // The compare left ours the only key, so this is not reached; a try never waits.
        return Err(held_error(&rel_dir));
    }
    lock.wait(&locks_prefix, revision).await?;
    Ok(lock)
}

/// Vitess's message for a lock someone holds.
fn held_error(rel_dir: &str) -> TopoError {
    TopoError::NodeExists(format!("lock already exists at path {rel_dir}"))
}

/// A TTL in seconds as etcd reports it (never below one second).
fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0).max(1))
}

impl EtcdLock {
    fn new(conn: EtcdConn, dir: String, key: String, lease: i64, ttl: Duration) -> Self {
        let lost = CancellationToken::new();
        let keepalive = CancellationToken::new();
        tokio::spawn(keep_alive(
            conn.clone(),
            lease,
            ttl,
            lost.clone(),
            keepalive.clone(),
        ));
        EtcdLock {
            conn,
            dir,
            key,
            lease,
            token: 0,
            lost,
            keepalive,
            released: false,
        }
    }

    fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// A token cancelled when the lease is lost (for elections).
    pub(crate) fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The lock key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Waits until no key queued before ours (revision below `revision`) remains: each time
    /// by watching the immediate predecessor for its deletion.
    async fn wait(&self, locks_prefix: &str, revision: i64) -> Result<()> {
        loop {
            if self.conn.closed.is_cancelled() {
                return Err(TopoError::Interrupted(format!(
                    "{}: connection closed",
                    self.dir
                )));
            }
            if self.is_lost() {
                return Err(TopoError::LockLost(self.dir.clone()));
            }
            let opts = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1);
            let prefix = locks_prefix.to_string();
            let resp = self
                .conn
                .call(locks_prefix, |mut c| {
                    let (prefix, opts) = (prefix.clone(), opts.clone());
                    async move { c.get(prefix, Some(opts)).await }
                })
                .await?;
            let Some(pred) = resp.kvs().first() else {
                return Ok(());
            };
            let pred_key = String::from_utf8_lossy(pred.key()).into_owned();
            let from = resp.header().map(|h| h.revision()).unwrap_or(revision);
            // The watch itself must not time out: waiting is the point. It ends when the
            // predecessor goes, or after a while to re-check (a missed event, a lost lease).
            let mut stream = match self
                .conn
                .open_watch(&pred_key, WatchOptions::new().with_start_revision(from + 1))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("watching the lock predecessor: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let deleted = async {
                while let Ok(Some(msg)) = stream.message().await {
                    if msg
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                        || msg.canceled()
                    {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = self.conn.closed.cancelled() => {}
                _ = tokio::time::timeout(Duration::from_secs(5), deleted) => {}
            }
        }
    }

    fn revoke_in_background(&self) {
        let (conn, lease) = (self.conn.clone(), self.lease);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Err(e) = conn
                    .call("lease revoke", |mut c| async move {
                        c.lease_revoke(lease).await
                    })
                    .await
                {
                    tracing::debug!(lease, "revoking a dropped lock's lease: {e}");
                }
            });
        }
    }
}

/// Renews `lease` every third of its TTL until `stop`, over one keep-alive stream (opened
/// again after a failure). Cancels `lost` when the server says the lease is gone, or when
/// no renewal succeeded for a whole TTL: counted from when the last successful renewal was
/// sent, so the server cannot have kept the lease longer than we believe.
async fn keep_alive(
    conn: EtcdConn,
    lease: i64,
    mut ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = conn.closed.cancelled() => {
                // A closed connection releases what it holds.
                if let Err(e) = conn.call("lease revoke", |mut c| async move {
                    c.lease_revoke(lease).await
                }).await {
                    tracing::debug!(lease, "revoking a lease at close: {e}");
                }
                lost.cancel();
                return;
            }
            _ = tokio::time::sleep((ttl / 3).max(Duration::from_millis(100))) => {}
        }
        // Every attempt ends by the time the lease would expire unrenewed: a member that
        // hangs must not keep us from noticing.
        let deadline = (Instant::now() + conn.options.remote_operation_timeout).min(last_ok + ttl);
        let sent = Instant::now();
        let attempt = async {
            let (mut keeper, mut responses) = match stream.take() {
                Some(s) => s,
                None => conn.client.clone().lease_keep_alive(lease).await?,
            };
            keeper.keep_alive().await?;
            let resp = responses.message().await?;
            Ok::<_, etcd_client::Error>((resp, (keeper, responses)))
        };
        match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(Ok((Some(r), s))) if r.ttl() > 0 => {
                last_ok = sent;
                ttl = secs(r.ttl());
                stream = Some(s);
            }
            Ok(Ok((Some(_), _))) => {
                tracing::warn!(lease, "the lock's lease expired");
                lost.cancel();
                return;
            }
            Ok(Ok((None, _))) => tracing::debug!(lease, "lease keep-alive stream ended"),
            Ok(Err(e)) => tracing::debug!(lease, "lease keep-alive failed: {e}"),
            Err(_) => tracing::debug!(lease, "lease keep-alive timed out"),
        }
        if last_ok.elapsed() >= ttl {
            tracing::warn!(lease, "no lease renewal for a whole TTL: the lock is lost");
            lost.cancel();
            return;
        }
    }
}

#[async_trait]
impl LockDescriptor for EtcdLock {
    fn dir(&self) -> &str {
        &self.dir
    }
    fn fencing_token(&self) -> u64 {
        self.token
    }
    fn fence(&self) -> Fence {
        Fence::new(self.dir.clone(), self.key.clone(), self.token)
    }
    async fn check(&self) -> Result<()> {
        let lost = || TopoError::LockLost(self.dir.clone());
        if self.is_lost() {
            return Err(lost());
        }
        let key = self.key.clone();
        let read = self.conn.call(&key, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        });
        // While the server does not answer, the lease running out decides.
        let resp = tokio::select! {
            biased;
            _ = self.lost.cancelled() => return Err(lost()),
            r = read => r.map_err(|e| if self.is_lost() { lost() } else { e })?,
        };
        match resp.kvs().first() {
            Some(kv) if kv.create_revision() as u64 == self.token => Ok(()),
            _ => Err(TopoError::LockLost(self.dir.clone())),
        }
    }
    async fn unlock(mut self: Box<Self>) -> Result<()> {
        self.released = true;
        self.keepalive.cancel();
        let lease = self.lease;
        let lost = self.is_lost();
        match self
            .conn
            .call(
                &self.key,
                |mut c| async move { c.lease_revoke(lease).await },
            )
            .await
        {
            Ok(_) if !lost => Ok(()),
            Ok(_) => Err(TopoError::LockLost(self.dir.clone())),
            Err(e) if e.is_no_node() => Err(TopoError::LockLost(self.dir.clone())),
            Err(e) => Err(e),
        }
    }
}

impl Drop for EtcdLock {
    fn drop(&mut self) {
        if !self.released {
            self.keepalive.cancel();
            self.revoke_in_background();
        }
    }
}
