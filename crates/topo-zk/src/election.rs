//! Elections (Vitess's `election.go`): proposals are ephemeral sequential znodes
//! `elections/<name>/<seq>` holding the participant's id; the lowest leads, and the leader
//! watches its own proposal. `wait_for_new_leader`, which Vitess's zk backend lacks, follows
//! the proposals with child watches.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use topo_core::election::leader_stream;
use topo_core::{LeaderParticipation, Result, TopoError, WatchStream};
use zookeeper_client::{EventType, WatchedEvent};

use crate::lock::QueueEntry;
use crate::ZkConn;

/// The pause before looking again after a failed call (the session may be reconnecting).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

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
    /// A participant with `id` whose proposals go under `dir` (absolute).
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
    for first in QueueEntry::queue(conn, dir).await? {
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

/// Waits for the next change of the proposals under `dir` (or for `dir` to appear).
async fn next_change(conn: &ZkConn, dir: &str) -> Result<()> {
    let event = match conn
        .call(dir, |c| async move { c.get_and_watch_children(dir).await })
        .await
    {
        Ok((_, _, watcher)) => watcher.changed().await,
        Err(e) if e.is_no_node() => {
            let (stat, watcher) = conn
                .call(dir, |c| async move { c.check_and_watch_stat(dir).await })
                .await?;
            if stat.is_some() {
                // Made between the two calls: look at it now.
                return Ok(());
            }
            watcher.changed().await
        }
        Err(e) => return Err(e),
    };
    session_end(&event, dir).map_or(Ok(()), Err)
}

/// Cancels `leading` once the leader's `node` is gone: deleted, or its session ended
/// (`gone`). Connection trouble inside the session does not end leadership.
async fn watch_leadership(
    conn: ZkConn,
    node: String,
    gone: std::sync::Arc<std::sync::atomic::AtomicBool>,
    leading: CancellationToken,
) {
    let n = node.as_str();
    while !gone.load(Ordering::Relaxed) {
        match conn
            .call(n, |c| async move { c.check_and_watch_stat(n).await })
            .await
        {
            Ok((Some(_), watcher)) => {
                tokio::select! {
                    _ = leading.cancelled() => return,
                    ev = watcher.changed() => if ev.event_type == EventType::NodeDeleted
                        || ev.session_state.is_terminated()
                    {
                        break;
                    },
                }
            }
            Ok((None, _)) => break,
            Err(_) => {
                tokio::select! {
                    _ = leading.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
    tracing::info!(%node, "leadership lost: the proposal is gone");
    leading.cancel();
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
        // Proposal directories stay after their proposals go.
        let entry = QueueEntry::enqueue(&self.conn, &self.dir, self.id.as_bytes(), true).await?;
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(TopoError::Interrupted(self.dir.clone())),
            r = entry.wait_first(&self.dir) => r?,
        }
        let leading = self.stop.child_token();
        tokio::spawn(watch_leadership(
            self.conn.clone(),
            entry.node.clone(),
            entry.lost.clone(),
            leading.clone(),
        ));
        *held = Some((entry, leading.clone()));
        Ok(leading)
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
        let changes =
            futures::stream::unfold((conn.clone(), dir.clone()), |(conn, dir)| async move {
                let r = next_change(&conn, &dir).await;
                Some((r, (conn, dir)))
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
