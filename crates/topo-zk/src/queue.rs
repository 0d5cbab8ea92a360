//! The queues under locks and elections (Vitess's `lock.go` and `election.go` share them):
//! ephemeral sequential znodes holding the entry's contents, the lowest first, each waiter
//! watching only its immediate predecessor. An entry lives as long as the session: when the
//! session expires the entry is gone and [`QueueEntry::lost`] says so at once. An entry is
//! given up as well once the connection has been down for [`SUSPENSION_LIMIT`] of the
//! session timeout (the server may expire the session well before this client learns of
//! it), and so is a node of the same name that is not the one we created (another creation
//! zxid).
//!
//! The fencing token is the node's creation zxid rather than its sequence number:
//! sequences restart when the emptied queue directory is removed (as Vitess's unlock does)
//! and made again, zxids only grow.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use topo_core::backoff::Backoff;
use topo_core::{path, ErrorKind, Result, TopoError};
use zookeeper_client::{
    CreateMode, CreateOptions, MultiWriteResult, SessionState, Stat, StateWatcher,
};

use crate::error::convert;
use crate::ZkConn;

/// How long a waiter waits for its predecessor's deletion event before looking again
/// (a safety net: the event normally comes first).
const RECHECK: Duration = Duration::from_secs(5);

/// The share of the negotiated session timeout a connection may stay down before its
/// locks and leadership count as lost. The server expires a silent session after the
/// timeout, counted from the last request it got; the client notices silence only after
/// 2/5 of the timeout (and declares the session expired itself only at 7/5), so a third
/// from the disconnection still ends before the server can give the lock to another.
const SUSPENSION_LIMIT: (u32, u32) = (1, 3);

/// One entry of a queue (a lock node or an election proposal). Dropping it deletes the
/// node in the background.
#[derive(Debug)]
pub(crate) struct QueueEntry {
    conn: ZkConn,
    queue: String,
    /// The entry's znode.
    pub(crate) node: String,
    /// The node's creation zxid (the fencing token).
    pub(crate) token: u64,
    /// Cancelled once the entry is lost: its session ended (the node went with it), or the
    /// connection stayed down past the suspension limit (the node is then deleted).
    pub(crate) lost: CancellationToken,
    stop: CancellationToken,
    released: bool,
    /// Created together with its queue directory: the only entry, so the first.
    alone: bool,
}

