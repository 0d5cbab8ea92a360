//! Leader election: one state machine ([`Election`]) over a small backend trait
//! ([`Campaign`]: enter and wait to lead, read the leader, follow the leader), and the
//! campaign of backends whose lock entries are named by their queue sequence (memory,
//! local: [`SequenceCampaign`]).
//!
//! The state machine gives every backend the same behaviour: one leadership at a time per
//! participant, `stop` interrupts a waiting campaign and releases a held leadership, and
//! the token handed to the leader is cancelled when the backend reports the loss or on
//! `stop`.
//!
//! A sequence campaign takes the named lock `elections/<name>` with its id as the lock
//! contents; the holder leads. The leader is the lowest-numbered entry under
//! `elections/<name>/locks/`. Leadership ends when the entry goes away (checked on every
//! change seen by a recursive watch, and periodically).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::conn::{Conn, LeaderParticipation};
use crate::error::{Result, TopoError};
use crate::ext::ConnExt;
use crate::lock::{self, LockOptions};
use crate::types::Fence;
use crate::watch::WatchStream;

/// How often a sequence leader re-checks its entry when no change arrives.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// One backend's side of an election.
#[async_trait]
pub trait Campaign: Send + Sync + fmt::Debug + 'static {
    /// Enters the election and waits until this participant leads. Dropping the future
    /// withdraws the candidacy.
    async fn campaign(&self) -> Result<Box<dyn Leadership>>;

    /// The id of the current leader, or `""` when there is none.
    async fn leader_id(&self) -> Result<String>;

    /// The current leader's id (when there is one), then each new leader's.
    async fn leader_changes(&self) -> Result<WatchStream<String>>;
}

/// A leadership won by a [`Campaign`].
#[async_trait]
pub trait Leadership: Send + Sync + fmt::Debug {
    /// Cancelled by the backend once the leadership is lost (its entry deleted, its lease
    /// or session gone).
    fn lost(&self) -> CancellationToken;

    /// The fence of the leadership's entry, for fenced writes.
    fn fence(&self) -> Fence;

    /// Gives the leadership up and removes its entry.
    async fn resign(self: Box<Self>) -> Result<()>;
}

/// An election participant: the state machine over a backend's [`Campaign`].
pub struct Election<C> {
    campaign: C,
    dir: String,
    stop: CancellationToken,
    held: Mutex<Option<(Box<dyn Leadership>, CancellationToken)>>,
    /// The held leadership's fence, apart from `held` (which a waiting campaign keeps
    /// locked), so `fence()` answers at once.
    fence: std::sync::Mutex<Option<Fence>>,
}

impl<C: Campaign> fmt::Debug for Election<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("dir", &self.dir)
            .field("campaign", &self.campaign)
            .finish()
    }
}

impl<C: Campaign> Election<C> {
    /// A participant campaigning with `campaign` for the election whose directory is
    /// `dir` (named in errors).
    pub fn new(campaign: C, dir: impl Into<String>) -> Self {
        Election {
            campaign,
            dir: dir.into(),
            stop: CancellationToken::new(),
            held: Mutex::new(None),
            fence: std::sync::Mutex::new(None),
        }
    }
}

impl<C> Election<C> {
    fn fence_slot(&self) -> std::sync::MutexGuard<'_, Option<Fence>> {
        self.fence.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl<C: Campaign> LeaderParticipation for Election<C> {
    async fn wait_for_leadership(&self) -> Result<CancellationToken> {
        let mut held = self.held.lock().await;
        if self.stop.is_cancelled() {
            return Err(TopoError::Interrupted(self.dir.clone()));
        }
        if let Some((_, leading)) = held.as_ref() {
            return Ok(leading.clone());
        }
        let won = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(TopoError::Interrupted(self.dir.clone())),
            won = self.campaign.campaign() => won?,
        };
        let leading = self.stop.child_token();
        let (lost, token, dir) = (won.lost(), leading.clone(), self.dir.clone());
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = token.cancelled() => {}
                _ = lost.cancelled() => {
                    tracing::info!(%dir, "leadership lost");
                    token.cancel();
                }
            }
        });
        *self.fence_slot() = Some(won.fence());
        *held = Some((won, leading.clone()));
        Ok(leading)
    }

    async fn fence(&self) -> Option<Fence> {
        self.fence_slot().clone()
    }

    async fn stop(&self) {
        self.stop.cancel();
        if let Some((won, leading)) = self.held.lock().await.take() {
            *self.fence_slot() = None;
            // The leader stops acting before its entry goes and another can lead.
            leading.cancel();
            if let Err(e) = won.resign().await {
                tracing::warn!(dir = %self.dir, "releasing leadership: {e}");
            }
        }
    }

    async fn current_leader_id(&self) -> Result<String> {
        self.campaign.leader_id().await
    }

    async fn wait_for_new_leader(&self) -> Result<WatchStream<String>> {
        self.campaign.leader_changes().await
    }
}

