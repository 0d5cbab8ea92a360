//! Elections as Vitess's etcd2topo runs them: each participant holds a lock key under
//! `elections/<name>/locks/` whose value is its id; the key with the lowest revision leads.

use async_trait::async_trait;
use etcd_client::{GetOptions, SortOrder, SortTarget};
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use topo_core::election::leader_stream;
use topo_core::{Conn, LeaderParticipation, LockDescriptor, Result, TopoError, WatchStream};

use crate::lock::{acquire_lock, EtcdLock, Kind};
use crate::EtcdConn;

/// An election participant.
#[derive(Debug)]
pub(crate) struct EtcdElection {
    conn: EtcdConn,
    dir: String,
    id: String,
    stop: CancellationToken,
    held: Mutex<Option<(EtcdLock, CancellationToken)>>,
}

impl EtcdElection {
    pub(crate) fn new(conn: EtcdConn, name: &str, id: &str) -> Self {
        EtcdElection {
            conn,
            dir: format!("elections/{name}"),
            id: id.to_string(),
            stop: CancellationToken::new(),
            held: Mutex::new(None),
        }
    }
}

/// The id of the participant with the lowest revision, or `""`.
async fn leader_id(conn: &EtcdConn, dir: &str) -> Result<String> {
    let prefix = topo_core::path::dir_prefix(&conn.root, dir)?;
    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let resp = conn
        .call(&prefix, |mut c| {
            let (prefix, opts) = (prefix.clone(), opts.clone());
            async move { c.get(prefix, Some(opts)).await }
        })
        .await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        .unwrap_or_default())
}

#[async_trait]
impl LeaderParticipation for EtcdElection {
    async fn wait_for_leadership(&self) -> Result<CancellationToken> {
        let mut held = self.held.lock().await;
        if self.stop.is_cancelled() {
            return Err(TopoError::Interrupted(self.dir.clone()));
        }
        if let Some((_, token)) = held.as_ref() {
            return Ok(token.clone());
        }
        let lock = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(TopoError::Interrupted(self.dir.clone())),
            lock = acquire_lock(&self.conn, &self.dir, &self.id, self.conn.options.lease_ttl, Kind::Named) => lock?,
        };
        let lost = self.stop.child_token();
        // Leadership ends when our key goes (someone deleting it, the lease expiring on the
        // server) or when our keep-alive gives the lease up.
        let (key, token, lease_lost) = (lock.key().to_string(), lost.clone(), lock.lost_token());
        let rel = topo_core::path::strip_root(&self.conn.root, &key).unwrap_or_default();
        // Without the watch, leadership could not be followed: fail, and drop the lock (its
        // key is revoked in the background) so that another participant can lead.
        let (_, mut changes) = self.conn.watch(&rel).await?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = lease_lost.cancelled() => break,
                    item = changes.next() => if !matches!(item, Some(Ok(_))) {
                        break;
                    },
                }
            }
            token.cancel();
        });
        *held = Some((lock, lost.clone()));
        Ok(lost)
    }

    async fn stop(&self) {
        self.stop.cancel();
        if let Some((lock, token)) = self.held.lock().await.take() {
            if let Err(e) = Box::new(lock).unlock().await {
                tracing::warn!(dir = %self.dir, "releasing leadership: {e}");
            }
            token.cancel();
        }
    }

    async fn current_leader_id(&self) -> Result<String> {
        leader_id(&self.conn, &self.dir).await
    }

    async fn wait_for_new_leader(&self) -> Result<WatchStream<String>> {
        let (_, changes) = self.conn.watch_recursive(&self.dir).await?;
        let first = leader_id(&self.conn, &self.dir).await?;
        let (conn, dir) = (self.conn.clone(), self.dir.clone());
        Ok(leader_stream(
            &self.dir,
            first,
            changes.map(|c| c.map(|_| ())),
            move || {
                let (conn, dir) = (conn.clone(), dir.clone());
                async move { leader_id(&conn, &dir).await }
            },
        ))
    }
}
