//! Connections that wrap connections: statistics with a read-concurrency limit and a
//! read-only mode ([`StatsConn`]), and fault injection for tests ([`FaultConn`]).
//!
//! Both are a [`HookedConn`]: one forwarding implementation of [`Conn`] that asks a
//! [`ConnHook`] before each call and tells it the outcome after, so a new wrapper is a
//! small hook instead of another copy of every method.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use regex::Regex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::conn::{Conn, LeaderParticipation, LockGuard};
use crate::error::{Result, TopoError};
use crate::lock::{LockKind, LockOptions};
use crate::types::{DirEntry, Fence, KvInfo, RecursiveChange, Version, WatchData};
use crate::watch::WatchStream;

/// The operations of [`Conn`], as wrappers see them (fenced writes count as their plain
/// operation; `lock_with_ttl` and `lock_name` as `Lock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `list_dir`
    ListDir,
    /// `create`, `create_fenced`
    Create,
    /// `update`, `update_fenced`
    Update,
    /// `get`
    Get,
    /// `get_version`
    GetVersion,
    /// `list`
    List,
    /// `delete`, `delete_fenced`
    Delete,
    /// `lock`, `lock_with_ttl`, `lock_name`
    Lock,
    /// `try_lock`
    TryLock,
    /// `watch`
    Watch,
    /// `watch_recursive`
    WatchRecursive,
    /// `new_leader_participation`
    NewLeaderParticipation,
}

impl Op {
    /// Vitess's operation label (`ListDir`, `Create`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::ListDir => "ListDir",
            Op::Create => "Create",
            Op::Update => "Update",
            Op::Get => "Get",
            Op::GetVersion => "GetVersion",
            Op::List => "List",
            Op::Delete => "Delete",
            Op::Lock => "Lock",
            Op::TryLock => "TryLock",
            Op::Watch => "Watch",
            Op::WatchRecursive => "WatchRecursive",
            Op::NewLeaderParticipation => "NewLeaderParticipation",
        }
    }

    /// True for the reads that the per-cell read-concurrency limit applies to.
    pub fn is_read(self) -> bool {
        matches!(self, Op::ListDir | Op::Get | Op::GetVersion | Op::List)
    }

    /// True for operations that change the store (refused in read-only mode).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Op::Create
                | Op::Update
                | Op::Delete
                | Op::Lock
                | Op::TryLock
                | Op::NewLeaderParticipation
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a [`HookedConn`] asks before and tells after each call.
#[async_trait]
pub trait ConnHook: Send + Sync + fmt::Debug + 'static {
    /// Held for the duration of the call (a semaphore permit, a start time).
    type Permit: Send;

    /// Called before `op` on `path`; an error refuses the call.
    async fn before(&self, op: Op, path: &str) -> Result<Self::Permit>;

    /// Called after the call with its error, if any.
    fn after(&self, op: Op, permit: Self::Permit, error: Option<&TopoError>);

    /// A bound on the call's duration, after which it fails with `Timeout`.
    fn deadline(&self, _op: Op) -> Option<Duration> {
        None
    }
}

/// A [`Conn`] that forwards every call to `inner` between the hook's `before` and `after`.
#[derive(Debug)]
pub struct HookedConn<H> {
    inner: Arc<dyn Conn>,
    hook: H,
}

impl<H: ConnHook> HookedConn<H> {
    /// Wraps `inner` with `hook`.
    pub fn new(inner: Arc<dyn Conn>, hook: H) -> Self {
        HookedConn { inner, hook }
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }

    /// The wrapped connection.
    pub fn inner(&self) -> &Arc<dyn Conn> {
        &self.inner
    }

    fn hook_mut(&mut self) -> &mut H {
        &mut self.hook
    }
}

/// One forwarded call: `before`, the inner call, `after`.
macro_rules! hooked {
    ($self:ident, $op:expr, $path:expr, $call:expr) => {{
        let permit = $self.hook.before($op, $path).await?;
        let result = match $self.hook.deadline($op) {
            Some(limit) => match tokio::time::timeout(limit, $call).await {
                Ok(r) => r,
                Err(_) => Err(TopoError::Timeout(format!("{} {}", $op, $path))),
            },
            None => $call.await,
        };
        $self.hook.after($op, permit, result.as_ref().err());
        result
    }};
}

