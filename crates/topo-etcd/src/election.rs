//! Elections as Vitess's etcd2topo runs them, as etcd's [`Campaign`] under the shared
//! election state machine: each participant holds a lock key under
//! `elections/<name>/locks/` whose value is its id; the key with the lowest create
//! revision leads.

use async_trait::async_trait;
use etcd_client::{GetOptions, SortOrder, SortTarget};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use topo_core::election::{watched_leader_stream, Campaign, Election, Leadership, LockLeadership};
use topo_core::lock::LockKind;
use topo_core::{Conn, Result, WatchStream};

use crate::lock::acquire_lock;
use crate::EtcdConn;

/// A participant with `id` in election `name` (already checked).
pub(crate) fn participant(conn: EtcdConn, name: &str, id: &str) -> Election<EtcdCampaign> {
    let dir = format!("elections/{name}");
    let campaign = EtcdCampaign {
        conn,
        dir: dir.clone(),
        id: id.to_string(),
    };
    Election::new(campaign, dir)
}

/// etcd's side of an election.
#[derive(Debug)]
pub(crate) struct EtcdCampaign {
    conn: EtcdConn,
    dir: String,
    id: String,
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
impl Campaign for EtcdCampaign {
    async fn campaign(&self) -> Result<Box<dyn Leadership>> {
        // The key carries the lease TTL (not a named lock's day): a dead leader is
        // replaced within the TTL.
        let ttl = self.conn.options.lease_ttl;
        let lock = acquire_lock(&self.conn, &self.dir, &self.id, ttl, LockKind::Named).await?;
        // Leadership ends when our key goes (someone deleting it, the lease expiring on the
        // server) or when our keep-alive gives the lease up.
        let rel = topo_core::path::strip_root(&self.conn.root, lock.key()).unwrap_or_default();
        // Without the watch, leadership could not be followed: fail, and drop the lock (its
        // key is revoked in the background) so that another participant can lead.
        let (_, mut changes) = self.conn.watch(&rel).await?;
        let lost = CancellationToken::new();
        let (token, lease_lost) = (lost.clone(), lock.lost_token());
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
        Ok(Box::new(LockLeadership::new(Box::new(lock), lost)))
    }

    async fn leader_id(&self) -> Result<String> {
        leader_id(&self.conn, &self.dir).await
    }

    async fn leader_changes(&self) -> Result<WatchStream<String>> {
        let (conn, dir) = (self.conn.clone(), self.dir.clone());
        watched_leader_stream(&self.conn, &self.dir, move || {
            let (conn, dir) = (conn.clone(), dir.clone());
            async move { leader_id(&conn, &dir).await }
        })
        .await
    }
}
