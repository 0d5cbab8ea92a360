//! One open database file: its connections, the schema, and the change poller that feeds
//! watches and lock waiters.
//!
//! Every write runs in an `IMMEDIATE` transaction that bumps a store-wide version counter
//! and appends a row to the `changes` log. One poller task per opened store reads new log
//! rows (after a cheap `PRAGMA data_version` check) and fans them out to this process's
//! watchers, so a change made by any process reaches every process's watchers.
//!
//! The poller sleeps until the file changes. After each commit a writer rewrites one byte of
//! a wake-up file beside the database (`<file>-wake`); the operating system's file
//! notifications (inotify on Linux) on the database's folder wake every process's poller,
//! so a change reaches another process's watchers in well under a millisecond without a
//! busy loop. (The `-wal` file's own notifications come too early: a commit finishes by
//! updating the shared-memory index, which sends none.) A slow timer stays as a fallback
//! for file systems that send no notifications; without notifications the poll interval is
//! the configured one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::Notify;
use topo_core::{path, RecursiveChange, Result, TopoError, Version, WatchData, WatchSender};

use crate::error::convert;

/// How many change-log rows are kept; older ones are trimmed (watchers that fall behind
/// re-read, as after a compaction).
const CHANGE_LOG_KEEP: i64 = 10_000;
/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired leases are swept.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// The poller's timer while file notifications wake it: only a safety net for a missed
/// notification (and the lease sweep's clock).
const NOTIFIED_POLL: Duration = SWEEP_EVERY;

/// Milliseconds since the Unix epoch (lease clocks are the host's wall clock, shared by
/// every process on the host).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The smallest string above every string with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('version', 0);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    expires_at INTEGER NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    value BLOB
);
";

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| convert(e, &path.display().to_string()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .and_then(|_| conn.pragma_update(None, "journal_mode", "WAL"))
        .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
        .map_err(|e| convert(e, &path.display().to_string()))?;
    Ok(conn)
}

/// A write in progress: the transaction and the changes it made, for the log.
pub(crate) struct Write<'a> {
    tx: Transaction<'a>,
}

