//! Leader election built from a connection's own primitives, for backends whose lock
//! entries are named by their queue sequence (memory, local).
//!
//! A participant campaigns by taking the named lock `elections/<name>` with its id as the
//! lock contents; the holder leads. The leader is the lowest-numbered entry under
//! `elections/<name>/locks/`. Leadership ends when the participant stops or its lock entry
//! goes away (checked on every change seen by a recursive watch, and periodically).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::conn::{Conn, LeaderParticipation, LockGuard};
use crate::error::{Result, TopoError};
use crate::watch::WatchStream;

/// How often a leader re-checks its lock when no change arrives.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// An election participant over any connection whose lock entries are named by sequence.
pub struct SequenceElection {
    conn: Arc<dyn Conn>,
    dir: String,
    id: String,
    stop: CancellationToken,
    held: Mutex<Option<(LockGuard, CancellationToken)>>,
}

impl fmt::Debug for SequenceElection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequenceElection")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .finish()
    }
}

impl SequenceElection {
    /// A participant with `id` in election `name` on `conn`.
    ///
    /// # Errors
    /// `InvalidArgument` when `name` is not a single path element.
    pub fn new(conn: Arc<dyn Conn>, name: &str, id: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(TopoError::invalid(format!(
                "invalid election name {name:?}"
            )));
        }
        Ok(SequenceElection {
            conn,
            dir: format!("elections/{name}"),
            id: id.to_string(),
            stop: CancellationToken::new(),
            held: Mutex::new(None),
        })
    }
}

/// A stream of leader ids for `wait_for_new_leader`: `first` (when not empty), then, after
/// each item of `changes` (anything that may have changed the leader), the result of
/// `leader()` whenever it differs from the last id sent. An error from either ends the
/// stream with that error; dropping the stream stops the work.
pub fn leader_stream<S, L, LF>(
    dir: &str,
    first: String,
    mut changes: S,
    mut leader: L,
) -> WatchStream<String>
where
    S: futures::Stream<Item = Result<()>> + Send + Unpin + 'static,
    L: FnMut() -> LF + Send + 'static,
    LF: std::future::Future<Output = Result<String>> + Send,
{
    // Leader ids coalesce: a reader that falls behind sees the latest leader.
    let (tx, stream) = WatchStream::coalescing::<()>(dir);
    tokio::spawn(async move {
        let mut last = String::new();
        let mut current = Ok(first);
        loop {
            match current {
                Ok(id) if !id.is_empty() && id != last => {
                    if !tx.send((), id.clone()) {
                        return;
                    }
                    last = id;
                }
                Ok(_) => {}
                Err(e) => {
                    tx.fail(e);
                    return;
                }
            }
            tokio::select! {
                item = changes.next() => match item {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        tx.fail(e);
                        return;
                    }
                    None => return,
                },
                _ = tx.closed() => return,
            }
            current = leader().await;
        }
    });
    stream
}

/// The id of the lowest-sequence entry under `dir/locks`, or `""`.
async fn leader_id(conn: &dyn Conn, dir: &str) -> Result<String> {
    let locks = format!("{dir}/locks");
    let entries = match conn.list_dir(&locks, false).await {
        Ok(e) => e,
        Err(e) if e.is_no_node() => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let Some(first) = entries
        .iter()
        .filter_map(|e| e.name.parse::<u64>().ok().map(|n| (n, &e.name)))
        .min()
    else {
        return Ok(String::new());
    };
    match conn.get(&format!("{locks}/{}", first.1)).await {
        Ok((bytes, _)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        // Released between the listing and the read: no leader at this instant.
        Err(e) if e.is_no_node() => Ok(String::new()),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl LeaderParticipation for SequenceElection {
    async fn wait_for_leadership(&self) -> Result<CancellationToken> {
        let mut held = self.held.lock().await;
        if self.stop.is_cancelled() {
            return Err(TopoError::Interrupted(self.dir.clone()));
        }
        if let Some((_, token)) = held.as_ref() {
            return Ok(token.clone());
        }
        let guard = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(TopoError::Interrupted(self.dir.clone())),
            guard = self.conn.lock_name(&self.dir, &self.id) => guard?,
        };
        let lost = self.stop.child_token();
        // Watch the election so a lost entry ends leadership promptly.
        let (_, mut changes) = self.conn.watch_recursive(&self.dir).await?;
        let conn = self.conn.clone();
        let fence = guard.fence();
        let token = lost.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    item = changes.next() => if matches!(item, None | Some(Err(_))) {
                        // The watch ended: fall back to periodic checks.
                        tokio::time::sleep(CHECK_INTERVAL).await;
                    },
                    _ = tokio::time::sleep(CHECK_INTERVAL) => {}
                }
                let key_alive = conn
                    .get(&format!(
                        "{}/locks/{}",
                        fence.dir().trim_start_matches('/'),
                        fence.token()
                    ))
                    .await
                    .is_ok();
                if !key_alive {
                    token.cancel();
                    return;
                }
            }
        });
        *held = Some((guard, lost.clone()));
        Ok(lost)
    }

    async fn stop(&self) {
        self.stop.cancel();
        if let Some((guard, token)) = self.held.lock().await.take() {
            if let Err(e) = guard.unlock().await {
                tracing::warn!(dir = %self.dir, "releasing leadership: {e}");
            }
            token.cancel();
        }
    }

    async fn current_leader_id(&self) -> Result<String> {
        leader_id(self.conn.as_ref(), &self.dir).await
    }

    async fn wait_for_new_leader(&self) -> Result<WatchStream<String>> {
        let (_, changes) = self.conn.watch_recursive(&self.dir).await?;
        let first = leader_id(self.conn.as_ref(), &self.dir).await?;
        let (conn, dir) = (self.conn.clone(), self.dir.clone());
        Ok(leader_stream(
            &self.dir,
            first,
            changes.map(|c| c.map(|_| ())),
            move || {
                let (conn, dir) = (conn.clone(), dir.clone());
                async move { leader_id(conn.as_ref(), &dir).await }
            },
        ))
    }
}
