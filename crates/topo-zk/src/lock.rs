//! Locks and elections: queues of ephemeral sequential znodes, as Vitess's zk2topo keeps
//! them. The lowest sequence leads; each waiter watches only its immediate predecessor.
//! An entry lives as long as the session: when the session expires the entry is gone and
//! the holder's `check()` says so at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use topo_core::election::leader_stream;
use topo_core::{
    path, Fence, LeaderParticipation, LockDescriptor, LockGuard, Result, TopoError, WatchStream,
};
use zookeeper_client::{CreateMode, EventType};

use crate::ZkConn;

/// How often a waiter or holder re-checks its entry when no event arrives.
const RECHECK: Duration = Duration::from_millis(500);

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
    node: String,
    token: u64,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    released: bool,
}

impl QueueEntry {
    /// Creates an ephemeral sequential node under `queue` holding `contents`.
    async fn enqueue(conn: &ZkConn, queue: &str, contents: &[u8]) -> Result<Self> {
        let prefix = format!("{queue}/");
        let opts = CreateMode::EphemeralSequential.with_acls(conn.acls(true));
        let mut created = None;
        for _ in 0..3 {
            conn.mkdirs(queue).await?;
            let (p, o) = (prefix.clone(), opts.clone());
            match conn
                .call(queue, |c| async move { c.create(&p, contents, &o).await })
                .await
            {
                // Someone removed the emptied queue directory between our two calls.
                Err(e) if e.is_no_node() => continue,
                other => {
                    created = Some(other?);
                    break;
                }
            }
        }
        let (stat, seq) = created.ok_or_else(|| TopoError::NoNode(queue.to_string()))?;
        let name_seq = seq.into_i64();
        // The fencing token is the node's creation zxid, not its sequence: sequences restart
        // when the emptied `locks` directory is removed and made again, zxids never do.
        let fencing = u64::try_from(stat.czxid).unwrap_or(0);
        let lost = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        // The entry is gone for good when the session ends.
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
            node: format!("{prefix}{name_seq:010}"),
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
    async fn queue(&self) -> Result<Vec<String>> {
        let q = self.queue.clone();
        let mut children = match self
            .conn
            .call(&q.clone(), |c| async move { c.list_children(&q).await })
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
    async fn wait_first(&self, what: &str) -> Result<()> {
        loop {
            if self.lost.load(Ordering::Relaxed) {
                return Err(TopoError::LockLost(what.to_string()));
            }
            let children = self.queue().await?;
            let Some(pos) = children.iter().position(|c| c == self.name()) else {
                return Err(TopoError::LockLost(what.to_string()));
            };
            if pos == 0 {
                return Ok(());
            }
            let pred = format!("{}/{}", self.queue, children[pos - 1]);
            let client = self.conn.client().await?;
            let p = pred.clone();
            let (stat, watcher) = match tokio::time::timeout(
                self.conn.options().remote_operation_timeout,
                client.check_and_watch_stat(&p),
            )
            .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(crate::error::convert(e, &pred)),
                Err(_) => return Err(TopoError::Timeout(pred)),
            };
            if stat.is_some() {
                let _ = tokio::time::timeout(RECHECK * 10, watcher.changed()).await;
            }
        }
    }

    async fn exists(&self) -> Result<bool> {
        let n = self.node.clone();
        Ok(self
            .conn
            .call(&n.clone(), |c| async move { c.check_stat(&n).await })
            .await?
            .is_some())
    }

    /// Deletes the node; true when it still existed.
    async fn remove(&mut self) -> Result<bool> {
        self.released = true;
        self.stop.cancel();
        let n = self.node.clone();
        match self
            .conn
            .call(&n.clone(), |c| async move { c.delete(&n, None).await })
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
        let (conn, node) = (self.conn.clone(), self.node.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Err(e) = conn
                    .call(
                        &node.clone(),
                        |c| async move { c.delete(&node, None).await },
                    )
                    .await
                {
                    if !e.is_no_node() {
                        tracing::warn!("removing a dropped lock node: {e}");
                    }
                }
            });
        }
    }
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
    if kind != Kind::Named {
        let d = dir_key.clone();
        let children = conn
            .call(&dir_key, |c| async move { c.list_children(&d).await })
            .await?;
        if children.is_empty() {
            return Err(TopoError::NoNode(dir_key));
        }
    }
    if kind == Kind::Try {
        let l = locks.clone();
        match conn
            .call(&locks, |c| async move { c.list_children(&l).await })
            .await
        {
            Ok(c) if !c.is_empty() => {
                return Err(TopoError::NodeExists(format!(
                    "lock already exists at path {rel_dir}"
                )))
            }
            Ok(_) => {}
            Err(e) if e.is_no_node() => {}
            Err(e) => return Err(e),
        }
    }
    let entry = QueueEntry::enqueue(conn, &locks, contents.as_bytes()).await?;
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

