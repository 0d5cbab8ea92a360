//! A resilient cache of the serving graph (what vtgate keeps): one background watch per
//! SrvKeyspace and per cell's SrvVSchema, answers from memory, the last good value kept
//! while the topology is unreachable, and re-watches with capped exponential backoff.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use topo_core::{Result, TopoError};
use topo_proto::topodata::SrvKeyspace;
use topo_proto::vschema::SrvVSchema;

use crate::serving::TypedWatch;
use crate::Server;

/// The first pause before re-watching after an error; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between re-watch attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The state of one cached record: nothing yet, a value, or an error (`NoNode` when the
/// record is gone; any other error only while no value was ever read).
type Slot<M> = Option<Result<Arc<M>>>;

/// The slots of one record kind, by (cell, keyspace).
type SlotMap<M> = HashMap<(String, String), watch::Receiver<Slot<M>>>;

#[derive(Debug)]
struct Entries<M> {
    by_key: Mutex<SlotMap<M>>,
}

impl<M> Default for Entries<M> {
    fn default() -> Self {
        Entries {
            by_key: Mutex::new(HashMap::new()),
        }
    }
}

/// The serving-graph cache. Dropping it stops its watches.
#[derive(Debug)]
pub struct SrvCache {
    server: Server,
    keyspaces: Entries<SrvKeyspace>,
    vschemas: Entries<SrvVSchema>,
    stop: CancellationToken,
}

impl Drop for SrvCache {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Keeps one record fresh: watch, publish each value, and on any failure keep the last
/// value and watch again after a pause.
async fn follow<M, W, WF>(tx: watch::Sender<Slot<M>>, stop: CancellationToken, mut start: W)
where
    M: Send + Sync + 'static,
    W: FnMut() -> WF,
    WF: Future<Output = Result<TypedWatch<M>>>,
{
    let mut backoff = FIRST_BACKOFF;
    let publish_error = |e: TopoError| {
        tx.send_modify(|slot| {
            // An outage keeps the last good value; a deletion does not.
            let keep = matches!(slot, Some(Ok(_))) && !e.is_no_node();
            if !keep {
                *slot = Some(Err(e));
            }
        })
    };
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            a = start() => a,
        };
        match attempt {
            Ok((first, mut changes)) => {
                backoff = FIRST_BACKOFF;
                tx.send_replace(Some(Ok(Arc::new(first))));
                loop {
                    let item = tokio::select! {
                        _ = stop.cancelled() => return,
                        item = changes.next() => item,
                    };
                    match item {
                        Some(Ok(v)) => {
                            tx.send_replace(Some(Ok(Arc::new(v))));
                        }
                        Some(Err(e)) => {
                            tracing::debug!("serving watch ended: {e}; watching again");
                            publish_error(e);
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(e) => {
                tracing::debug!("cannot watch a serving record: {e}; retrying in {backoff:?}");
                publish_error(e);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Waits for the first state of a slot (bounded by `limit`) and turns it into a result.
async fn answer<M>(
    mut rx: watch::Receiver<Slot<M>>,
    limit: Duration,
    what: &str,
) -> Result<Arc<M>> {
    let ready = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
    match ready {
        Ok(Ok(slot)) => slot
            .clone()
            .unwrap_or_else(|| Err(TopoError::Timeout(what.to_string()))),
        Ok(Err(_)) => Err(TopoError::Interrupted(what.to_string())),
        Err(_) => Err(TopoError::Timeout(what.to_string())),
    }
}

impl SrvCache {
    /// A cache over `server`'s serving graph.
    pub fn new(server: Server) -> Arc<Self> {
        Arc::new(SrvCache {
            server,
            keyspaces: Entries::default(),
            vschemas: Entries::default(),
            stop: CancellationToken::new(),
        })
    }

    /// The receiver of `key`'s slot in `entries`, starting its watch on first use.
    fn receiver<M, W, WF>(
        &self,
        entries: &Entries<M>,
        key: (String, String),
        start: W,
    ) -> watch::Receiver<Slot<M>>
    where
        M: Send + Sync + 'static,
        W: FnMut() -> WF + Send + 'static,
        WF: Future<Output = Result<TypedWatch<M>>> + Send + 'static,
    {
        let mut map = entries.by_key.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                let (tx, rx) = watch::channel(None);
                tokio::spawn(follow(tx, self.stop.clone(), start));
                rx
            })
            .clone()
    }

    /// The SrvKeyspace of `ks` in `cell`, from memory once it was read: the first call
    /// starts a watch and waits for its first value (at most the remote-operation timeout).
    ///
    /// # Errors
    /// `NoNode` when the record does not exist (or was deleted); the watch's error when it
    /// could never be read; `Timeout` when nothing arrived in time.
    pub async fn get_srv_keyspace(&self, cell: &str, ks: &str) -> Result<Arc<SrvKeyspace>> {
        let (server, c, k) = (self.server.clone(), cell.to_string(), ks.to_string());
        let rx = self.receiver(
            &self.keyspaces,
            (cell.to_string(), ks.to_string()),
            move || {
                let (server, c, k) = (server.clone(), c.clone(), k.clone());
                async move { server.watch_srv_keyspace(&c, &k).await }
            },
        );
        answer(
            rx,
            self.server.config().remote_operation_timeout,
            &format!("SrvKeyspace {ks} in {cell}"),
        )
        .await
    }

    /// The SrvVSchema of `cell`, from memory once it was read (as
    /// [`SrvCache::get_srv_keyspace`]).
    ///
    /// # Errors
    /// As [`SrvCache::get_srv_keyspace`].
    pub async fn get_srv_vschema(&self, cell: &str) -> Result<Arc<SrvVSchema>> {
        let (server, c) = (self.server.clone(), cell.to_string());
        let rx = self.receiver(
            &self.vschemas,
            (cell.to_string(), String::new()),
            move || {
                let (server, c) = (server.clone(), c.clone());
                async move { server.watch_srv_vschema(&c).await }
            },
        );
        answer(
            rx,
            self.server.config().remote_operation_timeout,
            &format!("SrvVSchema of {cell}"),
        )
        .await
    }
}
