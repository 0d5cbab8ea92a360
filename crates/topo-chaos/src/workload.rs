//! The client loops. Each client is one logical process of the history: it records an
//! invocation, makes one call through the public [`Conn`] API, and records how it ended.
//! After an operation with an unknown outcome the client continues as a new process (its
//! id plus the stride), since the old call may still be in flight, as Jepsen does.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use topo_core::ConnExt;

use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use topo_core::{
    Conn, ErrorKind, Fence, LeaderParticipation, Result, TopoError, Version, WatchData,
};

use crate::history::{Kind, Recorder, F};

/// The register workload's keys.
pub const REGISTER_KEYS: [&str; 3] = [
    "/chaos/register/r0",
    "/chaos/register/r1",
    "/chaos/register/r2",
];
/// The directory the lock workload locks.
pub const LOCK_DIR: &str = "/chaos/lock";
/// The lock workload's counter, inside the locked directory (a lock needs its directory).
pub const COUNTER: &str = "/chaos/lock/counter";
/// The election the election workload's participants campaign in.
pub const ELECTION: &str = "chaos";
/// The election workload's counter, incremented by leaders with their leadership's fence.
pub const ELECTION_COUNTER: &str = "/chaos/election/counter";
/// Fenced increments a leader makes before it resigns.
const INCREMENTS_PER_TERM: usize = 3;
/// The watch workload's key.
pub const WATCH_KEY: &str = "/chaos/watch/w";
/// How long watchers go on after the deadline (when writes stop and faults heal) by
/// default: each must have seen the final value by then (issue 12 asks 5 s).
pub const WATCH_SETTLE: Duration = Duration::from_secs(5);
/// Pause between a watch-workload writer's writes, so watchers see most values.
const WATCH_WRITE_PAUSE: Duration = Duration::from_millis(20);

/// The process id of the setup and final operations of the harness itself (clients use
/// smaller ids).
pub const HARNESS_PROCESS: u64 = 999_999_999;

/// Which workload a client runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Reads, writes and compare-and-sets of a few registers.
    Register,
    /// Lock, fenced read-modify-write of a counter, unlock.
    Lock,
    /// Writers write a key; watchers record every value their watch delivers.
    Watch,
    /// Participants campaign; each leader makes fenced increments of a counter, resigns.
    Election,
}

impl Workload {
    /// The keys whose final values are read after healing.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Workload::Register => &REGISTER_KEYS,
            Workload::Lock => std::slice::from_ref(&COUNTER),
            Workload::Watch => std::slice::from_ref(&WATCH_KEY),
            Workload::Election => std::slice::from_ref(&ELECTION_COUNTER),
        }
    }
}

/// When a client stops, and how long one call may take.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// No invocation starts after this instant.
    pub deadline: Instant,
    /// Bound on each call; a call that exceeds it ends as `info` (writes) or `fail` (reads).
    pub op_timeout: Duration,
    /// Bound on the number of operations of one client.
    pub max_ops: u64,
    /// How long watchers go on after the deadline (see [`WATCH_SETTLE`]).
    pub settle: Duration,
}

/// How a failed write ended: `fail` when the error proves nothing was written, `info`
/// otherwise (a lost reply, a timeout or a transport error may follow a committed write).
pub fn write_outcome(e: &TopoError) -> Kind {
    match e.kind() {
        ErrorKind::BadVersion
        | ErrorKind::NodeExists
        | ErrorKind::NoNode
        | ErrorKind::LockLost
        | ErrorKind::TooLarge
        | ErrorKind::InvalidArgument
        | ErrorKind::ReadOnly => Kind::Fail,
        _ => Kind::Info,
    }
}

async fn bounded<T>(limit: Duration, what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(TopoError::Timeout(what.to_string())),
    }
}

/// Leaves the election, `Timeout` when that takes longer than `limit`.
async fn stop_within(limit: Duration, participation: &dyn LeaderParticipation) -> Result<()> {
    bounded(limit, ELECTION, async {
        participation.stop().await;
        Ok(())
    })
    .await
}

fn parse(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(v) => json!(v),
        // Not one of ours: recorded as is, so the checker reports it.
        None => json!(String::from_utf8_lossy(bytes)),
    }
}

