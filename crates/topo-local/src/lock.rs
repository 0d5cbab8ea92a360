//! Locks: entries `<dir>/locks/<sequence>` tied to leases, queued by sequence.
//!
//! The entry is written with a lease row (`expires_at`) that a background task of the
//! owning process renews every third of the TTL, from the moment the entry exists until it
//! is released: while waiting and while held, whatever the caller's future does. An entry
//! whose lease expired does not count as a holder or waiter anywhere (and the pollers sweep
//! it), so a dead process's lock frees itself within its TTL.
//!
//! Every entry is a [`LocalLock`] from the moment its write commits, even when the caller
//! that asked for it is gone by then (a dropped future on a current-thread runtime, whose
//! write finishes on the blocking pool): dropping it removes the entry. Each connection
//! keeps a [`Life`]: its entries, so `close()` removes them, and its pending clean-ups,
//! which `close()` waits for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use topo_core::lock::{self, LockKind, LockOptions};
use topo_core::{path, Fence, LockDescriptor, LockGuard, Result, TopoError, WatchStream};

use crate::error::convert;
use crate::store::{lock_alive, now_ms, prefix_end, Store};
use crate::LocalConn;

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX / 4)
        .max(1)
}

/// The lowest-sequence live lock entry with `prefix`.
fn first_live(c: &rusqlite::Connection, prefix: &str) -> rusqlite::Result<Option<(String, i64)>> {
    c.prepare_cached(
        "SELECT kv.key, kv.version FROM kv JOIN leases ON kv.lease = leases.id
         WHERE kv.key >= ?1 AND kv.key < ?2 AND leases.expires_at > ?3 ORDER BY kv.version LIMIT 1",
    )?
    .query_row(params![prefix, prefix_end(prefix), now_ms()], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// True when anything live exists with `prefix`.
fn any_live(c: &rusqlite::Connection, prefix: &str) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM kv WHERE key >= ?1 AND key < ?2
         AND (lease IS NULL OR lease IN (SELECT id FROM leases WHERE expires_at > ?3)))",
    )?
    .query_row(params![prefix, prefix_end(prefix), now_ms()], |r| r.get(0))
}

/// An entry of a connection, as `close()` needs it.
#[derive(Debug)]
struct HeldEntry {
    key: String,
    version: i64,
    lease: i64,
    keepalive: CancellationToken,
    state: Arc<LeaseState>,
}

/// What `close()` of a connection ends and waits for.
#[derive(Debug, Default)]
pub(crate) struct Life {
    /// Cancelled by `close()`: ends watches and lock waits.
    closed: CancellationToken,
    /// Clean-ups (and entry writes) in flight.
    cleanups: TaskTracker,
    /// The connection's lock entries (queued or held), by id.
    entries: Mutex<HashMap<u64, HeldEntry>>,
    next_id: AtomicU64,
}