#[async_trait]
impl<H: ConnHook> Conn for HookedConn<H> {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        hooked!(self, Op::ListDir, dir, self.inner.list_dir(dir, full))
    }
    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        hooked!(self, Op::Create, path, self.inner.create(path, contents))
    }
    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        hooked!(
            self,
            Op::Update,
            path,
            self.inner.update(path, contents, version)
        )
    }
    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        hooked!(self, Op::Get, path, self.inner.get(path))
    }
    async fn get_version(&self, path: &str, version: &Version) -> Result<Vec<u8>> {
        hooked!(
            self,
            Op::GetVersion,
            path,
            self.inner.get_version(path, version)
        )
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        hooked!(self, Op::List, prefix, self.inner.list(prefix))
    }
    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        hooked!(self, Op::Delete, path, self.inner.delete(path, version))
    }
    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        hooked!(
            self,
            Op::Create,
            path,
            self.inner.create_fenced(fence, path, contents)
        )
    }
    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        hooked!(
            self,
            Op::Update,
            path,
            self.inner.update_fenced(fence, path, contents, version)
        )
    }
    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        hooked!(
            self,
            Op::Delete,
            path,
            self.inner.delete_fenced(fence, path, version)
        )
    }
    async fn lock_with(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard> {
        let op = match opts.kind {
            LockKind::Try => Op::TryLock,
            LockKind::Blocking | LockKind::Named => Op::Lock,
        };
        hooked!(self, op, dir, self.inner.lock_with(dir, contents, opts))
    }
    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)> {
        hooked!(self, Op::Watch, path, self.inner.watch(path))
    }
    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
        hooked!(
            self,
            Op::WatchRecursive,
            path,
            self.inner.watch_recursive(path)
        )
    }
    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>> {
        hooked!(
            self,
            Op::NewLeaderParticipation,
            id,
            self.inner.new_leader_participation(name, id)
        )
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn value_limit(&self) -> Option<crate::ValueLimit> {
        self.inner.value_limit()
    }
}

/// The upper bounds, in seconds, of the latency histogram's buckets (Prometheus `le`); a
/// call slower than the last bound is only in the total count (`+Inf`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters of one operation on one cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Total time spent in calls (including waiting for the read limit).
    pub total: Duration,
    /// Time spent waiting for the read-concurrency limit.
    pub read_wait: Duration,
    /// Calls by duration: `latency[i]` counts the calls that took more than
    /// `LATENCY_BUCKETS[i - 1]` and at most [`LATENCY_BUCKETS`]`[i]` seconds (not
    /// cumulative; a call slower than every bound is in none).
    pub latency: [u64; LATENCY_BUCKETS.len()],
}

impl OpStats {
    /// The histogram as Prometheus wants it: for each bound, the calls at most that long.
    pub fn cumulative_latency(&self) -> [u64; LATENCY_BUCKETS.len()] {
        let mut out = self.latency;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

/// Statistics shared by every [`StatsConn`] of a server, keyed by cell and operation
/// (Vitess's `TopologyConnOperations`, `TopologyConnErrors`, `TopologyConnReadWaits`).
#[derive(Debug, Default)]
pub struct TopoStats {
    by_cell_op: Mutex<BTreeMap<(String, Op), OpStats>>,
}

impl TopoStats {
    /// A new, empty set of statistics.
    pub fn new() -> Arc<Self> {
        Arc::new(TopoStats::default())
    }

    /// A copy of every counter, keyed by (cell, operation).
    pub fn snapshot(&self) -> BTreeMap<(String, Op), OpStats> {
        self.by_cell_op
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The counters of one cell and operation.
    pub fn get(&self, cell: &str, op: Op) -> OpStats {
        self.by_cell_op
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(cell.to_string(), op))
            .copied()
            .unwrap_or_default()
    }

    fn record(&self, cell: &str, op: Op, elapsed: Duration, read_wait: Duration, failed: bool) {
        let mut map = self.by_cell_op.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.entry((cell.to_string(), op)).or_default();
        s.calls += 1;
        s.errors += u64::from(failed);
        s.total += elapsed;
        s.read_wait += read_wait;
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| secs <= le) {
            s.latency[i] += 1;
        }
    }
}

/// The hook of a [`StatsConn`].
#[derive(Debug)]
pub struct Stats {
    cell: String,
    stats: Arc<TopoStats>,
    reads: Arc<Semaphore>,
    read_only: AtomicBool,
    deadline: Option<Duration>,
}

impl Stats {
    /// Whether writes and locks are refused.
    pub fn read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    /// Turns read-only mode on or off.
    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::Relaxed);
    }
}