/// One client: its process id, history and bounds.
#[derive(Debug)]
pub struct Client {
    conn: Arc<dyn Conn>,
    process: u64,
    stride: u64,
    rec: Recorder,
    bounds: Bounds,
    rng: rand::rngs::StdRng,
    seq: i64,
    watcher: bool,
}

impl Client {
    /// A client numbered `process` (ids advance by `stride` after an unknown outcome).
    pub fn new(
        conn: Arc<dyn Conn>,
        process: u64,
        stride: u64,
        seed: u64,
        rec: Recorder,
        bounds: Bounds,
    ) -> Self {
        Client {
            conn,
            process,
            stride: stride.max(1),
            rec,
            bounds,
            rng: rand::rngs::StdRng::seed_from_u64(
                seed ^ process.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            seq: 0,
            watcher: false,
        }
    }

    /// In the watch workload, makes this client a watcher instead of a writer.
    pub fn watcher(mut self, on: bool) -> Self {
        self.watcher = on;
        self
    }

    /// Runs `workload` until the deadline or the operation bound.
    pub async fn run(mut self, workload: Workload) {
        if workload == Workload::Watch && self.watcher {
            return self
                .watch_until(self.bounds.deadline + self.bounds.settle)
                .await;
        }
        let mut ops = 0;
        while Instant::now() < self.bounds.deadline && ops < self.bounds.max_ops {
            ops += 1;
            match workload {
                Workload::Register => self.register_op().await,
                Workload::Lock => self.lock_round().await,
                Workload::Watch => self.watched_write().await,
                Workload::Election => self.election_term().await,
            }
        }
    }

    fn record(&mut self, kind: Kind, f: F, key: &str, value: Value) {
        self.rec.record(self.process, kind, f, key, value);
        if kind == Kind::Info {
            self.process += self.stride;
        }
    }

    /// A value no other write uses, so a value names the write that made it.
    fn unique(&mut self) -> i64 {
        self.seq += 1;
        (self.process as i64 + 1) * 1_000_000 + self.seq
    }

    /// A read; `Some((value, version))` when it succeeded (`None` value: absent).
    async fn read(&mut self, key: &str) -> Option<(Value, Option<Version>)> {
        self.record(Kind::Invoke, F::Read, key, Value::Null);
        let r = bounded(self.bounds.op_timeout, key, self.conn.get(key)).await;
        match r {
            Ok((bytes, version)) => {
                let v = parse(&bytes);
                self.record(Kind::Ok, F::Read, key, v.clone());
                Some((v, Some(version)))
            }
            Err(e) if e.is_no_node() => {
                self.record(Kind::Ok, F::Read, key, Value::Null);
                Some((Value::Null, None))
            }
            Err(e) => {
                tracing::debug!(key, "read failed: {e}");
                self.record(Kind::Fail, F::Read, key, json!(e.to_string()));
                None
            }
        }
    }

    async fn register_op(&mut self) {
        let key = REGISTER_KEYS[self.rng.random_range(0..REGISTER_KEYS.len())];
        match self.rng.random_range(0..10) {
            0..4 => {
                self.read(key).await;
            }
            4..7 => {
                let v = self.unique();
                self.record(Kind::Invoke, F::Write, key, json!(v));
                let r = bounded(
                    self.bounds.op_timeout,
                    key,
                    self.conn.update(key, v.to_string().as_bytes(), None),
                )
                .await;
                self.complete_write(F::Write, key, r.map(|_| ()));
            }
            _ => {
                let Some((current, Some(version))) = self.read(key).await else {
                    return;
                };
                let new = self.unique();
                self.record(Kind::Invoke, F::Cas, key, json!([current, new]));
                let r = bounded(
                    self.bounds.op_timeout,
                    key,
                    self.conn
                        .update(key, new.to_string().as_bytes(), Some(&version)),
                )
                .await;
                self.complete_write(F::Cas, key, r.map(|_| ()));
            }
        }
    }

    async fn watched_write(&mut self) {
        let v = self.unique();
        self.record(Kind::Invoke, F::Write, WATCH_KEY, json!(v));
        let r = bounded(
            self.bounds.op_timeout,
            WATCH_KEY,
            self.conn.update(WATCH_KEY, v.to_string().as_bytes(), None),
        )
        .await;
        self.complete_write(F::Write, WATCH_KEY, r.map(|_| ()));
        tokio::time::sleep(WATCH_WRITE_PAUSE).await;
    }

    /// Records one delivered value as `[version, value]`.
    fn saw(&mut self, data: &WatchData) {
        let value = json!([data.version.raw(), parse(&data.contents)]);
        self.record(Kind::Invoke, F::WatchEvent, WATCH_KEY, Value::Null);
        self.record(Kind::Ok, F::WatchEvent, WATCH_KEY, value);
    }

    /// Watches [`WATCH_KEY`] until `end`, watching again whenever the stream ends, then
    /// records the end marker (a `watch-event` whose value is null).
    async fn watch_until(&mut self, end: Instant) {
        while Instant::now() < end {
            let watch = bounded(
                self.bounds.op_timeout,
                WATCH_KEY,
                self.conn.watch(WATCH_KEY),
            )
            .await;
            let (initial, mut changes) = match watch {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!("watch failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            self.saw(&initial);
            loop {
                let left = end.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, changes.next()).await {
                    Ok(Some(Ok(data))) => self.saw(&data),
                    Ok(Some(Err(e))) => {
                        tracing::debug!("watch ended: {e}");
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        self.record(Kind::Invoke, F::WatchEvent, WATCH_KEY, Value::Null);
        self.record(Kind::Ok, F::WatchEvent, WATCH_KEY, Value::Null);
    }

    fn complete_write(&mut self, f: F, key: &str, r: Result<()>) {
        match r {
            Ok(()) => self.record(Kind::Ok, f, key, Value::Null),
            Err(e) => {
                tracing::debug!(key, "{f:?} failed: {e}");
                self.record(write_outcome(&e), f, key, json!(e.to_string()));
            }
        }
    }

    /// A fenced read-modify-write of counter `key`: `ok` carries `[token, new value]`.
    async fn fenced_increment(&mut self, fence: &Fence, key: &str) {
        let token = fence.token();
        self.record(Kind::Invoke, F::Incr, key, json!(token));
        let limit = self.bounds.op_timeout;
        match bounded(limit, key, self.conn.get(key)).await {
            Ok((bytes, version)) => {
                let next = parse(&bytes).as_i64().unwrap_or(0) + 1;
                let r = bounded(
                    limit,
                    key,
                    self.conn.update_fenced(
                        fence,
                        key,
                        next.to_string().as_bytes(),
                        Some(&version),
                    ),
                )
                .await;
                match r {
                    Ok(_) => self.record(Kind::Ok, F::Incr, key, json!([token, next])),
                    Err(e) => {
                        tracing::debug!("fenced increment failed: {e}");
                        self.record(write_outcome(&e), F::Incr, key, json!(e.to_string()));
                    }
                }
            }
            Err(e) => self.record(Kind::Fail, F::Incr, key, json!(e.to_string())),
        }
    }

    /// One term: campaign, and once leading make a few fenced increments of
    /// [`ELECTION_COUNTER`] (while the leadership token holds), then resign. `lead`'s `ok`
    /// carries the fencing token; `resign`'s `ok` carries whether the loss signal had
    /// fired before the resignation.
    async fn election_term(&mut self) {
        let id = format!("p{}", self.process);
        let limit = self.bounds.op_timeout;
        let participation = match bounded(
            limit,
            ELECTION,
            self.conn.new_leader_participation(ELECTION, &id),
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("joining the election failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        self.record(Kind::Invoke, F::Lead, ELECTION, Value::Null);
        // Waiting may take a dead leader's lease; allow a few call bounds.
        let won = match bounded(limit * 3, ELECTION, participation.wait_for_leadership()).await {
            Ok(leading) => (participation.fence().await)
                .map(|fence| (leading, fence))
                .ok_or_else(|| "leading without a fence".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (leading, fence) = match won {
            Ok(won) => won,
            Err(why) => {
                tracing::debug!("campaign failed: {why}");
                // A dropped campaign withdraws its entry: this one never led.
                self.record(Kind::Fail, F::Lead, ELECTION, json!(why));
                let _ = stop_within(limit, participation.as_ref()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        self.record(Kind::Ok, F::Lead, ELECTION, json!(fence.token()));
        for _ in 0..INCREMENTS_PER_TERM {
            if leading.is_cancelled() {
                break;
            }
            self.fenced_increment(&fence, ELECTION_COUNTER).await;
        }
        self.record(Kind::Invoke, F::Resign, ELECTION, json!(fence.token()));
        let lost = leading.is_cancelled();
        let stopped = stop_within(limit, participation.as_ref()).await;
        match stopped {
            Ok(()) => self.record(Kind::Ok, F::Resign, ELECTION, json!(lost)),
            Err(e) => self.record(Kind::Info, F::Resign, ELECTION, json!(e.to_string())),
        }
    }

    /// Lock, fenced increment, unlock.
    async fn lock_round(&mut self) {
        self.record(Kind::Invoke, F::Lock, LOCK_DIR, Value::Null);
        // Waiting for the lock may take a holder's lease; allow a few call bounds.
        let wait = self.bounds.op_timeout * 3;
        let guard = match bounded(wait, LOCK_DIR, self.conn.lock(LOCK_DIR, "topo-chaos")).await {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!("lock failed: {e}");
                // An abandoned acquisition leaves no entry: the lock was not taken.
                self.record(Kind::Fail, F::Lock, LOCK_DIR, json!(e.to_string()));
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        let token = guard.fencing_token();
        self.record(Kind::Ok, F::Lock, LOCK_DIR, json!(token));
        self.fenced_increment(&guard.fence(), COUNTER).await;
        let limit = self.bounds.op_timeout;
        self.record(Kind::Invoke, F::Unlock, LOCK_DIR, json!(token));
        match bounded(limit, LOCK_DIR, guard.unlock()).await {
            Ok(()) => self.record(Kind::Ok, F::Unlock, LOCK_DIR, Value::Null),
            Err(e) => self.record(Kind::Fail, F::Unlock, LOCK_DIR, json!(e.to_string())),
        }
    }
}

/// Writes the initial values (recorded as the harness's writes, so the checker's model
/// starts from them), retrying while a just-started cluster settles (bounded by `limit`).
///
/// # Errors
/// The last error when the writes do not succeed within `limit`.
pub async fn setup(
    conn: &dyn Conn,
    workload: Workload,
    rec: &Recorder,
    limit: Duration,
) -> Result<()> {
    let start = Instant::now();
    for key in workload.keys() {
        loop {
            rec.record(HARNESS_PROCESS, Kind::Invoke, F::Write, key, json!(0));
            match bounded(Duration::from_secs(5), key, conn.update(key, b"0", None)).await {
                Ok(_) => {
                    rec.record(HARNESS_PROCESS, Kind::Ok, F::Write, key, Value::Null);
                    break;
                }
                Err(e) if start.elapsed() < limit => {
                    // Not recorded as a write: the harness's own retries are not part of
                    // the workload, but an attempt may have landed, so it is `info`.
                    rec.record(
                        HARNESS_PROCESS,
                        Kind::Info,
                        F::Write,
                        key,
                        json!(e.to_string()),
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => {
                    rec.record(
                        HARNESS_PROCESS,
                        Kind::Info,
                        F::Write,
                        key,
                        json!(e.to_string()),
                    );
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Reads every key of `workload` once the faults are healed, retrying (bounded by `limit`)
/// until each read succeeds; these reads give the final values the checks compare with.
///
/// # Errors
/// The last error when a key cannot be read within `limit`.
pub async fn final_reads(
    conn: &dyn Conn,
    workload: Workload,
    rec: &Recorder,
    limit: Duration,
) -> Result<()> {
    let start = Instant::now();
    for key in workload.keys() {
        loop {
            rec.record(HARNESS_PROCESS, Kind::Invoke, F::Read, key, Value::Null);
            match bounded(Duration::from_secs(5), key, conn.get(key)).await {
                Ok((bytes, _)) => {
                    rec.record(HARNESS_PROCESS, Kind::Ok, F::Read, key, parse(&bytes));
                    break;
                }
                Err(e) => {
                    rec.record(
                        HARNESS_PROCESS,
                        Kind::Fail,
                        F::Read,
                        key,
                        json!(e.to_string()),
                    );
                    if start.elapsed() > limit {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
    Ok(())
}