impl Write<'_> {
    /// The next store-wide version.
    pub(crate) fn next_version(&self) -> rusqlite::Result<i64> {
        self.tx
            .prepare_cached(
                "UPDATE counters SET value = value + 1 WHERE name = 'version' RETURNING value",
            )?
            .query_row([], |r| r.get(0))
    }

    /// The version and lease of `key`, if present.
    pub(crate) fn current(&self, key: &str) -> rusqlite::Result<Option<(i64, Option<i64>)>> {
        self.tx
            .query_row("SELECT version, lease FROM kv WHERE key = ?1", [key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
    }

    /// Writes `key` with a new version and logs it.
    pub(crate) fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> rusqlite::Result<i64> {
        let v = self.next_version()?;
        self.put_at(key, value, v, lease)?;
        Ok(v)
    }

    /// Writes `key` at a version already taken with [`Write::next_version`], and logs it.
    pub(crate) fn put_at(
        &self,
        key: &str,
        value: &[u8],
        v: i64,
        lease: Option<i64>,
    ) -> rusqlite::Result<()> {
        self.tx.prepare_cached("INSERT INTO kv (key, value, version, lease) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version, lease = excluded.lease")?.execute(params![key, value, v, lease],
        )?;
        self.log(key, v, Some(value))
    }

    /// Deletes `key` and logs it.
    pub(crate) fn delete(&self, key: &str) -> rusqlite::Result<bool> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM kv WHERE key = ?1")?
            .execute([key])?;
        if n > 0 {
            let v = self.next_version()?;
            self.log(key, v, None)?;
        }
        Ok(n > 0)
    }

    fn log(&self, key: &str, version: i64, value: Option<&[u8]>) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached("INSERT INTO changes (key, version, value) VALUES (?1, ?2, ?3)")?
            .execute(params![key, version, value])?;
        let seq = self.tx.last_insert_rowid();
        if seq % 1000 == 0 {
            self.tx
                .prepare_cached("DELETE FROM changes WHERE seq <= ?1")?
                .execute([seq - CHANGE_LOG_KEEP])?;
        }
        Ok(())
    }

    /// True when the lock entry `key` with `version` exists and its lease is alive.
    pub(crate) fn lock_alive(&self, key: &str, version: i64) -> rusqlite::Result<bool> {
        lock_alive(&self.tx, key, version)
    }

    /// The transaction, for statements this type does not wrap.
    pub(crate) fn tx(&self) -> &Transaction<'_> {
        &self.tx
    }

    /// Deletes every entry of an expired lease, and the leases.
    pub(crate) fn sweep_expired(&self) -> rusqlite::Result<usize> {
        let now = now_ms();
        let keys: Vec<String> = {
            let mut stmt = self.tx.prepare(
                "SELECT key FROM kv WHERE lease IN (SELECT id FROM leases WHERE expires_at <= ?1)",
            )?;
            let rows = stmt.query_map([now], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for k in &keys {
            self.delete(k)?;
        }
        self.tx
            .execute("DELETE FROM leases WHERE expires_at <= ?1", [now])?;
        Ok(keys.len())
    }
}

/// A live entry: key, value (empty unless asked for), version, and whether it is ephemeral.
pub(crate) type Row = (String, Vec<u8>, i64, bool);

/// Live entries (files, and lock entries whose lease has not expired) with `prefix`.
pub(crate) fn live_rows(
    c: &Connection,
    prefix: &str,
    with_values: bool,
) -> rusqlite::Result<Vec<Row>> {
    let sql = if with_values {
        "SELECT key, value, version, lease FROM kv WHERE key >= ?1 AND key < ?2
         AND (lease IS NULL OR lease IN (SELECT id FROM leases WHERE expires_at > ?3)) ORDER BY key"
    } else {
        "SELECT key, x'', version, lease FROM kv WHERE key >= ?1 AND key < ?2
         AND (lease IS NULL OR lease IN (SELECT id FROM leases WHERE expires_at > ?3)) ORDER BY key"
    };
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(params![prefix, prefix_end(prefix), now_ms()], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get::<_, Option<i64>>(3)?.is_some(),
        ))
    })?;
    rows.collect()
}

/// True when the lock entry `key` with `version` exists and its lease is alive.
pub(crate) fn lock_alive(conn: &Connection, key: &str, version: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM kv JOIN leases ON kv.lease = leases.id
         WHERE kv.key = ?1 AND kv.version = ?2 AND leases.expires_at > ?3",
    )?
    .query_row(params![key, version, now_ms()], |_| Ok(()))
    .optional()
    .map(|r| r.is_some())
}

struct FileWatcher {
    key: String,
    /// Changes at or below this version were already part of the initial value.
    seen: i64,
    tx: WatchSender<(), WatchData>,
}

struct PrefixWatcher {
    prefix: String,
    root: String,
    seen: i64,
    /// The version of every key the watcher was told exists, so that a re-read after a
    /// trim of the change log can tell it what changed, deletions included.
    known: HashMap<String, i64>,
    tx: WatchSender<String, RecursiveChange>,
}

impl PrefixWatcher {
    /// Tells the watcher about `key` (None: deleted); false when its stream is gone.
    fn tell(&mut self, key: &str, data: Option<WatchData>) -> bool {
        match &data {
            Some(d) => self.known.insert(key.to_string(), d.version.raw()),
            None => self.known.remove(key),
        };
        let path = path::strip_root(&self.root, key).unwrap_or_else(|| key.to_string());
        self.tx.send(path.clone(), RecursiveChange { path, data })
    }
}

#[derive(Default)]
pub(crate) struct Watchers {
    files: Vec<FileWatcher>,
    prefixes: Vec<PrefixWatcher>,
}

/// One open database file.
pub(crate) struct Store {
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: Arc<Writer>,
    watchers: Mutex<Watchers>,
    /// Woken after every batch of changes the poller sees.
    pub(crate) changed: Notify,
    pub(crate) poll_interval: Duration,
    /// Woken when the file may have changed (a file notification, or a commit of ours).
    file_changed: Arc<Notify>,
    /// Keeps the file notifications coming; `None` when the system cannot send them.
    _file_watcher: Option<notify::RecommendedWatcher>,
}

