//! Locks (Vitess's `lock.go`): queues of ephemeral sequential znodes `<dir>/locks/<seq>`
//! holding the lock contents. The lowest sequence holds; each waiter watches only its
//! immediate predecessor. An entry lives as long as the session: when the session expires
//! the entry is gone and the holder's `check()` says so at once.
//!
//! The fencing token is the lock node's creation zxid rather than its sequence number:
//! sequences restart when the emptied `locks` directory is removed (as Vitess's unlock does)
//! and made again, zxids only grow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use topo_core::{path, Fence, LockDescriptor, LockGuard, Result, TopoError};
use zookeeper_client::CreateMode;

use crate::ZkConn;

/// How long a waiter waits for its predecessor's deletion event before looking again
/// (a safety net: the event normally comes first).
const RECHECK: Duration = Duration::from_secs(5);

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

/// One entry of a queue (a lock node or an election proposal). Dropping it deletes the
/// node in the background.
#[derive(Debug)]
pub(crate) struct QueueEntry {
    conn: ZkConn,
    queue: String,
    /// The entry's znode.
    pub(crate) node: String,
    token: u64,
    /// Set once the session that owns the node has ended (the node is gone with it).
    pub(crate) lost: Arc<AtomicBool>,
    stop: CancellationToken,
    released: bool,
}

impl QueueEntry {
    /// Creates an ephemeral sequential node under `queue` holding `contents`.
    pub(crate) async fn enqueue(conn: &ZkConn, queue: &str, contents: &[u8]) -> Result<Self> {
        let (fencing, node) = create_node(conn, queue, contents).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        // The entry is gone for good when its session ends.
        let client = conn.client().await?;
        let (flag, token) = (lost.clone(), stop.clone());
        tokio::spawn(async move {
            let mut states = client.state_watcher();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    state = states.changed() => if state.is_terminated() {
                        tracing::warn!(?state, "ZooKeeper session ended: its locks and proposals are gone");
                        flag.store(true, Ordering::Relaxed);
                        return;
                    },
                }
            }
        });
        Ok(QueueEntry {
            conn: conn.clone(),
            queue: queue.to_string(),
            node,
            token: fencing,
            lost,
            stop,
            released: false,
        })
    }

    fn name(&self) -> &str {
        path::base(&self.node)
    }

    /// The queue's entries, in order.
    pub(crate) async fn queue(conn: &ZkConn, queue: &str) -> Result<Vec<String>> {
        let mut children = match conn
            .call(queue, |c| async move { c.list_children(queue).await })
            .await
        {
            Ok(c) => c,
            Err(e) if e.is_no_node() => Vec::new(),
            Err(e) => return Err(e),
        };
        children.sort();
        Ok(children)
    }

    /// Waits until this entry is the queue's first, watching only its predecessor.
    pub(crate) async fn wait_first(&self, what: &str) -> Result<()> {
        loop {
            if self.lost.load(Ordering::Relaxed) {
                return Err(TopoError::LockLost(what.to_string()));
            }
            let children = Self::queue(&self.conn, &self.queue).await?;
            let Some(pos) = children.iter().position(|c| c == self.name()) else {
                return Err(TopoError::LockLost(what.to_string()));
            };
            if pos == 0 {
                return Ok(());
            }
            let pred = format!("{}/{}", self.queue, children[pos - 1]);
            let p = pred.as_str();
            let (stat, watcher) = self
                .conn
                .call(p, |c| async move { c.check_and_watch_stat(p).await })
                .await?;
            if stat.is_some() {
                // Deleted, or the session's state changed (then the loop looks again).
                let _ = tokio::time::timeout(RECHECK, watcher.changed()).await;
            }
        }
    }

    /// Whether the node still exists.
    pub(crate) async fn exists(&self) -> Result<bool> {
        let n = self.node.as_str();
        Ok(self
            .conn
            .call(n, |c| async move { c.check_stat(n).await })
            .await?
            .is_some())
    }

    /// Deletes the node; true when it still existed.
    pub(crate) async fn remove(&mut self) -> Result<bool> {
        self.released = true;
        self.stop.cancel();
        self.conn.forget(&self.node);
        // Once only: after a retry, NoNode could not tell "we deleted it" from "it was gone".
        let n = self.node.as_str();
        match self
            .conn
            .call_once(n, |c| async move { c.delete(n, None).await })
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_no_node() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for QueueEntry {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.stop.cancel();
        self.conn.forget(&self.node);
        let (conn, node) = (self.conn.clone(), self.node.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move { delete_quietly(&conn, &node).await });
        }
    }
}

/// Deletes a queue node nobody uses any more, logging (not returning) failures.
async fn delete_quietly(conn: &ZkConn, node: &str) {
    // Retried when the connection drops: NoNode then just means it is gone.
    match conn
        .call(node, |c| async move { c.delete(node, None).await })
        .await
    {
        Err(e) if !e.is_no_node() => {
            tracing::warn!(%node, "removing an unused lock or proposal node: {e}")
        }
        _ => {}
    }
}

