//! A resilient cache of the serving graph (what vtgate keeps): one background watch per
//! SrvKeyspace and per cell's SrvVSchema, answers from memory, the last good value kept
//! while the topology is unreachable, and re-watches with capped exponential backoff.
//!
//! Memory is bounded by use: a record nobody asked for during [`SrvCacheOptions::idle_ttl`]
//! is evicted and its watch stopped (names that do not exist included), and watch channels
//! coalesce, so a slow consumer holds at most the latest value.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// A cached record: its slot, when it was last asked for, and whether its value is a last
/// good one kept while its watch fails.
#[derive(Debug)]
struct CacheEntry<M> {
    rx: watch::Receiver<Slot<M>>,
    last_used: Instant,
    stale: Arc<AtomicBool>,
}

/// What a [`SrvCache`] has answered so far, and how many of its records are stale now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrvCacheStats {
    /// Reads answered from memory (the record was cached and had a state).
    pub hits: u64,
    /// Reads that had to wait for the topology (first use, or no state yet).
    pub misses: u64,
    /// Reads that returned an error (`NoNode` included).
    pub errors: u64,
    /// Reads answered with a last good value while the record's watch was failing.
    pub stale_reads: u64,
    /// Records whose value is a last good one kept while their watch fails (now).
    pub stale_records: u64,
}

/// The read counters of a [`SrvCache`].
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    stale_reads: AtomicU64,
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
    counters: Counters,
}

