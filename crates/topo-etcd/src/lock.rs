//! Locks: Vitess's layout (`<dir>/locks/<lease id>` with a lease, queued by revision) with
//! a lease kept alive in the background while the lock is held.
//!
//! An uncontended acquisition takes two round trips: a lease grant, then one transaction
//! that writes the lock key and reads the queue head (and the directory, for `lock`).
//! `try_lock` writes its key only if no lock key exists (a range compare in the same
//! transaction), so a failed attempt never stands in anyone's queue.
//!
//! Each lock key has a lease task (tracked by the connection, so `close` waits for it): it
//! renews the lease and, when the lock is released, dropped, abandoned or the connection
//! closed, revokes it, retrying with backoff until that succeeds or the lease would have
//! expired anyway. An acquisition that fails revokes its lease before it returns; one that
//! is dropped leaves the revoke to the task.
//!
//! The loss clock starts when the last successful renewal (first: the grant) was sent:
//! the server cannot have kept the lease for longer than a TTL after that, so `lost` fires
//! no later than the server's expiry, before anyone else can take the lock.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use topo_core::lock::{self, LockKind, LockOptions};
use topo_core::{path, Fence, LockDescriptor, Result, TopoError};

use crate::client::{backoff, WriteError};
use crate::error::never_sent;
use crate::EtcdConn;

/// First pause before retrying a failed renewal or revoke; it doubles each time.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between revoke attempts.
const REVOKE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A lock key of this client: queued or held. Dropping it revokes the lease in the
/// background.
#[derive(Debug)]
pub(crate) struct EtcdLock {
    conn: EtcdConn,
    dir: String,
    key: String,
    lease: i64,
    token: u64,
    /// Cancelled by the lease task once the lease is gone (or unrenewed for a TTL).
    lost: CancellationToken,
    /// Cancelled to stop renewing and revoke the lease.
    release: CancellationToken,
    /// The revoke's result, once the lease task has revoked (or given up).
    revoked: Option<oneshot::Receiver<Result<()>>>,
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

/// Queues for the lock on `dir` as `opts` says and waits for it.
pub(crate) async fn acquire(
    conn: &EtcdConn,
    dir: &str,
    contents: &str,
    opts: LockOptions,
) -> Result<topo_core::LockGuard> {
    let ttl = opts.ttl_or(conn.options.lease_ttl);
    Ok(Box::new(
        acquire_lock(conn, dir, contents, ttl, opts.kind).await?,
    ))
}

/// As [`acquire`], returning the concrete lock.
pub(crate) async fn acquire_lock(
    conn: &EtcdConn,
    dir: &str,
    contents: &str,
    ttl: Duration,
    kind: LockKind,
) -> Result<EtcdLock> {
    let dir_key = conn.key(dir)?;
    let rel_dir = path::normalize(dir)?;
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    // The server's lease starts after this instant: the loss clock starts here.
    let granted_at = Instant::now();
    // A repeated grant only leaves an unused lease, which expires without a key.
    let grant = conn
        .call(&dir_key, |mut c| async move {
            c.lease_grant(ttl_secs, None).await
        })
        .await?;
    let (lease, granted) = (grant.id(), secs(grant.ttl()));
    // From here on the lease is revoked if we fail or are dropped.
    let mut lock = EtcdLock::new(conn.clone(), rel_dir, &dir_key, lease, granted_at, granted);
    match lock.enqueue_and_wait(dir, contents, kind).await {
        Ok(()) => Ok(lock),
        Err(e) => {
            // Leave no key behind before returning (a dropped call leaves it to the task).
            lock.abandon().await;
            Err(e)
        }
    }
}

/// A TTL in seconds as etcd reports it (never below one second).
fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0).max(1))
}

impl EtcdLock {
    fn new(
        conn: EtcdConn,
        dir: String,
        dir_key: &str,
        lease: i64,
        granted_at: Instant,
        ttl: Duration,
    ) -> Self {
        let key = format!("{}/{lease}", lock::locks_dir(dir_key));
        let lost = CancellationToken::new();
        let release = CancellationToken::new();
        let (done, revoked) = oneshot::channel();
        conn.cleanups.spawn(lease_task(
            conn.clone(),
            lease,
            granted_at,
            ttl,
            lost.clone(),
            release.clone(),
            done,
        ));
        EtcdLock {
            conn,
            dir,
            key,
            lease,
            token: 0,
            lost,
            release,
            revoked: Some(revoked),
        }
    }