/// The campaign of a backend whose lock entries are named by sequence (memory, local):
/// the named lock `elections/<name>` held with the participant's id.
pub struct SequenceCampaign {
    conn: Arc<dyn Conn>,
    dir: String,
    id: String,
    ttl: Option<Duration>,
}

impl fmt::Debug for SequenceCampaign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequenceCampaign")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .finish()
    }
}

impl SequenceCampaign {
    /// A participant with `id` in election `name` on `conn`, whose entry has the lock
    /// TTL `ttl` (`None`: the named-lock default).
    ///
    /// # Errors
    /// `InvalidArgument` when `name` is not a single path element.
    pub fn participant(
        conn: Arc<dyn Conn>,
        name: &str,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<Election<Self>> {
        lock::check_election_name(name)?;
        let dir = format!("elections/{name}");
        let campaign = SequenceCampaign {
            conn,
            dir: dir.clone(),
            id: id.to_string(),
            ttl,
        };
        Ok(Election::new(campaign, dir))
    }
}

/// A leadership held as a lock (sequence and etcd campaigns): the lock, and the loss token
/// that the campaign's watching task cancels once the lock's entry is gone.
#[derive(Debug)]
pub struct LockLeadership {
    guard: crate::LockGuard,
    lost: CancellationToken,
}

impl LockLeadership {
    /// The leadership of `guard`, lost once `lost` is cancelled; resigning cancels `lost`
    /// (ending the watching task) and releases the lock.
    pub fn new(guard: crate::LockGuard, lost: CancellationToken) -> Self {
        LockLeadership { guard, lost }
    }
}

#[async_trait]
impl Leadership for LockLeadership {
    fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    fn fence(&self) -> Fence {
        self.guard.fence()
    }

    async fn resign(self: Box<Self>) -> Result<()> {
        // The watching task ends with the token; the lock goes with the guard.
        self.lost.cancel();
        self.guard.unlock().await
    }
}

#[async_trait]
impl Campaign for SequenceCampaign {
    async fn campaign(&self) -> Result<Box<dyn Leadership>> {
        let mut opts = LockOptions::named();
        if let Some(ttl) = self.ttl {
            opts = opts.with_ttl(ttl);
        }
        let guard = self.conn.lock_with(&self.dir, &self.id, opts).await?;
        // Watch the election so a lost entry ends leadership promptly.
        let (_, mut changes) = self.conn.watch_recursive(&self.dir).await?;
        let lost = CancellationToken::new();
        let (conn, fence, token) = (self.conn.clone(), guard.fence(), lost.clone());
        let entry = format!(
            "{}/{}",
            lock::locks_dir(fence.dir().trim_start_matches('/')),
            fence.token()
        );
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
                if conn.get_opt(&entry).await.is_ok_and(|e| e.is_none()) {
                    token.cancel();
                    return;
                }
            }
        });
        Ok(Box::new(LockLeadership::new(guard, lost)))
    }

    async fn leader_id(&self) -> Result<String> {
        leader_id(self.conn.as_ref(), &self.dir).await
    }

    async fn leader_changes(&self) -> Result<WatchStream<String>> {
        let (conn, dir) = (self.conn.clone(), self.dir.clone());
        watched_leader_stream(self.conn.as_ref(), &self.dir, move || {
            let (conn, dir) = (conn.clone(), dir.clone());
            async move { leader_id(conn.as_ref(), &dir).await }
        })
        .await
    }
}

/// [`leader_stream`] for an election whose entries live under `dir` on `conn`: a recursive
/// watch of `dir`, armed before the first read of `leader()`, tells when to read again.
///
/// # Errors
/// When the watch cannot be set or the first read fails.
pub async fn watched_leader_stream<L, LF>(
    conn: &dyn Conn,
    dir: &str,
    mut leader: L,
) -> Result<WatchStream<String>>
where
    L: FnMut() -> LF + Send + 'static,
    LF: std::future::Future<Output = Result<String>> + Send,
{
    let (_, changes) = conn.watch_recursive(dir).await?;
    let first = leader().await?;
    Ok(leader_stream(
        dir,
        first,
        changes.map(|c| c.map(|_| ())),
        leader,
    ))
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
    let locks = lock::locks_dir(dir);
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
