//! A resilient cache of the serving graph (what vtgate keeps): one background watch per
//! SrvKeyspace and per cell's SrvVSchema, answers from memory, the last good value kept
//! while the topology is unreachable, and re-watches with capped exponential backoff.
//!
//! Memory is bounded by use: a record nobody asked for during [`SrvCacheOptions::idle_ttl`]
//! is evicted and its watch stopped (names that do not exist included), and watch channels
//! coalesce, so a slow consumer holds at most the latest value.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use topo_core::backoff::Backoff;
use topo_core::{Result, TopoError};
use topo_proto::topodata::SrvKeyspace;
use topo_proto::vschema::SrvVSchema;

use crate::serving::TypedWatch;
use crate::Server;

/// Settings of a [`SrvCache`].
#[derive(Clone, Debug)]
pub struct SrvCacheOptions {
    /// How long a record stays cached, with its watch, after it was last asked for
    /// (Vitess's srvtopo stops a watch nobody listens to; its `--srv_topo_cache_ttl` is how
    /// long a value is served). Default: 10 minutes.
    pub idle_ttl: Duration,
    /// The pauses between re-watch attempts after failures. Default: 100 ms doubling to
    /// 10 s, 20 % jitter. They go back to the first pause only once a watch delivered a
    /// change or stayed open for the longest pause, so a watch that opens and fails at once
    /// is not retried in a tight loop.
    pub backoff: Backoff,
}

impl Default for SrvCacheOptions {
    fn default() -> Self {
        SrvCacheOptions {
            idle_ttl: Duration::from_secs(600),
            backoff: Backoff::new(Duration::from_millis(100), MAX_BACKOFF),
        }
    }
}

/// The longest default pause between re-watch attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The state of one cached record: nothing yet, a value, or an error (`NoNode` when the
/// record is gone; any other error only while no value was ever read).
type Slot<M> = Option<Result<Arc<M>>>;

/// A cached record: its slot and when it was last asked for.
#[derive(Debug)]
struct CacheEntry<M> {
    rx: watch::Receiver<Slot<M>>,
    last_used: Instant,
}

/// The entries of one record kind, by (cell, keyspace).
type SlotMap<M> = HashMap<(String, String), CacheEntry<M>>;

#[derive(Debug)]
struct Entries<M> {
    by_key: Arc<Mutex<SlotMap<M>>>,
}