/// An election participant: a proposal `elections/<name>/<seq>` holding its id.
#[derive(Debug)]
pub(crate) struct ZkElection {
    conn: ZkConn,
    dir: String,
    id: String,
    stop: CancellationToken,
    held: Mutex<Option<(QueueEntry, CancellationToken)>>,
}

impl ZkElection {
    pub(crate) fn new(conn: ZkConn, dir: String, id: &str) -> Self {
        ZkElection {
            conn,
            dir,
            id: id.to_string(),
            stop: CancellationToken::new(),
            held: Mutex::new(None),
        }
    }
}

/// The id in the lowest proposal under `dir`, or `""`.
async fn leader_id(conn: &ZkConn, dir: &str) -> Result<String> {
    let d = dir.to_string();
    let mut children = match conn
        .call(dir, |c| async move { c.list_children(&d).await })
        .await
    {
        Ok(c) => c,
        Err(e) if e.is_no_node() => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    children.sort();
    for first in children {
        let p = format!("{dir}/{first}");
        match conn
            .call(&p.clone(), |c| async move { c.get_data(&p).await })
            .await
        {
            Ok((data, _)) => return Ok(String::from_utf8_lossy(&data).into_owned()),
            // Gone between the listing and the read: the next one leads.
            Err(e) if e.is_no_node() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(String::new())
}

#[async_trait]
impl LeaderParticipation for ZkElection {
    async fn wait_for_leadership(&self) -> Result<CancellationToken> {
        let mut held = self.held.lock().await;
        if self.stop.is_cancelled() {
            return Err(TopoError::Interrupted(self.dir.clone()));
        }
        if let Some((_, token)) = held.as_ref() {
            return Ok(token.clone());
        }
        let entry = QueueEntry::enqueue(&self.conn, &self.dir, self.id.as_bytes()).await?;
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(TopoError::Interrupted(self.dir.clone())),
            r = entry.wait_first(&self.dir) => r?,
        }
        let lost = self.stop.child_token();
        // Leadership ends when our proposal goes (session expiry, deletion).
        let (conn, node, flag, token) = (
            self.conn.clone(),
            entry.node.clone(),
            entry.lost.clone(),
            lost.clone(),
        );
        tokio::spawn(async move {
            loop {
                if flag.load(Ordering::Relaxed) {
                    token.cancel();
                    return;
                }
                let Ok(client) = conn.client().await else {
                    token.cancel();
                    return;
                };
                let watched = tokio::time::timeout(
                    conn.options().remote_operation_timeout,
                    client.check_and_watch_stat(&node),
                )
                .await;
                match watched {
                    Ok(Ok((Some(_), watcher))) => {
                        tokio::select! {
                            _ = token.cancelled() => return,
                            ev = watcher.changed() => if ev.event_type == EventType::NodeDeleted {
                                token.cancel();
                                return;
                            },
                            _ = tokio::time::sleep(RECHECK) => {}
                        }
                    }
                    Ok(Ok((None, _))) => {
                        token.cancel();
                        return;
                    }
                    _ => tokio::time::sleep(RECHECK).await,
                }
            }
        });
        *held = Some((entry, lost.clone()));
        Ok(lost)
    }

    async fn stop(&self) {
        self.stop.cancel();
        if let Some((mut entry, token)) = self.held.lock().await.take() {
            if let Err(e) = entry.remove().await {
                tracing::warn!(dir = %self.dir, "releasing leadership: {e}");
            }
            token.cancel();
        }
    }

    async fn current_leader_id(&self) -> Result<String> {
        leader_id(&self.conn, &self.dir).await
    }

    async fn wait_for_new_leader(&self) -> Result<WatchStream<String>> {
        let (conn, dir) = (self.conn.clone(), self.dir.clone());
        let first = leader_id(&conn, &dir).await?;
        // Each item: the proposals changed (a re-armed child watch fired), or the
        // directory does not exist yet and it is time to look again.
        let changes =
            futures::stream::unfold((conn.clone(), dir.clone()), |(conn, dir)| async move {
                let client = match conn.client().await {
                    Ok(c) => c,
                    Err(e) => return Some((Err(e), (conn, dir))),
                };
                match client.get_and_watch_children(&dir).await {
                    Ok((_, _, watcher)) => {
                        watcher.changed().await;
                    }
                    Err(_) => tokio::time::sleep(RECHECK).await,
                }
                Some((Ok(()), (conn, dir)))
            });
        Ok(leader_stream(
            &self.dir,
            first,
            Box::pin(changes),
            move || {
                let (conn, dir) = (conn.clone(), dir.clone());
                async move { leader_id(&conn, &dir).await }
            },
        ))
    }
}