/// The write connection, and how its commits are announced.
struct Writer {
    conn: Mutex<Connection>,
    /// The wake-up file rewritten after each commit; `None` when it cannot be opened.
    wake_file: Option<std::fs::File>,
    /// This store's poller, woken at once by a commit of ours.
    file_changed: Arc<Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Connections and watcher lists stay consistent across a panic in another thread
    // (SQLite rolls back an unfinished transaction), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (creating when needed) the database at `path` and starts its poller.
    pub(crate) fn open(path: &Path, options: &crate::LocalOptions) -> Result<Arc<Store>> {
        let poll_interval = options.poll_interval;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                TopoError::backend(
                    "local",
                    format!("cannot create the folder of {}", path.display()),
                    e,
                )
            })?;
        }
        let writer = open_connection(path)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| convert(e, &path.display().to_string()))?;
        let reader = open_connection(path)?;
        let poller = open_connection(path)?;
        let start_seq: i64 = poller
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| {
                r.get(0)
            })
            .map_err(|e| convert(e, &path.display().to_string()))?;
        let wake_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(wake_path(path))
            .map_err(|e| tracing::debug!(path = %path.display(), "no wake-up file: {e}"))
            .ok();
        let file_changed = Arc::new(Notify::new());
        let file_watcher = options
            .file_notifications
            .then(|| watch_file(path, file_changed.clone()))
            .flatten();
        let poll_interval = if file_watcher.is_some() {
            NOTIFIED_POLL.max(poll_interval)
        } else {
            poll_interval
        };
        let store = Arc::new(Store {
            path: path.to_path_buf(),
            reader: Mutex::new(reader),
            writer: Arc::new(Writer {
                conn: Mutex::new(writer),
                wake_file,
                file_changed: file_changed.clone(),
            }),
            watchers: Mutex::new(Watchers::default()),
            changed: Notify::new(),
            poll_interval,
            file_changed,
            _file_watcher: file_watcher,
        });
        tokio::spawn(poll(Arc::downgrade(&store), poller, start_seq));
        Ok(store)
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the read connection.
    pub(crate) fn read<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        f(&lock(&self.reader)).map_err(|e| convert(e, what))
    }

    /// Runs `f` in an IMMEDIATE transaction on the write connection, off the async
    /// runtime (a write may wait for another process's lock). `f`'s own errors pass
    /// through; SQLite errors are converted naming `what`.
    pub(crate) async fn write<T, F>(&self, what: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Write<'_>) -> Result<T> + Send + 'static,
    {
        // On a multi-threaded runtime the write runs right here, with the runtime told that
        // this thread may block (no hand-off to another thread); elsewhere it moves to the
        // blocking pool.
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(|| self.writer.run(what, f));
        }
        let writer = self.writer.clone();
        let what = what.to_string();
        tokio::task::spawn_blocking(move || writer.run(&what, f))
            .await
            .map_err(|e| TopoError::backend("local", "write task failed", e))?
    }

    /// As [`Store::write`], on the calling thread (for `Drop` cleanups).
    pub(crate) fn write_now<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Write<'_>) -> Result<T>,
    ) -> Result<T> {
        self.writer.run(what, f)
    }

    /// Holds the watcher lists: a watch registers under this guard after reading its
    /// initial value, so the poller cannot slip a change between the two.
    pub(crate) fn watchers_guard(&self) -> MutexGuard<'_, Watchers> {
        lock(&self.watchers)
    }

    /// The highest version handed out so far.
    pub(crate) fn current_version(&self) -> Result<i64> {
        self.read("the version counter", |c| {
            c.query_row(
                "SELECT value FROM counters WHERE name = 'version'",
                [],
                |r| r.get(0),
            )
        })
    }
}

impl Watchers {
    /// Adds a file watcher while the guard is held (see [`Store::watchers_guard`]).
    pub(crate) fn add_file(&mut self, key: &str, seen: i64, tx: WatchSender<(), WatchData>) {
        self.files.push(FileWatcher {
            key: key.to_string(),
            seen,
            tx,
        });
    }