impl<M> Default for Entries<M> {
    fn default() -> Self {
        Entries {
            by_key: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

fn lock_map<M>(map: &Mutex<SlotMap<M>>) -> MutexGuard<'_, SlotMap<M>> {
    // Map updates are single inserts and removes: a panic elsewhere cannot leave it torn.
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// The serving-graph cache. Dropping it stops its watches.
#[derive(Debug)]
pub struct SrvCache {
    server: Server,
    options: SrvCacheOptions,
    keyspaces: Entries<SrvKeyspace>,
    vschemas: Entries<SrvVSchema>,
    stop: CancellationToken,
    /// Background tasks still running (one per cached record).
    tasks: TaskTracker,
}

impl Drop for SrvCache {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Keeps one record fresh: watch, publish each value, and on any failure keep the last
/// value and watch again after a pause.
async fn follow<M, W, WF>(
    tx: watch::Sender<Slot<M>>,
    stop: CancellationToken,
    mut backoff: Backoff,
    mut start: W,
) where
    M: Send + Sync + 'static,
    W: FnMut() -> WF,
    WF: Future<Output = Result<TypedWatch<M>>>,
{
    let publish_error = |e: TopoError| {
        tx.send_modify(|slot| {
            // An outage keeps the last good value; a deletion does not.
            let keep = matches!(slot, Some(Ok(_))) && !e.is_no_node();
            if !keep {
                *slot = Some(Err(e));
            }
        })
    };
    // A watch that stayed open this long counts as healthy even without changes.
    let healthy_after = backoff.max_delay();
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            a = start() => a,
        };
        match attempt {
            Ok((first, mut changes)) => {
                let opened = Instant::now();
                tx.send_replace(Some(Ok(Arc::new(first))));
                loop {
                    let item = tokio::select! {
                        _ = stop.cancelled() => return,
                        item = changes.next() => item,
                    };
                    match item {
                        Some(Ok(v)) => {
                            backoff.reset();
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
                if opened.elapsed() >= healthy_after {
                    backoff.reset();
                }
            }
            Err(e) => {
                tracing::debug!("cannot watch a serving record: {e}; retrying");
                publish_error(e);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Returns once `key` was not asked for during `ttl`, having removed it from `map`.
async fn evict_when_idle<M>(map: Arc<Mutex<SlotMap<M>>>, key: (String, String), ttl: Duration) {
    let mut deadline = Instant::now() + ttl;
    loop {
        tokio::time::sleep_until(deadline).await;
        let mut m = lock_map(&map);
        match m.get(&key) {
            Some(e) if e.last_used.elapsed() < ttl => deadline = e.last_used + ttl,
            _ => {
                m.remove(&key);
                return;
            }
        }
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
    /// A cache over `server`'s serving graph, with default options.
    pub fn new(server: Server) -> Arc<Self> {
        Self::with_options(server, SrvCacheOptions::default())
    }

    /// A cache over `server`'s serving graph.
    pub fn with_options(server: Server, options: SrvCacheOptions) -> Arc<Self> {
        Arc::new(SrvCache {
            server,
            options,
            keyspaces: Entries::default(),
            vschemas: Entries::default(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// How many records are cached (each with its background watch).
    pub fn len(&self) -> usize {
        lock_map(&self.keyspaces.by_key).len() + lock_map(&self.vschemas.by_key).len()
    }

    /// True when no record is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let mut map = lock_map(&entries.by_key);
        let entry = map.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            let follow = follow(tx, self.stop.clone(), self.options.backoff.clone(), start);
            let idle = evict_when_idle(entries.by_key.clone(), key, self.options.idle_ttl);
            self.tasks.spawn(async move {
                // Evicted: the watch (and its sender) is dropped with `follow`.
                tokio::select! {
                    _ = follow => {}
                    _ = idle => {}
                }
            });
            CacheEntry {
                rx,
                last_used: Instant::now(),
            }
        });
        entry.last_used = Instant::now();
        entry.rx.clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A watch that opens and then fails at once is retried with growing pauses, not every
    /// 100 ms (the backoff is not reset by a watch that merely opened).
    #[tokio::test]
    async fn a_watch_that_opens_then_fails_backs_off() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let (tx, _rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let n = attempts.clone();
        let backoff = SrvCacheOptions::default().backoff;
        let task = tokio::spawn(follow::<u32, _, _>(tx, stop.clone(), backoff, move || {
            n.fetch_add(1, Ordering::SeqCst);
            async {
                let fails = futures::stream::iter(vec![Err(TopoError::Interrupted("w".into()))]);
                Ok((1u32, fails.boxed()))
            }
        }));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.cancel();
        task.await.unwrap();
        // Every 100 ms would be about 15; pauses doubling from 100 ms give about 4.
        let n = attempts.load(Ordering::SeqCst);
        assert!(n <= 7, "{n} watch attempts in 1.5 s");
    }

    /// Records asked for (names that do not exist included) are evicted after the idle TTL,
    /// and their tasks end; a record asked for again is served again.
    #[tokio::test]
    async fn idle_records_are_evicted() {
        use topo_core::memory::MemoryFactory;
        use topo_proto::topodata::CellInfo;

        let factory = Arc::new(MemoryFactory::new());
        let config = crate::ServerConfig {
            remote_operation_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let ts = Server::open_with_factory(factory, "mem", "/global", config)
            .await
            .unwrap();
        ts.create_cell_info(
            "c1",
            &CellInfo {
                server_address: "mem".into(),
                root: "/c1".into(),
            },
        )
        .await
        .unwrap();
        ts.update_srv_keyspace("c1", "ks", &SrvKeyspace::default())
            .await
            .unwrap();
        let idle_ttl = Duration::from_secs(1);
        let cache = SrvCache::with_options(
            ts,
            SrvCacheOptions {
                idle_ttl,
                ..Default::default()
            },
        );
        cache.get_srv_keyspace("c1", "ks").await.unwrap();
        for i in 0..50 {
            assert!(cache
                .get_srv_keyspace("c1", &format!("missing{i}"))
                .await
                .unwrap_err()
                .is_no_node());
        }
        assert!(cache.get_srv_vschema("c1").await.is_err());
        assert_eq!(cache.len(), 52);
        assert_eq!(cache.tasks.len(), 52);

        // Asked for again within the TTL: kept after the others are evicted.
        tokio::time::sleep(idle_ttl / 2).await;
        cache.get_srv_keyspace("c1", "ks").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.len() > 1 {
            assert!(Instant::now() < deadline, "{} records left", cache.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            lock_map(&cache.keyspaces.by_key).contains_key(&("c1".into(), "ks".into())),
            "the record asked for again is kept"
        );

        let deadline = Instant::now() + Duration::from_secs(5);
        while !cache.tasks.is_empty() || !cache.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} records and {} tasks left after the idle TTL",
                cache.len(),
                cache.tasks.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cache.get_srv_keyspace("c1", "ks").await.unwrap();
        assert_eq!(cache.len(), 1);
    }
}