#[async_trait]
impl ConnHook for Stats {
    type Permit = (Instant, Duration, Option<OwnedSemaphorePermit>);

    async fn before(&self, op: Op, path: &str) -> Result<Self::Permit> {
        if op.is_write() && self.read_only() {
            return Err(TopoError::ReadOnly {
                op: op.name(),
                path: path.to_string(),
            });
        }
        let start = Instant::now();
        let permit = if op.is_read() {
            // The semaphore is never closed, so acquiring only fails if it were.
            Some(
                self.reads
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| TopoError::backend("stats", "read limiter closed", e))?,
            )
        } else {
            None
        };
        Ok((start, start.elapsed(), permit))
    }

    fn deadline(&self, op: Op) -> Option<Duration> {
        // Waiting is what locks and elections do; everything else is one remote operation.
        match op {
            Op::Lock | Op::TryLock | Op::NewLeaderParticipation => None,
            _ => self.deadline,
        }
    }

    fn after(&self, op: Op, permit: Self::Permit, error: Option<&TopoError>) {
        let (start, wait, _permit) = permit;
        self.stats
            .record(&self.cell, op, start.elapsed(), wait, error.is_some());
    }
}

/// A connection with statistics, a read-concurrency limit and an optional read-only mode
/// (Vitess's `StatsConn`).
pub type StatsConn = HookedConn<Stats>;

/// The default limit on concurrent reads per cell (Vitess's `--topo-read-concurrency`).
pub const DEFAULT_READ_CONCURRENCY: usize = 32;

impl StatsConn {
    /// Wraps `inner` for `cell`, recording into `stats`, allowing `read_limit` concurrent
    /// reads (ListDir, Get, GetVersion, List; at least one). Pass the same semaphore to the
    /// global and global-read-only connections to share their limit, as Vitess does.
    pub fn with_stats(
        inner: Arc<dyn Conn>,
        cell: &str,
        stats: Arc<TopoStats>,
        reads: Arc<Semaphore>,
        read_only: bool,
    ) -> Self {
        HookedConn::new(
            inner,
            Stats {
                cell: cell.to_string(),
                stats,
                reads,
                read_only: AtomicBool::new(read_only),
                deadline: None,
            },
        )
    }

    /// Bounds every call but lock acquisitions and elections by `limit` (Vitess's
    /// `--remote-operation-timeout`): a cell that stops answering fails calls with
    /// `Timeout` instead of hanging them.
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.hook_mut().deadline = Some(limit);
        self
    }

    /// A read semaphore of `limit` permits (at least one).
    pub fn read_limit(limit: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(limit.max(1)))
    }
}

/// Fault injection for tests: errors per operation and path pattern, an unreachable mode in
/// which every call hangs until the caller gives up, and per-operation call counters
/// (Vitess memorytopo's `AddOperationError`, `UnreachableServerAddr`, `GetCallStats`).
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<(Op, Regex, TopoError)>>,
    all: Mutex<Option<TopoError>>,
    unreachable: AtomicBool,
    calls: Mutex<BTreeMap<Op, u64>>,
}

impl Faults {
    /// No faults.
    pub fn new() -> Arc<Self> {
        Arc::new(Faults::default())
    }

    /// Makes `op` on paths matching `path_pattern` (a regex; for elections the id) fail
    /// with `error`.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad pattern.
    pub fn add_error(&self, op: Op, path_pattern: &str, error: TopoError) -> Result<()> {
        let re = Regex::new(path_pattern)
            .map_err(|e| TopoError::invalid(format!("bad path pattern {path_pattern:?}: {e}")))?;
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((op, re, error));
        Ok(())
    }

