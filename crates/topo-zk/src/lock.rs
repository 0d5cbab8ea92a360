//! Locks (Vitess's `lock.go`): a [`QueueEntry`] under `<dir>/locks/` holding the lock
//! contents; the first entry holds the lock. See the `queue` module for how entries live,
//! wait and are lost.

use async_trait::async_trait;
use topo_core::lock::{self, LockKind, LockOptions};
use topo_core::{path, ErrorKind, Fence, LockDescriptor, LockGuard, Result, TopoError};

use crate::queue::QueueEntry;
use crate::ZkConn;

/// Takes the lock on `dir` (relative).
pub(crate) async fn lock(
    conn: &ZkConn,
    dir: &str,
    contents: &str,
    opts: LockOptions,
) -> Result<LockGuard> {
    // ZooKeeper locks live as long as the session: there is no TTL to set.
    let kind = opts.kind;
    let dir_key = conn.key(dir)?;
    let rel_dir = path::normalize(dir)?;
    let locks = lock::locks_dir(&dir_key);
    // Unlike Vitess (which creates the path), a directory with nothing in it is NoNode, as
    // on every other backend: a lock on a missing keyspace is a mistake to report.
    // A named lock's directory is usually made for the lock and removed with it.
    let mut queue_exists = false;
    if kind != LockKind::Named {
        let d = dir_key.as_str();
        let children = conn
            .call(d, |c| async move { c.list_children(d).await })
            .await?;
        if children.is_empty() {
            return Err(TopoError::NoNode(dir_key));
        }
        queue_exists = children.iter().any(|c| c == "locks");
    }
    if kind == LockKind::Try && queue_exists && !QueueEntry::queue(conn, &locks).await?.is_empty() {
        return Err(lock::lock_exists(&rel_dir));
    }
    let mut entry = QueueEntry::enqueue(conn, &locks, contents.as_bytes(), queue_exists).await?;
    if kind == LockKind::Try && !entry.is_first(&rel_dir).await? {
        // Another got in between the look at the queue and our node: a try never waits.
        if let Err(e) = entry.remove().await {
            tracing::warn!(dir = %rel_dir, "removing the node of a failed try_lock: {e}");
        }
        return Err(lock::lock_exists(&rel_dir));
    }
    // Dropping this future while it waits drops the entry, which deletes its node.
    entry.wait_first(&rel_dir).await?;
    Ok(Box::new(ZkLock {
        entry,
        dir: rel_dir,
    }))
}

/// A held ZooKeeper lock.
#[derive(Debug)]
struct ZkLock {
    entry: QueueEntry,
    dir: String,
}

impl ZkLock {
    fn lost(&self) -> TopoError {
        TopoError::LockLost(self.dir.clone())
    }

    /// A closed connection (`Interrupted`) has released the lock with its session.
    fn closed_is_lost(&self, e: TopoError) -> TopoError {
        if e.is(ErrorKind::Interrupted) {
            self.lost()
        } else {
            e
        }
    }
}

#[async_trait]
impl LockDescriptor for ZkLock {
    fn dir(&self) -> &str {
        &self.dir
    }
    fn fencing_token(&self) -> u64 {
        self.entry.token
    }
    fn fence(&self) -> Fence {
        Fence::new(self.dir.clone(), self.entry.node.clone(), self.entry.token)
    }
    async fn check(&self) -> Result<()> {
        if self.entry.lost.is_cancelled() {
            return Err(self.lost());
        }
        match self.entry.exists().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost()),
            Err(e) => Err(self.closed_is_lost(e)),
        }
    }
    async fn unlock(mut self: Box<Self>) -> Result<()> {
        match self.entry.remove_with_queue().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost()),
            Err(e) => Err(self.closed_is_lost(e)),
        }
    }
}