    /// Adds a recursive watcher while the guard is held.
    pub(crate) fn add_prefix(
        &mut self,
        prefix: &str,
        root: &str,
        seen: i64,
        known: HashMap<String, i64>,
        tx: WatchSender<String, RecursiveChange>,
    ) {
        self.prefixes.push(PrefixWatcher {
            prefix: prefix.to_string(),
            root: root.to_string(),
            seen,
            known,
            tx,
        });
    }

    fn dispatch(&mut self, key: &str, version: i64, value: Option<&[u8]>) {
        let data = value.map(|v| WatchData {
            contents: v.to_vec(),
            version: Version::new(version),
        });
        self.files.retain_mut(|w| {
            if w.key != key || version <= w.seen {
                return !w.tx.is_closed();
            }
            w.seen = version;
            match &data {
                Some(d) => w.tx.send((), d.clone()),
                None => {
                    w.tx.fail(TopoError::NoNode(key.to_string()));
                    false
                }
            }
        });
        self.prefixes.retain_mut(|w| {
            if !key.starts_with(&w.prefix) || version <= w.seen {
                return !w.tx.is_closed();
            }
            w.tell(key, data.clone())
        });
    }

    /// After the change log was trimmed past what the poller read: re-reads every watched
    /// key and subtree in the poller's snapshot `c` (whose highest version is `version`) and
    /// tells each watcher what differs from what it knows, deletions included.
    fn reread(&mut self, c: &Connection, version: i64) -> rusqlite::Result<()> {
        let mut files = Vec::with_capacity(self.files.len());
        for w in std::mem::take(&mut self.files) {
            let row: Option<(i64, Vec<u8>)> = c
                .query_row(
                    "SELECT version, value FROM kv WHERE key = ?1",
                    [&w.key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            files.push((w, row));
        }
        for (mut w, row) in files {
            let keep = match row {
                Some((v, contents)) if v > w.seen => w.tx.send(
                    (),
                    WatchData {
                        contents,
                        version: Version::new(v),
                    },
                ),
                Some(_) => !w.tx.is_closed(),
                None => {
                    w.tx.fail(TopoError::NoNode(w.key.clone()));
                    false
                }
            };
            w.seen = w.seen.max(version);
            if keep {
                self.files.push(w);
            }
        }
        let mut trees = Vec::with_capacity(self.prefixes.len());
        for w in &self.prefixes {
            trees.push(live_rows(c, &w.prefix, true)?);
        }
        let mut prefixes = Vec::with_capacity(self.prefixes.len());
        for (mut w, rows) in std::mem::take(&mut self.prefixes).into_iter().zip(trees) {
            let now: HashMap<String, i64> =
                rows.iter().map(|(k, _, v, _)| (k.clone(), *v)).collect();
            let gone: Vec<String> = w
                .known
                .keys()
                .filter(|k| !now.contains_key(*k))
                .cloned()
                .collect();
            let mut keep = true;
            for (k, contents, v, _) in rows {
                if keep && w.known.get(&k) != Some(&v) {
                    keep = w.tell(
                        &k,
                        Some(WatchData {
                            contents,
                            version: Version::new(v),
                        }),
                    );
                }
            }
            for k in gone {
                keep = keep && w.tell(&k, None);
            }
            w.seen = w.seen.max(version);
            if keep {
                prefixes.push(w);
            }
        }
        self.prefixes = prefixes;
        Ok(())
    }
}

impl Writer {
    /// Runs `f` in an IMMEDIATE transaction and, once it committed, tells every process's
    /// poller (also when the caller's future is gone by then; a rolled-back write wakes
    /// nobody).
    fn run<T>(&self, what: &str, f: impl FnOnce(&Write<'_>) -> Result<T>) -> Result<T> {
        let out = {
            let mut conn = lock(&self.conn);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| convert(e, what))?;
            let w = Write { tx };
            let out = f(&w)?;
            w.tx.commit().map_err(|e| convert(e, what))?;
            out
        };
        self.committed();
        Ok(out)
    }

    /// Tells every process's poller that a commit is complete.
    fn committed(&self) {
        use std::os::unix::fs::FileExt;
        if let Some(f) = &self.wake_file {
            if let Err(e) = f.write_at(&[0], 0) {
                tracing::debug!("writing the wake-up file: {e}");
            }
        }
        // Our own watchers need not wait for the file notification.
        self.file_changed.notify_one();
    }
}

/// The poller: reads new change-log rows and fans them out; sweeps expired leases.
async fn poll(store: Weak<Store>, conn: Connection, mut last_seq: i64) {
    let mut last_data_version: i64 = -1;
    let mut last_sweep = std::time::Instant::now();
    loop {
        let Some(s) = store.upgrade() else { return };
        let interval = s.poll_interval;
        if let Err(e) = poll_once(&s, &conn, &mut last_seq, &mut last_data_version) {
            tracing::warn!(path = %s.path.display(), "reading the change log: {e}");
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = std::time::Instant::now();
            let expired: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM leases WHERE expires_at <= ?1)",
                    [now_ms()],
                    |r| r.get(0),
                )
                .unwrap_or(false);
            if expired {
                if let Err(e) = s
                    .write("expired leases", |w| {
                        w.sweep_expired().map_err(|e| convert(e, "expired leases"))
                    })
                    .await
                {
                    tracing::debug!("sweeping expired leases: {e}");
                }
            }
            // Lock waiters also re-check on a timer for expiries that log no change.
            s.changed.notify_waiters();
        }
        let woken = s.file_changed.clone();
        drop(s);
        tokio::select! {
            _ = woken.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// The wake-up file of the database at `path`.
fn wake_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-wake");
    PathBuf::from(name)
}

/// Asks the operating system to call `changed` whenever the wake-up file of the database
/// at `path` is written (after each commit, by any process). `None` (polling only) when it
/// cannot. The database's own files are not listened to: their writes come before the
/// commit is visible, several per commit, and would only wake the poller for nothing.
fn watch_file(path: &Path, changed: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let wake = wake_path(path);
    let name = wake.file_name()?.to_os_string();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(name.as_os_str()));
        if ours && matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) {
            changed.notify_one();
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(path = %path.display(), "no file notifications, polling: {e}");
            return None;
        }
    };
    match watcher.watch(&dir, RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::debug!(path = %path.display(), "no file notifications, polling: {e}");
            None
        }
    }
}