impl QueueEntry {
    /// Creates an ephemeral sequential node under `queue` holding `contents`;
    /// `queue_exists` is the caller's guess, which saves a round trip when right.
    pub(crate) async fn enqueue(
        conn: &ZkConn,
        queue: &str,
        contents: &[u8],
        queue_exists: bool,
    ) -> Result<Self> {
        // The task follows the session through a state watcher, not a client, which would
        // keep a closed connection's session alive; it ends when the entry is released.
        // Taken before the node is made: from the node's creation to the entry that owns
        // it there is no await, so a caller that drops this future (a lock timeout) cannot
        // leave the node without an owner to delete it.
        let client = conn.client().await?;
        let (num, den) = SUSPENSION_LIMIT;
        let limit = client.session_timeout() * num / den;
        let states = client.state_watcher();
        drop(client);
        let created = create_node(conn, queue, contents, queue_exists).await?;
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let (token, node, alone) = created.claim();
        let ended = follow_session(states, limit, lost.clone(), stop.clone());
        let c = conn.clone();
        let watched = node.clone();
        tokio::spawn(async move {
            if ended.await == Ended::Suspended {
                // Nobody may rely on this entry any more: out of the queue with it, or it
                // would block the others once the connection is back.
                c.forget(&watched);
                c.clean_up(&watched);
            }
        });
        Ok(QueueEntry {
            conn: conn.clone(),
            queue: queue.to_string(),
            node,
            token,
            lost,
            stop,
            released: false,
            alone,
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

    /// Whether this entry is the queue's first now (`None`: it is not in the queue), and
    /// its predecessor otherwise.
    async fn place(&self) -> Result<Option<Option<String>>> {
        if self.alone {
            return Ok(Some(None));
        }
        let children = Self::queue(&self.conn, &self.queue).await?;
        Ok(children
            .iter()
            .position(|c| c == self.name())
            .map(|pos| pos.checked_sub(1).map(|p| children[p].clone())))
    }

    /// Whether this entry is the queue's first, without waiting.
    pub(crate) async fn is_first(&self, what: &str) -> Result<bool> {
        match self.place().await? {
            Some(pred) => Ok(pred.is_none()),
            None => Err(TopoError::LockLost(what.to_string())),
        }
    }

    /// Waits until this entry is the queue's first, watching only its predecessor. A wait
    /// ended by `close()` (which ends the session, and so loses the entry) is
    /// `Interrupted`, as on every backend; any other loss of the entry is `LockLost`.
    pub(crate) async fn wait_first(&self, what: &str) -> Result<()> {
        let lost = || {
            self.conn.check_open(what)?;
            Err(TopoError::LockLost(what.to_string()))
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            if self.lost.is_cancelled() {
                return lost();
            }
            // A look that fails while the connection is down is no verdict: the entry
            // either lives on (then look again) or is lost (then say so, not "timeout").
            let looked = match self.place().await {
                Ok(Some(Some(pred))) => {
                    let pred = format!("{}/{pred}", self.queue);
                    let p = pred.as_str();
                    self.conn
                        .call(p, |c| async move { c.check_and_watch_stat(p).await })
                        .await
                }
                Ok(Some(None)) => return Ok(()),
                Ok(None) => return lost(),
                Err(e) => Err(e),
            };
            let (stat, watcher) = match looked {
                Ok(v) => v,
                Err(e) if e.is_retryable() => {
                    tracing::debug!(lock = %what, "looking at the lock queue: {e}");
                    tokio::select! {
                        _ = self.lost.cancelled() => {}
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            backoff.reset();
            if stat.is_some() {
                // Deleted, the session's state changed, or this entry lost (then the loop
                // looks again).
                tokio::select! {
                    _ = self.lost.cancelled() => {}
                    _ = tokio::time::timeout(RECHECK, watcher.changed()) => {}
                }
            }
        }
    }

    /// Whether the node still exists and is the one we created (a node of the same name
    /// made after the queue directory was removed and made again has another creation
    /// zxid).
    pub(crate) async fn exists(&self) -> Result<bool> {
        let n = self.node.as_str();
        Ok(self
            .conn
            .call(n, |c| async move { c.check_stat(n).await })
            .await?
            .is_some_and(|s| u64::try_from(s.czxid).ok() == Some(self.token)))
    }

    /// Marks the entry as going: no more session tracking, no deletion on drop.
    fn release(&mut self) {
        self.released = true;
        self.stop.cancel();
        self.conn.forget(&self.node);
    }

    /// After a failed deletion whose outcome is unknown (a timeout, a lost connection),
    /// keeps trying in the background: the session lives on, and so would the node.
    fn retry_in_background(&self, e: TopoError) -> TopoError {
        if e.is_retryable() || e.is(ErrorKind::OutcomeUnknown) {
            self.conn.clean_up(&self.node);
        }
        e
    }

    /// Deletes the node; true when it still existed (as ours).
    pub(crate) async fn remove(&mut self) -> Result<bool> {
        if !self.ours_to_remove().await? {
            return Ok(false);
        }
        self.remove_node().await
    }

    /// Releases the entry; true when its node is still there to delete, false when it is
    /// gone or another's (then it is left alone).
    async fn ours_to_remove(&mut self) -> Result<bool> {
        let lost = self.lost.is_cancelled();
        let exists = self.exists().await;
        self.release();
        if lost {
            // Gone with the session, or being deleted after the suspension.
            return Ok(false);
        }
        exists.map_err(|e| self.retry_in_background(e))
    }

    /// Deletes the node of a released entry; true when it still existed.
    async fn remove_node(&mut self) -> Result<bool> {
        // Once only: after a retry, NoNode could not tell "we deleted it" from "it was gone".
        let n = self.node.as_str();
        match self
            .conn
            .call_once(n, |c| async move { c.delete(n, None).await })
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_no_node() => Ok(false),
            Err(e) => Err(self.retry_in_background(e)),
        }
    }

    /// Deletes the node and, when it was the last, the queue directory and the directories
    /// that leaves empty (as Vitess's unlock does); true when the node still existed. The
    /// node and the queue go in one multi-op when nobody else queues.
    pub(crate) async fn remove_with_queue(&mut self) -> Result<bool> {
        if !self.ours_to_remove().await? {
            return Ok(false);
        }
        let client = self.conn.client().await?;
        let mut w = client.new_multi_writer();
        w.add_delete(&self.node, None)
            .and_then(|()| w.add_delete(&self.queue, None))
            .map_err(|e| convert(e, &self.node))?;
        match self
            .conn
            .commit(&self.node, w, |index, e| match index {
                0 => convert(e, &self.node),
                // Not empty: others queue behind us.
                _ => TopoError::NodeNotEmpty(self.queue.clone()),
            })
            .await
        {
            Ok(_) => {
                // The queue is gone: go on from the directory above it.
                self.conn.remove_empty_parents(&self.queue).await;
                Ok(true)
            }
            Err(e) if e.is(ErrorKind::NodeNotEmpty) => self.remove_node().await,
            Err(e) if e.is_no_node() => {
                self.conn.remove_empty_parents(&self.node).await;
                Ok(false)
            }
            Err(e) => Err(self.retry_in_background(e)),
        }
    }
}

impl Drop for QueueEntry {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.release();
        self.conn.clean_up(&self.node);
    }
}

/// How [`follow_session`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The entry was released.
    Released,
    /// The session ended: the node is gone with it.
    Terminated,
    /// The connection stayed down past the suspension limit: the node may live on.
    Suspended,
}

/// Follows the session of an entry until it is released (`stop`), cancelling `lost` once
/// the session ends or the connection stays down for longer than `limit`.
async fn follow_session(
    mut states: StateWatcher,
    limit: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) -> Ended {
    let mut state = states.peek_state();
    loop {
        if state.is_terminated() {
            tracing::warn!(
                ?state,
                "ZooKeeper session ended: its locks and proposals are gone"
            );
            lost.cancel();
            return Ended::Terminated;
        }
        let next = async {
            if state == SessionState::Disconnected {
                tokio::time::timeout(limit, states.changed()).await.ok()
            } else {
                Some(states.changed().await)
            }
        };
        state = tokio::select! {
            _ = stop.cancelled() => return Ended::Released,
            next = next => match next {
                Some(s) => s,
                None => {
                    tracing::warn!(?limit, "ZooKeeper connection down for too long: giving up its locks and leadership before the session may expire");
                    lost.cancel();
                    return Ended::Suspended;
                }
            },
        };
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

    /// Deletes queue node `node`, which nobody uses any more, in the background; `close()`
    /// waits for it.
    fn clean_up(&self, node: &str) {
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (conn, node) = (self.clone(), node.to_string());
        self.session()
            .cleanups
            .spawn_on(async move { delete_quietly(&conn, &node).await }, &h);
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
/// task still learns the outcome, and the unclaimed [`Created`] deletes the node, which
/// would otherwise block the queue for as long as the session lives.
async fn create_node(
    conn: &ZkConn,
    queue: &str,
    contents: &[u8],
    queue_exists: bool,
) -> Result<Created> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (c, q, data) = (conn.clone(), queue.to_string(), contents.to_vec());
    // Tracked as a clean-up: `close()` waits for the outcome, and for the deletion.
    conn.session().cleanups.spawn(async move {
        // Unreceived (or received by a future dropped before it took the node over), the
        // node is deleted when its `Created` is dropped.
        let _ = tx.send(create_registered(&c, &q, &data, queue_exists).await);
    });
    rx.await
        .unwrap_or_else(|_| Err(TopoError::Interrupted(queue.to_string())))
}

/// A queue node just created. Until [`Created::claim`] hands it to an entry, dropping it
/// deletes the node in the background: whoever asked for it may be gone, and the session
/// that owns the node lives on.
#[derive(Debug)]
struct Created {
    /// The connection that deletes the node if it is dropped unclaimed.
    conn: Option<ZkConn>,
    /// The fencing token: the node's creation zxid.
    token: u64,
    node: String,
    /// Made together with its queue directory: the only entry.
    alone: bool,
}

impl Created {
    /// Takes the node over (its token, path and whether it is alone): the caller deletes it
    /// from now on.
    fn claim(mut self) -> (u64, String, bool) {
        self.conn = None;
        (self.token, std::mem::take(&mut self.node), self.alone)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.forget(&self.node);
            conn.clean_up(&self.node);
        }
    }
}

/// Creates the node and records it as owned, one creation at a time per session. When the
/// answer is lost (connection loss, timeout) the node may exist all the same: it is looked
/// for and deleted, since the session that owns it lives on.
async fn create_registered(
    conn: &ZkConn,
    queue: &str,
    contents: &[u8],
    mut queue_exists: bool,
) -> Result<Created> {
    let _one_at_a_time = conn.session().creating.lock().await;
    let prefix = format!("{queue}/");
    let opts = CreateMode::EphemeralSequential.with_acls(conn.acls(true));
    let mut attempts = 0;
    loop {
        let created = if queue_exists {
            let (p, o) = (prefix.as_str(), &opts);
            // Once only: a retried sequential create would queue a second node.
            conn.call_once(queue, |c| async move { c.create(p, contents, o).await })
                .await
                .map(|(stat, seq)| (stat, format!("{prefix}{seq}"), false))
        } else {
            create_with_queue(conn, queue, &prefix, contents, &opts).await
        };
        match created {
            Ok((stat, node, alone)) => {
                conn.session()
                    .queue_nodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(node.clone());
                return Ok(Created {
                    conn: Some(conn.clone()),
                    token: u64::try_from(stat.czxid).unwrap_or(0),
                    node,
                    alone,
                });
            }
            // The guess was wrong, or the queue directory came or went meanwhile.
            Err(e) if attempts < 4 && (e.is_no_node() || e.is(ErrorKind::NodeExists)) => {
                attempts += 1;
                match (queue_exists, e.is_no_node()) {
                    (true, true) => queue_exists = false,
                    // The queue's parent is missing too.
                    (false, true) => conn.mkdirs(&path::parent(queue)).await?,
                    (false, false) => queue_exists = true,
                    (true, false) => return Err(e),
                }
            }
            Err(e) => {
                if e.is_retryable() || e.is(ErrorKind::OutcomeUnknown) {
                    if let Err(hunt) = remove_orphans(conn, queue, contents).await {
                        tracing::warn!(%queue, "looking for a lock node whose creation answer was lost: {hunt}");
                    }
                }
                return Err(e);
            }
        }
    }
}

/// Creates the queue directory and its first node in one multi-op (one round trip, where
/// making the directory first would take two): the node, alone in a new queue, is first.
async fn create_with_queue(
    conn: &ZkConn,
    queue: &str,
    prefix: &str,
    contents: &[u8],
    opts: &CreateOptions<'_>,
) -> Result<(Stat, String, bool)> {
    let client = conn.client().await?;
    let dir = conn.dir_options();
    let mut w = client.new_multi_writer();
    w.add_create(queue, &[], &dir)
        .and_then(|()| w.add_create(prefix, contents, opts))
        .map_err(|e| convert(e, queue))?;
    let results = conn.commit(queue, w, |_, e| convert(e, queue)).await?;
    let Some(MultiWriteResult::Create { path, stat }) = results.into_iter().nth(1) else {
        return Err(TopoError::backend(
            crate::BACKEND,
            format!("{queue}: a multi-op of two creates answered otherwise"),
            zookeeper_client::Error::UnexpectedError("multi-op answer".into()),
        ));
    };
    if !stat.is_invalid() {
        return Ok((stat, path, true));
    }
    // Some servers answer a create inside a multi-op without its stat (ZOOKEEPER-4026).
    let p = path.as_str();
    match conn
        .call(p, |c| async move { c.check_stat(p).await })
        .await?
    {
        Some(stat) => Ok((stat, path, true)),
        None => Err(TopoError::LockLost(path)),
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