impl Drop for SrvCache {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Keeps one record fresh: watch, publish each value, and on any failure keep the last
/// value (marking it `stale`) and watch again after a pause.
async fn follow<M, W, WF>(
    tx: watch::Sender<Slot<M>>,
    stale: Arc<AtomicBool>,
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
            stale.store(keep, Ordering::Relaxed);
            if !keep {
                *slot = Some(Err(e));
            }
        })
    };
    let publish = |v: M| {
        stale.store(false, Ordering::Relaxed);
        tx.send_replace(Some(Ok(Arc::new(v))));
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
                publish(first);
                loop {
                    let item = tokio::select! {
                        _ = stop.cancelled() => return,
                        item = changes.next() => item,
                    };
                    match item {
                        Some(Ok(v)) => {
                            backoff.reset();
                            publish(v);
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
            counters: Counters::default(),
        })
    }

    /// What the cache has answered so far, and how many records are stale now.
    pub fn stats(&self) -> SrvCacheStats {
        fn stale<M>(entries: &Entries<M>) -> u64 {
            let map = lock_map(&entries.by_key);
            map.values()
                .filter(|e| e.stale.load(Ordering::Relaxed))
                .count() as u64
        }
        let c = &self.counters;
        SrvCacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            stale_reads: c.stale_reads.load(Ordering::Relaxed),
            stale_records: stale(&self.keyspaces) + stale(&self.vschemas),
        }
    }

    /// How many records are cached (each with its background watch).
    pub fn len(&self) -> usize {
        lock_map(&self.keyspaces.by_key).len() + lock_map(&self.vschemas.by_key).len()
    }

    /// True when no record is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `key`'s record from `entries`, starting its watch on first use and waiting (at most
    /// the remote-operation timeout) for its first state; counted in [`SrvCache::stats`].
    async fn read<M, W, WF>(
        &self,
        entries: &Entries<M>,
        key: (String, String),
        start: W,
        what: &str,
    ) -> Result<Arc<M>>
    where
        M: Send + Sync + 'static,
        W: FnMut() -> WF + Send + 'static,
        WF: Future<Output = Result<TypedWatch<M>>> + Send + 'static,
    {
        let (rx, stale) = self.receiver(entries, key, start);
        let c = &self.counters;
        if rx.borrow().is_some() {
            c.hits.fetch_add(1, Ordering::Relaxed);
            if stale {
                c.stale_reads.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            c.misses.fetch_add(1, Ordering::Relaxed);
        }
        let limit = self.server.config().remote_operation_timeout;
        let answer = answer(rx, limit, what).await;
        if answer.is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// The receiver of `key`'s slot in `entries` and whether its value is stale, starting
    /// its watch on first use.
    fn receiver<M, W, WF>(
        &self,
        entries: &Entries<M>,
        key: (String, String),
        start: W,
    ) -> (watch::Receiver<Slot<M>>, bool)
    where
        M: Send + Sync + 'static,
        W: FnMut() -> WF + Send + 'static,
        WF: Future<Output = Result<TypedWatch<M>>> + Send + 'static,
    {
        let mut map = lock_map(&entries.by_key);
        let entry = map.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            let stale = Arc::new(AtomicBool::new(false));
            let backoff = self.options.backoff.clone();
            let follow = follow(tx, stale.clone(), self.stop.clone(), backoff, start);
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
                stale,
            }
        });
        entry.last_used = Instant::now();
        (entry.rx.clone(), entry.stale.load(Ordering::Relaxed))
    }

    /// The SrvKeyspace of `ks` in `cell`, from memory once it was read: the first call
    /// starts a watch and waits for its first value (at most the remote-operation timeout).
    ///
    /// # Errors
    /// `NoNode` when the record does not exist (or was deleted); the watch's error when it
    /// could never be read; `Timeout` when nothing arrived in time.
    pub async fn get_srv_keyspace(&self, cell: &str, ks: &str) -> Result<Arc<SrvKeyspace>> {
        let (server, c, k) = (self.server.clone(), cell.to_string(), ks.to_string());
        self.read(
            &self.keyspaces,
            (cell.to_string(), ks.to_string()),
            move || {
                let (server, c, k) = (server.clone(), c.clone(), k.clone());
                async move { server.watch_srv_keyspace(&c, &k).await }
            },
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
        self.read(
            &self.vschemas,
            (cell.to_string(), String::new()),
            move || {
                let (server, c) = (server.clone(), c.clone());
                async move { server.watch_srv_vschema(&c).await }
            },
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
        let stale = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(follow::<u32, _, _>(
            tx,
            stale,
            stop.clone(),
            backoff,
            move || {
                n.fetch_add(1, Ordering::SeqCst);
                async {
                    let fails =
                        futures::stream::iter(vec![Err(TopoError::Interrupted("w".into()))]);
                    Ok((1u32, fails.boxed()))
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.cancel();
        task.await.unwrap();
        // Every 100 ms would be about 15; pauses doubling from 100 ms give about 4.
        let n = attempts.load(Ordering::SeqCst);
        assert!(n <= 7, "{n} watch attempts in 1.5 s");
    }

    /// A watch that fails after a value keeps the value and marks it stale; the watch is
    /// opened again and its value published.
    #[tokio::test]
    async fn a_failed_watch_marks_its_kept_value_stale() {
        let (tx, mut rx) = watch::channel(None);
        let stale = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let attempts = Arc::new(AtomicUsize::new(0));
        let n = attempts.clone();
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(200));
        let task = tokio::spawn(follow::<u32, _, _>(
            tx,
            stale.clone(),
            stop.clone(),
            backoff,
            move || {
                let attempt = n.fetch_add(1, Ordering::SeqCst) as u32;
                async move {
                    let fails =
                        futures::stream::iter(vec![Err(TopoError::Interrupted("w".into()))]);
                    Ok((attempt, fails.boxed()))
                }
            },
        ));
        rx.wait_for(|s| matches!(s, Some(Ok(v)) if **v == 0))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stale.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the kept value was never marked stale"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            matches!(&*rx.borrow(), Some(Ok(_))),
            "the value is kept, not the error"
        );
        rx.wait_for(|s| matches!(s, Some(Ok(v)) if **v == 1))
            .await
            .unwrap();
        stop.cancel();
        task.await.unwrap();
        assert!(attempts.load(Ordering::SeqCst) >= 2);
    }

    /// Reads are counted as hits (from memory), misses (waited for the topology) and errors.
    #[tokio::test]
    async fn reads_are_counted() {
        use topo_core::memory::MemoryFactory;
        use topo_proto::topodata::CellInfo;

        let factory = Arc::new(MemoryFactory::new());
        let ts = Server::open_with_factory(factory, "mem", "/global", Default::default())
            .await
            .unwrap();
        let cell = CellInfo {
            server_address: "mem".into(),
            root: "/c1".into(),
        };
        ts.create_cell_info("c1", &cell).await.unwrap();
        ts.update_srv_keyspace("c1", "ks", &SrvKeyspace::default())
            .await
            .unwrap();
        let cache = SrvCache::new(ts);
        assert_eq!(cache.stats(), SrvCacheStats::default());
        cache.get_srv_keyspace("c1", "ks").await.unwrap();
        cache.get_srv_keyspace("c1", "ks").await.unwrap();
        cache.get_srv_keyspace("c1", "ks").await.unwrap();
        assert!(cache.get_srv_keyspace("c1", "nope").await.is_err());
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.errors, stats.stale_records),
            (2, 2, 1, 0),
            "{stats:?}"
        );
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