impl ZkConn {
    /// Whether a live entry of this connection owns queue node `node`.
    fn owns(&self, node: &str) -> bool {
        self.session()
            .queue_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(node)
    }

    /// Records that no live entry owns `node` any more.
    fn forget(&self, node: &str) {
        self.session()
            .queue_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
    }
}

/// Creates an entry's node in a task of its own, returning its fencing token (creation
/// zxid) and path. When the caller stops waiting (a lock call dropped by its timeout) the
/// task still learns the outcome and deletes the node, which would otherwise block the
/// queue for as long as the session lives.
async fn create_node(conn: &ZkConn, queue: &str, contents: &[u8]) -> Result<(u64, String)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (c, q, data) = (conn.clone(), queue.to_string(), contents.to_vec());
    tokio::spawn(async move {
        let created = create_registered(&c, &q, &data).await;
        if let Err(Ok((_, node))) = tx.send(created) {
            c.forget(&node);
            delete_quietly(&c, &node).await;
        }
    });
    rx.await
        .unwrap_or_else(|_| Err(TopoError::Interrupted(queue.to_string())))
}

/// Creates the node and records it as owned, one creation at a time per session. When the
/// answer is lost (connection loss, timeout) the node may exist all the same: it is looked
/// for and deleted, since the session that owns it lives on.
async fn create_registered(conn: &ZkConn, queue: &str, contents: &[u8]) -> Result<(u64, String)> {
    let _one_at_a_time = conn.session().creating.lock().await;
    let prefix = format!("{queue}/");
    let opts = CreateMode::EphemeralSequential.with_acls(conn.acls(true));
    let mut attempts = 0;
    loop {
        conn.mkdirs(queue).await?;
        let (p, o) = (prefix.as_str(), &opts);
        // Once only: a retried sequential create would queue a second node.
        match conn
            .call_once(queue, |c| async move { c.create(p, contents, o).await })
            .await
        {
            Ok((stat, seq)) => {
                let node = format!("{prefix}{:010}", seq.into_i64());
                conn.session()
                    .queue_nodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(node.clone());
                return Ok((u64::try_from(stat.czxid).unwrap_or(0), node));
            }
            // Someone removed the emptied queue directory between our two calls.
            Err(e) if e.is_no_node() && attempts < 3 => attempts += 1,
            Err(e) => {
                if e.is_retryable() {
                    if let Err(hunt) = remove_orphans(conn, queue, contents).await {
                        tracing::warn!(%queue, "looking for a lock node whose creation answer was lost: {hunt}");
                    }
                }
                return Err(e);
            }
        }
    }
}

/// Deletes the nodes under `queue` that this session owns, hold `contents`, and no live
/// entry knows.
async fn remove_orphans(conn: &ZkConn, queue: &str, contents: &[u8]) -> Result<()> {
    let me = conn.client().await?.session_id().0;
    for child in QueueEntry::queue(conn, queue).await? {
        let node = format!("{queue}/{child}");
        if conn.owns(&node) {
            continue;
        }
        let n = node.as_str();
        let (data, stat) = match conn.call(n, |c| async move { c.get_data(n).await }).await {
            Ok(v) => v,
            Err(e) if e.is_no_node() => continue,
            Err(e) => return Err(e),
        };
        if stat.ephemeral_owner == me && data == contents {
            tracing::warn!(%node, "deleting a lock node whose creation answer was lost");
            delete_quietly(conn, n).await;
        }
    }
    Ok(())
}

/// Takes the lock on `dir` (relative).
pub(crate) async fn lock(
    conn: &ZkConn,
    dir: &str,
    contents: &str,
    kind: Kind,
) -> Result<LockGuard> {
    let dir_key = conn.key(dir)?;
    let rel_dir = path::normalize(dir)?;
    let locks = format!("{}/locks", dir_key.trim_end_matches('/'));
    // Unlike Vitess (which creates the path), a directory with nothing in it is NoNode, as
    // on every other backend: a lock on a missing keyspace is a mistake to report.
    if kind != Kind::Named {
        let d = dir_key.as_str();
        let children = conn
            .call(d, |c| async move { c.list_children(d).await })
            .await?;
        if children.is_empty() {
            return Err(TopoError::NoNode(dir_key));
        }
    }
    if kind == Kind::Try && !QueueEntry::queue(conn, &locks).await?.is_empty() {
        return Err(TopoError::NodeExists(format!(
            "lock already exists at path {rel_dir}"
        )));
    }
    let entry = QueueEntry::enqueue(conn, &locks, contents.as_bytes()).await?;
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
        if self.entry.lost.load(Ordering::Relaxed) || !self.entry.exists().await? {
            return Err(TopoError::LockLost(self.dir.clone()));
        }
        Ok(())
    }
    async fn unlock(mut self: Box<Self>) -> Result<()> {
        let existed = self.entry.remove().await?;
        // The emptied `locks` directory goes too (as Vitess removes it), and directories it
        // leaves empty; a waiter that queued meanwhile keeps them.
        self.entry.conn.remove_empty_parents(&self.entry.node).await;
        if existed {
            Ok(())
        } else {
            Err(TopoError::LockLost(self.dir.clone()))
        }
    }
}