    /// Writes the lock key (one transaction that also reads the queue head and, for
    /// `lock`, the directory) and waits for the keys queued before it to go.
    async fn enqueue_and_wait(&mut self, dir: &str, contents: &str, kind: LockKind) -> Result<()> {
        let conn = &self.conn;
        let dir_key = conn.key(dir)?;
        let dir_prefix = path::dir_prefix(&conn.root, dir)?;
        let locks_prefix = format!("{}/", lock::locks_dir(&dir_key));
        let key = self.key.clone();
        let queue_head = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let mut when = vec![Compare::version(key.as_str(), CompareOp::Equal, 0)];
        if kind == LockKind::Try {
            // Every key under the prefix must have version 0: none exists.
            when.push(Compare::version(locks_prefix.as_str(), CompareOp::Equal, 0).with_prefix());
        }
        let txn = Txn::new().when(when).and_then(vec![
            TxnOp::put(
                key.as_str(),
                contents,
                Some(PutOptions::new().with_lease(self.lease)),
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
        // Sent once: a repeat would find our own key and report the lock held. When the
        // reply is lost, the caller revokes the lease, which removes the key if written.
        let deadline = Instant::now() + conn.options.remote_operation_timeout;
        let resp = conn
            .call_write(&dir_key, deadline, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| match e {
                // etcd's "requested lease not found": the lease ran out before the key
                // was written (not a missing directory).
                WriteError::NotApplied(e) if e.is_no_node() => TopoError::Timeout(format!(
                    "{}: the lock's lease expired before its key was written",
                    self.dir
                )),
                WriteError::NotApplied(e) | WriteError::MaybeApplied(e) => e,
            })?;
        if !resp.succeeded() {
            // Our lease is new, so its key cannot exist: the lock is held.
            return Err(lock::lock_exists(&self.dir));
        }
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        self.token = revision as u64;
        let mut ops = resp.op_responses().into_iter().skip(1);
        let head = first_of(ops.next());
        if kind != LockKind::Named {
            let others = match ops.next() {
                Some(TxnOpResponse::Get(g)) => g.kvs().iter().any(|kv| kv.key() != key.as_bytes()),
                _ => false,
            };
            if !others {
                return Err(TopoError::NoNode(dir_key));
            }
        }
        if head.as_ref().is_some_and(|(k, _)| *k == key) {
            return Ok(());
        }
        if kind == LockKind::Try {
            // The compare left ours the only key, so this is not reached; a try never waits.
            return Err(lock::lock_exists(&self.dir));
        }
        self.wait(&locks_prefix, revision).await
    }

    /// Stops renewing, revokes the lease and waits (bounded) for the revoke's result; on
    /// failure the lease task keeps trying in the background.
    async fn release_and_wait(&mut self) -> Result<()> {
        self.release.cancel();
        let Some(revoked) = self.revoked.take() else {
            return Ok(());
        };
        match tokio::time::timeout(self.conn.options.remote_operation_timeout, revoked).await {
            Ok(Ok(result)) => result,
            // The task is gone: the runtime is shutting down.
            Ok(Err(_)) => Err(TopoError::Interrupted(format!("{}: unlocking", self.dir))),
            Err(_) => Err(TopoError::Timeout(format!(
                "{}: releasing the lock (still being revoked in the background)",
                self.dir
            ))),
        }
    }

    /// Releases a key that never became (or should not stay) a held lock.
    async fn abandon(&mut self) {
        if let Err(e) = self.release_and_wait().await {
            tracing::debug!(dir = %self.dir, "removing an abandoned lock key: {e}");
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
            // The predecessor and our own key, read together: a key deleted behind our back
            // means we no longer queue, and must not take the lock when the queue empties.
            let txn = Txn::new().and_then(vec![
                TxnOp::get(locks_prefix, Some(opts)),
                TxnOp::get(self.key.as_str(), None),
            ]);
            let resp = self
                .conn
                .call(locks_prefix, |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            let from = resp.header().map(|h| h.revision()).unwrap_or(revision);
            let mut reads = resp.op_responses().into_iter();
            let pred = first_of(reads.next());
            if first_of(reads.next()).is_none_or(|(_, created)| created != revision) {
                tracing::warn!(key = %self.key, "our queued lock key was deleted");
                return Err(TopoError::LockLost(self.dir.clone()));
            }
            let Some((pred_key, _)) = pred else {
                return Ok(());
            };
            // The watch itself must not time out: waiting is the point. It ends when the
            // predecessor goes, or after a while to re-check (a missed event, a lost lease).
            let mut stream = match self
                .conn
                .open_watch(&pred_key, WatchOptions::new().with_start_revision(from + 1))
                .await
            {
                Ok(s) => s,
                Err((e, _)) => {
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
}

/// The pause between renewals: a third of the TTL.
fn renewal_period(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

/// The life of a lock's lease: renewed until `release` (or the connection's close), then
/// revoked; the revoke's result goes to `done`.
async fn lease_task(
    conn: EtcdConn,
    lease: i64,
    granted_at: Instant,
    ttl: Duration,
    lost: CancellationToken,
    release: CancellationToken,
    done: oneshot::Sender<Result<()>>,
) {
    let result = match renew(&conn, lease, granted_at, ttl, &lost, &release).await {
        Some(expires_by) => revoke(&conn, lease, expires_by, &lost).await,
        None => Err(TopoError::LockLost(format!("lease {lease}"))),
    };
    let _ = done.send(result);
}

/// Renews `lease` every third of its TTL, over one keep-alive stream (opened again after a
/// failure), retrying failures soon, until `release` or the connection closes. Cancels
/// `lost` when the server says the lease is gone (then returns `None`: nothing to revoke)
/// or when no renewal succeeded for a whole TTL counted from when the last successful one
/// (first: the grant) was SENT, so the server cannot have kept the lease longer than we
/// believe. Otherwise returns the latest instant the server may still hold the lease.
async fn renew(
    conn: &EtcdConn,
    lease: i64,
    granted_at: Instant,
    mut ttl: Duration,
    lost: &CancellationToken,
    release: &CancellationToken,
) -> Option<Instant> {
    // When the last successful renewal was sent, and the latest the lease may live on.
    let mut last_ok = granted_at;
    let mut expires_by = Instant::now() + ttl;
    let mut next = granted_at + renewal_period(ttl);
    let mut retry = backoff(RETRY_FIRST, renewal_period(ttl));
    let mut stream = None;
    loop {
        let deadline = last_ok + ttl;
        tokio::select! {
            biased;
            _ = release.cancelled() => return Some(expires_by),
            // A closed connection holds nothing: the lock is lost to its holder (and
            // released by the revoke that follows).
            _ = conn.closed.cancelled() => {
                lost.cancel();
                return Some(expires_by);
            }
            // Never sleep past the loss deadline.
            _ = tokio::time::sleep_until(deadline) => {}
            _ = tokio::time::sleep_until(next) => {}
        }
        if Instant::now() >= deadline {
            tracing::warn!(lease, "no lease renewal for a whole TTL: the lock is lost");
            lost.cancel();
            return Some(expires_by);
        }
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
        // Every attempt ends by the loss deadline: a member that hangs must not keep us
        // from noticing.
        let bound = (sent + conn.options.remote_operation_timeout).min(deadline);
        let result = tokio::select! {
            biased;
            _ = release.cancelled() => return Some(expires_by),
            _ = conn.closed.cancelled() => {
                lost.cancel();
                return Some(expires_by);
            }
            r = tokio::time::timeout_at(bound, attempt) => r,
        };
        match result {
            Ok(Ok((Some(r), s))) if r.ttl() > 0 => {
                last_ok = sent;
                ttl = secs(r.ttl());
                expires_by = Instant::now() + ttl;
                stream = Some(s);
                next = sent + renewal_period(ttl);
                retry = backoff(RETRY_FIRST, renewal_period(ttl));
                continue;
            }
            Ok(Ok((Some(_), _))) => {
                tracing::warn!(lease, "the lock's lease expired");
                lost.cancel();
                return None;
            }
            Ok(Ok((None, _))) => tracing::debug!(lease, "lease keep-alive stream ended"),
            Ok(Err(e)) => tracing::debug!(lease, "lease keep-alive failed: {e}"),
            Err(_) => tracing::debug!(lease, "lease keep-alive timed out"),
        }
        // Retry soon, on a new stream.
        next = Instant::now() + retry.next_delay();
    }
}

/// Revokes `lease`, retrying with capped, jittered backoff until it succeeds or the lease
/// would have expired anyway (`expires_by`). `LockLost` when the lease was already gone
/// (unless an earlier attempt of ours may have revoked it) or `lost` had fired.
async fn revoke(
    conn: &EtcdConn,
    lease: i64,
    expires_by: Instant,
    lost: &CancellationToken,
) -> Result<()> {
    let what = format!("revoking lease {lease}");
    let mut backoff = backoff(RETRY_FIRST, REVOKE_BACKOFF_MAX);
    // Whether an earlier attempt may have reached the server.
    let mut maybe_revoked = false;
    loop {
        let bound = (Instant::now() + conn.options.remote_operation_timeout).min(expires_by);
        let attempt = conn.client.clone();
        let err = match tokio::time::timeout_at(bound, async move {
            let mut c = attempt;
            c.lease_revoke(lease).await
        })
        .await
        {
            Ok(Ok(_)) if !lost.is_cancelled() => return Ok(()),
            Ok(Ok(_)) => return Err(TopoError::LockLost(what)),
            Ok(Err(e)) => {
                let sent = !never_sent(&e);
                let err = crate::error::convert(e, &what);
                if err.is_no_node() {
                    return if maybe_revoked && !lost.is_cancelled() {
                        Ok(())
                    } else {
                        Err(TopoError::LockLost(what))
                    };
                }
                maybe_revoked |= sent;
                err
            }
            Err(_) => {
                maybe_revoked = true;
                TopoError::Timeout(what.clone())
            }
        };
        let pause = backoff.next_delay();
        if Instant::now() + pause >= expires_by {
            tracing::debug!(lease, "giving up revoking, the lease expires anyway: {err}");
            return Err(err);
        }
        tracing::debug!(lease, "revoke failed, retrying in the background: {err}");
        tokio::time::sleep(pause).await;
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
        let was_lost = self.is_lost();
        match self.release_and_wait().await {
            Ok(()) if !was_lost => Ok(()),
            Ok(()) => Err(TopoError::LockLost(self.dir.clone())),
            Err(e) if e.is(topo_core::ErrorKind::LockLost) => {
                Err(TopoError::LockLost(self.dir.clone()))
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for EtcdLock {
    fn drop(&mut self) {
        // The lease task revokes the lease (tracked, so `close` waits for it).
        self.release.cancel();
    }
}