impl Life {
    /// True once `close()` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// `stream`, ended with `Interrupted` by `close()`.
    pub(crate) fn watch_ends_on_close<T>(&self, stream: WatchStream<T>) -> WatchStream<T> {
        stream.cancelled_with(&self.closed)
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, HeldEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes a connection: its lock waits end, its entries are removed (held locks released),
/// its watches end with `Interrupted`, and every clean-up still running finishes first.
pub(crate) async fn close(store: &Arc<Store>, life: &Life) {
    life.closed.cancel();
    let entries: Vec<HeldEntry> = life.entries().drain().map(|(_, e)| e).collect();
    for e in &entries {
        e.keepalive.cancel();
        e.state.lost.store(true, Ordering::Relaxed);
    }
    if !entries.is_empty() {
        let store = store.clone();
        let removed = life.cleanups.spawn_blocking(move || {
            for e in entries {
                if let Err(err) = LocalLock::remove(&store, &e.key, e.version, e.lease) {
                    tracing::warn!(key = e.key, "releasing a lock at close: {err}");
                }
            }
        });
        if let Err(e) = removed.await {
            tracing::warn!("releasing locks at close: {e}");
        }
    }
    life.cleanups.close();
    life.cleanups.wait().await;
}

/// Queues for the lock on `dir` and waits for it.
pub(crate) async fn acquire(
    conn: &LocalConn,
    dir: &str,
    contents: &str,
    opts: LockOptions,
) -> Result<LockGuard> {
    let (kind, ttl) = (opts.kind, opts.ttl_or(conn.options.lock_ttl));
    let dir_key = conn.key(dir)?;
    let rel_dir = path::normalize(dir)?;
    let dir_prefix = path::dir_prefix(&conn.root, dir)?;
    let locks_prefix = format!("{}/locks/", dir_key.trim_end_matches('/'));
    let store = conn.store.clone();
    let mut guard = {
        let contents = contents.as_bytes().to_vec();
        let locks_prefix = locks_prefix.clone();
        let rel_dir = rel_dir.clone();
        let (store, life) = (store.clone(), conn.life.clone());
        // Counted as a pending clean-up until the guard reaches this future: should the
        // future be dropped first, the guard is dropped (and removes the entry) wherever
        // the write finishes, and close() waits for that.
        let in_flight = conn.life.cleanups.token();
        conn.store
            .write(&dir_key.clone(), move |w| {
                let sql = |e| convert(e, &dir_key);
                if kind != LockKind::Named && !any_live(w.tx(), &dir_prefix).map_err(sql)? {
                    return Err(TopoError::NoNode(dir_key));
                }
                if kind == LockKind::Try
                    && first_live(w.tx(), &locks_prefix).map_err(sql)?.is_some()
                {
                    return Err(lock::lock_exists(&rel_dir));
                }
                w.tx()
                    .execute(
                        "INSERT INTO leases (expires_at, pid) VALUES (?1, ?2)",
                        params![now_ms() + ttl_ms(ttl), std::process::id()],
                    )
                    .map_err(sql)?;
                let lease = w.tx().last_insert_rowid();
                let version = w.next_version().map_err(sql)?;
                let key = format!("{locks_prefix}{version}");
                w.put_at(&key, &contents, version, Some(lease))
                    .map_err(sql)?;
                // From here on, dropping the guard (also while still waiting, or before
                // the caller got it) removes the entry.
                let mut guard = LocalLock::new(store, life, rel_dir, key, version, lease, ttl);
                guard.in_flight = Some(in_flight);
                Ok(guard)
            })
            .await?
    };
    loop {
        let notified = store.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if conn.life.is_closed() {
            // The guard's drop counts its clean-up before its in-flight token goes, so a
            // close() that came while the entry was being written waits for its removal
            // (its entry may have joined the list after close() emptied it).
            return Err(TopoError::Interrupted(format!(
                "{rel_dir}: connection closed"
            )));
        }
        // Not closed yet: a later close() finds the entry in its list and removes it.
        guard.in_flight = None;
        if guard.state.lost.load(Ordering::Relaxed) {
            return Err(TopoError::LockLost(rel_dir));
        }
        let first = store.read(&locks_prefix, |c| first_live(c, &locks_prefix))?;
        match first {
            Some((k, _)) if k == guard.key => break,
            Some(_) => {}
            None => return Err(TopoError::LockLost(rel_dir)),
        }
        // Other processes' releases arrive through the poller; expiries show on its timer;
        // close() is checked above.
        tokio::select! {
            _ = notified => {}
            _ = conn.life.closed.cancelled() => {}
        }
    }
    Ok(Box::new(guard))
}

#[derive(Debug, Default)]
struct LeaseState {
    lost: AtomicBool,
}

/// A lock entry of this process: queued or held.
#[derive(Debug)]
pub(crate) struct LocalLock {
    store: Arc<Store>,
    life: Arc<Life>,
    /// This entry's id in `life`.
    id: u64,
    /// Set while the entry's write is on its way to the caller.
    in_flight: Option<tokio_util::task::task_tracker::TaskTrackerToken>,
    dir: String,
    key: String,
    version: i64,
    lease: i64,
    state: Arc<LeaseState>,
    keepalive: CancellationToken,
    released: bool,
}

impl LocalLock {
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: Arc<Store>,
        life: Arc<Life>,
        dir: String,
        key: String,
        version: i64,
        lease: i64,
        ttl: Duration,
    ) -> Self {
        let state = Arc::new(LeaseState::default());
        let keepalive = CancellationToken::new();
        tokio::spawn(keep_alive(
            store.clone(),
            lease,
            ttl,
            state.clone(),
            keepalive.clone(),
        ));
        let id = life.next_id.fetch_add(1, Ordering::Relaxed);
        life.entries().insert(
            id,
            HeldEntry {
                key: key.clone(),
                version,
                lease,
                keepalive: keepalive.clone(),
                state: state.clone(),
            },
        );
        LocalLock {
            store,
            life,
            id,
            in_flight: None,
            dir,
            key,
            version,
            lease,
            state,
            keepalive,
            released: false,
        }
    }

    /// Deletes the entry and its lease; true when the entry was still alive.
    fn remove(store: &Store, key: &str, version: i64, lease: i64) -> Result<bool> {
        let key = key.to_string();
        store.write_now(&key.clone(), move |w| {
            let sql = |e| convert(e, &key);
            let alive = w.lock_alive(&key, version).map_err(sql)?;
            if w.current(&key)
                .map_err(sql)?
                .is_some_and(|(v, _)| v == version)
            {
                w.delete(&key).map_err(sql)?;
            }
            w.tx()
                .execute("DELETE FROM leases WHERE id = ?1", [lease])
                .map_err(sql)?;
            Ok(alive)
        })
    }
}

async fn keep_alive(
    store: Arc<Store>,
    lease: i64,
    ttl: Duration,
    state: Arc<LeaseState>,
    stop: CancellationToken,
) {
    let period = (ttl / 3).max(Duration::from_millis(50));
    let mut last_ok = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let renewed = store
            .write("lease renewal", move |w| {
                w.tx()
                    .execute(
                        "UPDATE leases SET expires_at = ?1 WHERE id = ?2 AND expires_at > ?3",
                        params![now_ms() + ttl_ms(ttl), lease, now_ms()],
                    )
                    .map_err(|e| convert(e, "lease renewal"))
            })
            .await;
        match renewed {
            Ok(1) => last_ok = std::time::Instant::now(),
            Ok(_) => {
                tracing::warn!(lease, "lock lease expired before it could be renewed");
                state.lost.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) if last_ok.elapsed() < ttl => {
                tracing::debug!(lease, "renewing a lock lease: {e}")
            }
            Err(e) => {
                tracing::warn!(
                    lease,
                    "lock lease lost: renewals failed for a whole TTL: {e}"
                );
                state.lost.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

#[async_trait]
impl LockDescriptor for LocalLock {
    fn dir(&self) -> &str {
        &self.dir
    }
    fn fencing_token(&self) -> u64 {
        self.version as u64
    }
    fn fence(&self) -> Fence {
        Fence::new(self.dir.clone(), self.key.clone(), self.version as u64)
    }
    async fn check(&self) -> Result<()> {
        let alive = !self.state.lost.load(Ordering::Relaxed)
            && self
                .store
                .read(&self.key, |c| lock_alive(c, &self.key, self.version))?;
        if alive {
            Ok(())
        } else {
            Err(TopoError::LockLost(self.dir.clone()))
        }
    }
    async fn unlock(mut self: Box<Self>) -> Result<()> {
        self.released = true;
        self.keepalive.cancel();
        let (store, key, version, lease) = (
            self.store.clone(),
            self.key.clone(),
            self.version,
            self.lease,
        );
        // Tracked like the other clean-ups (and counted before the entry leaves the list
        // close() works through): an unlock whose caller gave up waiting (a timeout) still
        // finishes before close() of the connection returns.
        let removal = self
            .life
            .cleanups
            .spawn_blocking(move || LocalLock::remove(&store, &key, version, lease));
        self.life.entries().remove(&self.id);
        let alive = removal
            .await
            .map_err(|e| TopoError::backend("local", "unlock task failed", e))??;
        if alive {
            Ok(())
        } else {
            Err(TopoError::LockLost(self.dir.clone()))
        }
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // close() waits for this clean-up: counted before the entry leaves the list that
        // close() removes itself, so no instant has it in neither.
        let pending = self.life.cleanups.token();
        self.keepalive.cancel();
        self.life.entries().remove(&self.id);
        let (store, key, version, lease) = (
            self.store.clone(),
            self.key.clone(),
            self.version,
            self.lease,
        );
        let cleanup = move || {
            if let Err(e) = LocalLock::remove(&store, &key, version, lease) {
                tracing::warn!(key, "releasing a dropped lock: {e}");
            }
            drop(pending);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(cleanup);
            }
            Err(_) => cleanup(),
        }
    }
}