fn poll_once(
    store: &Store,
    conn: &Connection,
    last_seq: &mut i64,
    last_data_version: &mut i64,
) -> rusqlite::Result<()> {
    let dv: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
    if dv == *last_data_version {
        return Ok(());
    }
    *last_data_version = dv;
    // One read transaction, so the oldest row, the new rows and any re-read are one
    // snapshot: a trim between two separate reads could otherwise hide rows for good.
    let tx = conn.unchecked_transaction()?;
    let min_seq: i64 = tx.query_row("SELECT COALESCE(MIN(seq), 0) FROM changes", [], |r| {
        r.get(0)
    })?;
    let rows: Vec<(i64, String, i64, Option<Vec<u8>>)> = tx
        .prepare_cached("SELECT seq, key, version, value FROM changes WHERE seq > ?1 ORDER BY seq")?
        .query_map([*last_seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let truncated = min_seq > *last_seq + 1 && *last_seq > 0;
    let mut watchers = lock(&store.watchers);
    if truncated {
        // The log was trimmed past what we read: like an etcd compaction. Re-read every
        // watched key and subtree; the rows of this snapshot are then already accounted for.
        tracing::info!(path = %store.path.display(), "change log trimmed past the last read; re-reading watched keys");
        let version: i64 = tx.query_row(
            "SELECT value FROM counters WHERE name = 'version'",
            [],
            |r| r.get(0),
        )?;
        watchers.reread(&tx, version)?;
    }
    for (seq, key, version, value) in &rows {
        watchers.dispatch(key, *version, value.as_deref());
        *last_seq = *seq;
    }
    drop(watchers);
    drop(tx);
    if !rows.is_empty() || truncated {
        store.changed.notify_waiters();
    }
    Ok(())
}
