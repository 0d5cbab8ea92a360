//! Elections (Vitess's `election.go`): ZooKeeper's [`Campaign`] under the shared election
//! state machine. Proposals are ephemeral sequential znodes
//! `elections/<name>/<seq>` holding the participant's id; the lowest leads, and the leader
//! watches its own proposal. Leadership ends when the proposal goes, the session ends, or
//! the connection stays down past the suspension limit (see the `queue` module).
//! `wait_for_new_leader`, which Vitess's zk backend lacks, follows the proposals with child
//! watches, each armed before the leader is read.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use topo_core::election::{leader_stream, Campaign, Election, Leadership};
use topo_core::{Fence, Result, TopoError, WatchStream};
use zookeeper_client::{EventType, OneshotWatcher, WatchedEvent};

use crate::queue::QueueEntry;
use crate::ZkConn;

/// The pause before looking again after a failed call (the session may be reconnecting).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A participant with `id` in election `name` (already checked).
pub(crate) fn participant(conn: ZkConn, name: &str, id: &str) -> Result<Election<ZkCampaign>> {
    let rel = format!("elections/{name}");
    let campaign = ZkCampaign {
        dir: conn.key(&rel)?,
        conn,
        rel: rel.clone(),
        id: id.to_string(),
    };
    Ok(Election::new(campaign, rel))
}

/// ZooKeeper's side of an election: a proposal `elections/<name>/<seq>` holding the id.
#[derive(Debug)]
pub(crate) struct ZkCampaign {
    conn: ZkConn,
    /// The proposals' directory (absolute).
    dir: String,
    /// The same, relative to the root (named in errors).
    rel: String,
    id: String,
}

/// A leading proposal, and the token its watching task cancels once it is lost.
#[derive(Debug)]
struct ZkLeadership {
    entry: QueueEntry,
    rel: String,
    lost: CancellationToken,
}

#[async_trait]
impl Leadership for ZkLeadership {
    fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    fn fence(&self) -> Fence {
        Fence::new(self.rel.clone(), self.entry.node.clone(), self.entry.token)
    }

    async fn resign(mut self: Box<Self>) -> Result<()> {
        // Ends the watching task before the proposal goes.
        self.lost.cancel();
        self.entry.remove().await.map(drop)
    }
}

/// The id in the lowest proposal under `dir`, or `""`.
async fn leader_id(conn: &ZkConn, dir: &str) -> Result<String> {
    first_id(conn, dir, QueueEntry::queue(conn, dir).await?).await
}

/// The id in the first of the proposals `children` (sorted) of `dir` still there, or `""`.
async fn first_id(conn: &ZkConn, dir: &str, children: Vec<String>) -> Result<String> {
    for first in children {
        let p = format!("{dir}/{first}");
        match conn.get_key(&p).await {
            Ok((data, _)) => return Ok(String::from_utf8_lossy(&data).into_owned()),
            // Gone between the listing and the read: the next one leads.
            Err(e) if e.is_no_node() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(String::new())
}

/// An error for a watch event that says the session ended, if it does.
fn session_end(event: &WatchedEvent, dir: &str) -> Option<TopoError> {
    event.session_state.is_terminated().then(|| {
        TopoError::Interrupted(format!(
            "{dir}: ZooKeeper session {:?}",
            event.session_state
        ))
    })
}

/// Arms a watch on the proposals under `dir` (on `dir` itself while it is missing), then
/// reads the leader's id: any change after the read fires the watch.
async fn watch_leader(conn: &ZkConn, dir: &str) -> Result<(String, OneshotWatcher)> {
    loop {
        match conn
            .call(dir, |c| async move { c.get_and_watch_children(dir).await })
            .await
        {
            Ok((mut children, _, watcher)) => {
                children.sort();
                return Ok((first_id(conn, dir, children).await?, watcher));
            }
            Err(e) if e.is_no_node() => {
                let (stat, watcher) = conn
                    .call(dir, |c| async move { c.check_and_watch_stat(dir).await })
                    .await?;
                if stat.is_none() {
                    return Ok((String::new(), watcher));
                }
                // Made between the two calls: watch its proposals instead.
            }
            Err(e) => return Err(e),
        }
    }
}

/// Cancels `leading` (the leadership's loss token) once the leader's `node` (created at zxid `token`) is gone (deleted,
/// or replaced) or the entry is `lost` (its session ended, or its connection stayed down
/// past the suspension limit). Shorter connection trouble does not end leadership.
async fn watch_leadership(
    conn: ZkConn,
    node: String,
    token: u64,
    lost: CancellationToken,
    leading: CancellationToken,
) {
    let n = node.as_str();
    let gone = async {
        loop {
            match conn
                .call(n, |c| async move { c.check_and_watch_stat(n).await })
                .await
            {
                // A node of the same name created since is not our proposal.
                Ok((Some(s), watcher)) if u64::try_from(s.czxid).ok() == Some(token) => {
                    let ev = watcher.changed().await;
                    if ev.event_type == EventType::NodeDeleted || ev.session_state.is_terminated() {
                        return;
                    }
                }
                Ok(_) => return,
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    };
    tokio::select! {
        _ = leading.cancelled() => return,
        _ = lost.cancelled() => {}
        _ = gone => {}
    }
    tracing::info!(%node, "leadership lost: the proposal is gone or its connection was down too long");
    leading.cancel();
}

#[async_trait]
impl Campaign for ZkCampaign {
    async fn campaign(&self) -> Result<Box<dyn Leadership>> {
        // Proposal directories stay after their proposals go. Dropping this future drops
        // the entry, which deletes its node.
        let entry = QueueEntry::enqueue(&self.conn, &self.dir, self.id.as_bytes(), true).await?;
        entry.wait_first(&self.dir).await?;
        let lost = CancellationToken::new();
        tokio::spawn(watch_leadership(
            self.conn.clone(),
            entry.node.clone(),
            entry.token,
            entry.lost.clone(),
            lost.clone(),
        ));
        Ok(Box::new(ZkLeadership {
            entry,
            rel: self.rel.clone(),
            lost,
        }))
    }

    async fn leader_id(&self) -> Result<String> {
        leader_id(&self.conn, &self.dir).await
    }

    async fn leader_changes(&self) -> Result<WatchStream<String>> {
        let (conn, dir) = (self.conn.clone(), self.dir.clone());
        // Every read of the leader comes after arming the watch the next change waits on,
        // so nothing between a read and the next wait goes unseen.
        let (first, watcher) = watch_leader(&conn, &dir).await?;
        let armed = Arc::new(StdMutex::new(Some(watcher)));
        let changes =
            futures::stream::unfold((armed.clone(), dir.clone()), |(armed, dir)| async move {
                let watcher = armed.lock().unwrap_or_else(|e| e.into_inner()).take();
                let r = match watcher {
                    Some(w) => session_end(&w.changed().await, &dir).map_or(Ok(()), Err),
                    // The last read failed (and ended the stream): nothing is armed.
                    None => Err(TopoError::Interrupted(dir.clone())),
                };
                Some((r, (armed, dir)))
            });
        Ok(leader_stream(
            &self.dir,
            first,
            Box::pin(changes),
            move || {
                let (conn, dir, armed) = (conn.clone(), dir.clone(), armed.clone());
                async move {
                    let (id, watcher) = watch_leader(&conn, &dir).await?;
                    *armed.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
                    Ok(id)
                }
            },
        ))
    }
}