    /// Makes every call fail with `error` (or clears that with `None`).
    pub fn set_error(&self, error: Option<TopoError>) {
        *self.all.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Removes every injected error.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.set_error(None);
    }

    /// Makes every call hang (until the caller's timeout) while `on`.
    pub fn set_unreachable(&self, on: bool) {
        self.unreachable.store(on, Ordering::Relaxed);
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&op)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl ConnHook for Arc<Faults> {
    type Permit = ();

    async fn before(&self, op: Op, path: &str) -> Result<()> {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += 1;
        if self.unreachable.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        if let Some(e) = self.all.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(e);
        }
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        match rules
            .iter()
            .find(|(o, re, _)| *o == op && re.is_match(path))
        {
            Some((_, _, e)) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn after(&self, _op: Op, _permit: (), _error: Option<&TopoError>) {}
}

/// A connection with injectable faults.
pub type FaultConn = HookedConn<Arc<Faults>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::ConnExt;

    #[tokio::test]
    async fn read_only_refuses_writes_and_counts() {
        let inner = MemoryStore::new().conn("/r");
        let stats = TopoStats::new();
        let conn = StatsConn::with_stats(
            inner,
            "zone1",
            stats.clone(),
            StatsConn::read_limit(2),
            true,
        );
        let err = conn.create("/a", b"x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot perform Create on /a as the topology server connection is read-only"
        );
        assert!(conn.lock("/", "x").await.is_err());
        assert!(conn.get("/a").await.unwrap_err().is_no_node());
        conn.hook().set_read_only(false);
        conn.create("/a", b"x").await.unwrap();
        assert_eq!(conn.get("/a").await.unwrap().0, b"x");
        let get = stats.get("zone1", Op::Get);
        assert_eq!((get.calls, get.errors), (2, 1));
        assert_eq!(stats.get("zone1", Op::Create).calls, 1);
    }

    /// Each call lands in the first bucket whose bound it does not exceed; one slower than
    /// every bound is only counted; the cumulative form adds up to the calls that fit.
    #[test]
    fn latency_histogram_buckets() {
        let stats = TopoStats::new();
        for ms in [0.3, 0.5, 0.7, 3000.0, 20_000.0] {
            let d = Duration::from_secs_f64(ms / 1000.0);
            stats.record("zone1", Op::Get, d, Duration::ZERO, false);
        }
        let get = stats.get("zone1", Op::Get);
        assert_eq!(get.calls, 5);
        let mut want = [0; LATENCY_BUCKETS.len()];
        want[0] = 2; // 0.3 ms and exactly 0.5 ms
        want[1] = 1; // 0.7 ms
        want[12] = 1; // 3 s: over 2.5 s, at most 5 s
        assert_eq!(get.latency, want);
        let cumulative = get.cumulative_latency();
        assert_eq!(cumulative[0], 2);
        assert_eq!(cumulative[11], 3);
        assert_eq!(cumulative[LATENCY_BUCKETS.len() - 1], 4);
    }

    #[tokio::test]
    async fn faults_inject_and_hang() {
        let faults = Faults::new();
        let conn = FaultConn::new(MemoryStore::new().conn("/r"), faults.clone());
        faults
            .add_error(Op::Get, "^/ks/", TopoError::Timeout("injected".into()))
            .unwrap();
        conn.create("/ks/a", b"1").await.unwrap();
        conn.create("/other", b"1").await.unwrap();
        assert_eq!(
            conn.get("/ks/a").await.unwrap_err(),
            TopoError::Timeout("injected".into())
        );
        assert!(conn.get("/other").await.is_ok());
        assert_eq!(faults.calls(Op::Get), 2);
        faults.set_unreachable(true);
        let r = tokio::time::timeout(Duration::from_millis(50), conn.get("/other")).await;
        assert!(r.is_err(), "an unreachable conn must hang");
        faults.set_unreachable(false);
        faults.clear();
        assert!(conn.get("/ks/a").await.is_ok());
    }
}
