//! # topo-local
//!
//! The embedded topology backend, registered as `local`: one SQLite file (WAL mode), safe
//! for many processes on one host, with no server to run. It is the `topo` CLI's default.
//!
//! - Server address = the database file's path (created, with its folders, on first use);
//!   root = key prefix, so the global cell and the cells can share one file under
//!   different roots.
//! - Keys are stored flat, exactly as etcd stores them (`/vitess/global/keyspaces/ks/
//!   Keyspace`); directories are implied. Versions come from one counter kept in the file;
//!   compare-and-set runs in transactions.
//! - Watches across processes: every write appends to a change log in the same
//!   transaction; one poller per process reads it and feeds that process's watchers.
//! - Locks and elections are entries under `<dir>/locks/<sequence>` tied to leases that the
//!   owning process keeps alive; when the process dies its leases expire and its entries
//!   stop counting (and are swept). The fencing token is the sequence. Named locks
//!   carry Vitess's 24 h TTL, election entries the lock TTL (a killed leader is replaced
//!   within it).
//! - Watch channels coalesce (the latest value per key), so a reader that falls behind
//!   holds bounded memory; after the change log is trimmed past a slow poller, watched
//!   keys and subtrees are re-read and the differences sent, deletions included.
//! - `close()` removes the connection's lock entries, ends its watches and lock waits with
//!   `Interrupted` and waits for pending clean-ups; later calls fail with `Interrupted`.
//!
//! ## Layout
//! `store` (connections, schema, change poller), `lock` (locks and leases), `error` (the
//! one conversion from SQLite errors).

mod error;
mod lock;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use topo_core::election::SequenceCampaign;
use topo_core::{
    path, Conn, DirEntry, Factory, Fence, KvInfo, LeaderParticipation, LockGuard, LockOptions,
    RecursiveChange, Result, TopoError, ValueLimit, Version, WatchData, WatchStream,
};

use crate::error::convert;
use crate::lock::Life;
use crate::store::{live_rows, Row, Store};

/// The database file the `topo` CLI uses when no topology is configured.
pub const DEFAULT_PATH: &str = "toposphere.db";

const BACKEND: &str = "local";

/// Settings of the local backend.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Lease time-to-live of locks and election entries (30 s, like Vitess's etcd leases).
    pub lock_ttl: Duration,
    /// How often each process reads the change log when the system sends no file
    /// notifications (watch delay is at most about this).
    pub poll_interval: Duration,
    /// Wake the change-log reader on file notifications (inotify) instead of polling
    /// alone; with them a change reaches other processes' watchers in well under a
    /// millisecond.
    pub file_notifications: bool,
    /// The largest value stored. By default the smallest of etcd's and ZooKeeper's default
    /// limits, so what fits here can be copied to either.
    pub max_value_bytes: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            lock_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_millis(10),
            file_notifications: true,
            max_value_bytes: ValueLimit::smallest_default(MAX_VALUE_SETTING).max,
        }
    }
}

/// Makes `local` connections. Connections to the same file share one open store.
#[derive(Debug, Default)]
pub struct LocalFactory {
    options: LocalOptions,
    stores: Mutex<HashMap<PathBuf, Arc<Store>>>,
}

impl LocalFactory {
    /// A factory with `options`.
    pub fn new(options: LocalOptions) -> Self {
        LocalFactory {
            options,
            stores: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Factory for LocalFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, _cell: &str, server_address: &str, root: &str) -> Result<Arc<dyn Conn>> {
        let path = PathBuf::from(server_address);
        let store = {
            let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            match stores.get(&path) {
                Some(s) => s.clone(),
                None => {
                    let s = Store::open(&path, &self.options)?;
                    stores.insert(path.clone(), s.clone());
                    s
                }
            }
        };
        Ok(Arc::new(LocalConn::with_store(
            store,
            root,
            self.options.clone(),
        )))
    }
}

/// A connection to a local database file under a root.
#[derive(Debug, Clone)]
pub struct LocalConn {
    store: Arc<Store>,
    root: String,
    options: LocalOptions,
    life: Arc<Life>,
}

/// The setting that raises the local store's value limit.
const MAX_VALUE_SETTING: &str = "--topo-local-max-value-bytes";

/// How a write treats the current entry.
#[derive(Clone, Copy)]
enum Mode {
    Create,
    Update(Option<i64>),
}

impl LocalConn {
    fn limit(&self) -> ValueLimit {
        ValueLimit {
            max: self.options.max_value_bytes,
            setting: MAX_VALUE_SETTING,
        }
    }

    /// Opens the database at `path` (creating it) and connects under `root`. Every call
    /// opens the file anew: the connection is independent of any other in this process
    /// (its own poller), as another process's would be.
    ///
    /// # Errors
    /// When the file or its folder cannot be created or opened.
    pub fn open(path: &Path, root: &str, options: LocalOptions) -> Result<Self> {
        let store = Store::open(path, &options)?;
        Ok(Self::with_store(store, root, options))
    }

    fn with_store(store: Arc<Store>, root: &str, options: LocalOptions) -> Self {
        LocalConn {
            store,
            root: path::clean(&format!("/{root}")),
            options,
            life: Arc::default(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    fn key(&self, rel: &str) -> Result<String> {
        if self.life.is_closed() {
            return Err(TopoError::Interrupted(format!("{rel}: connection closed")));
        }
        path::join(&self.root, rel)
    }

    fn rel(&self, key: &str) -> String {
        path::strip_root(&self.root, key).unwrap_or_else(|| key.to_string())
    }

    async fn write_file(
        &self,
        fence: Option<&Fence>,
        rel: &str,
        contents: &[u8],
        mode: Mode,
    ) -> Result<Version> {
        let key = self.key(rel)?;
        self.limit().check(rel, contents.len())?;
        let contents = contents.to_vec();
        let fence = fence.cloned();
        self.store
            .write(&key.clone(), move |w| {
                let sql = |e| convert(e, &key);
                if let Some(f) = &fence {
                    if !w.lock_alive(f.key(), f.token() as i64).map_err(sql)? {
                        return Err(TopoError::LockLost(f.dir().to_string()));
                    }
                }
                let current = w.current(&key).map_err(sql)?;
                match (mode, current) {
                    (Mode::Create, Some(_)) => return Err(TopoError::NodeExists(key)),
                    (Mode::Update(Some(_)), None) => return Err(TopoError::NoNode(key)),
                    (Mode::Update(Some(v)), Some((cur, _))) if v != cur => {
                        return Err(TopoError::BadVersion(key))
                    }
                    _ => {}
                }
                w.put(&key, &contents, None).map(Version::new).map_err(sql)
            })
            .await
    }

    async fn delete_file(
        &self,
        fence: Option<&Fence>,
        rel: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        let key = self.key(rel)?;
        let fence = fence.cloned();
        let version = version.map(|v| v.raw());
        self.store
            .write(&key.clone(), move |w| {
                let sql = |e| convert(e, &key);
                if let Some(f) = &fence {
                    if !w.lock_alive(f.key(), f.token() as i64).map_err(sql)? {
                        return Err(TopoError::LockLost(f.dir().to_string()));
                    }
                }
                match (w.current(&key).map_err(sql)?, version) {
                    (None, _) => Err(TopoError::NoNode(key)),
                    (Some((cur, _)), Some(v)) if cur != v => Err(TopoError::BadVersion(key)),
                    _ => w.delete(&key).map(|_| ()).map_err(sql),
                }
            })
            .await
    }

    fn get_key(&self, key: &str) -> Result<(Vec<u8>, Version)> {
        let row = self.store.read(key, |c| {
            c.prepare_cached("SELECT value, version FROM kv WHERE key = ?1")?
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })?;
        match row {
            Some((value, version)) => Ok((value, Version::new(version))),
            None => Err(TopoError::NoNode(key.to_string())),
        }
    }

    /// Live entries (files, and lock entries whose lease has not expired) with `prefix`.
    fn scan(&self, prefix: &str, with_values: bool) -> Result<Vec<Row>> {
        self.store
            .read(prefix, |c| live_rows(c, prefix, with_values))
    }
}

#[async_trait]
impl Conn for LocalConn {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        let dir_key = self.key(dir)?;
        let prefix = path::dir_prefix(&self.root, dir)?;
        let rows = self.scan(&prefix, false)?;
        let entries = topo_core::dir_entries(
            &prefix,
            rows.iter().map(|(k, _, _, eph)| (k.as_str(), *eph)),
            full,
        );
        if entries.is_empty() {
            return Err(TopoError::NoNode(dir_key));
        }
        Ok(entries)
    }

    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        self.write_file(None, path, contents, Mode::Create).await
    }

    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.write_file(None, path, contents, Mode::Update(version.map(|v| v.raw())))
            .await
    }

    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        let key = self.key(path)?;
        self.get_key(&key)
    }

    async fn get_version(&self, path: &str, _version: &Version) -> Result<Vec<u8>> {
        self.key(path)?;
        Err(TopoError::NoImplementation(
            "GetVersion is not supported by the local topology (it keeps no history)".into(),
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        let mut key_prefix = self.key(prefix)?;
        if prefix.ends_with('/') && !key_prefix.ends_with('/') {
            key_prefix.push('/');
        }
        let items: Vec<KvInfo> = self
            .scan(&key_prefix, true)?
            .into_iter()
            .map(|(k, value, version, _)| KvInfo {
                key: self.rel(&k),
                value,
                version: Version::new(version),
            })
            .collect();
        if items.is_empty() {
            return Err(TopoError::NoNode(key_prefix));
        }
        Ok(items)
    }

    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        self.delete_file(None, path, version).await
    }

    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        self.write_file(Some(fence), path, contents, Mode::Create)
            .await
    }

    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.write_file(
            Some(fence),
            path,
            contents,
            Mode::Update(version.map(|v| v.raw())),
        )
        .await
    }

    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        self.delete_file(Some(fence), path, version).await
    }

    async fn lock_with(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard> {
        lock::acquire(self, dir, contents, opts).await
    }

    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)> {
        let key = self.key(path)?;
        let (tx, stream) = WatchStream::coalescing(path);
        let current = {
            let mut watchers = self.store.watchers_guard();
            let (contents, version) = self.get_key(&key)?;
            watchers.add_file(&key, version.raw(), tx);
            WatchData { contents, version }
        };
        Ok((current, self.life.watch_ends_on_close(stream)))
    }

    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
        self.key(path)?;
        let prefix = path::dir_prefix(&self.root, path)?;
        let (tx, stream) = WatchStream::coalescing(path);
        let initial = {
            let mut watchers = self.store.watchers_guard();
            let seen = self.store.current_version()?;
            let rows = self.scan(&prefix, true)?;
            let known = rows.iter().map(|(k, _, v, _)| (k.clone(), *v)).collect();
            let initial: Vec<RecursiveChange> = rows
                .into_iter()
                .map(|(k, value, version, _)| RecursiveChange {
                    path: self.rel(&k),
                    data: Some(WatchData {
                        contents: value,
                        version: Version::new(version),
                    }),
                })
                .collect();
            watchers.add_prefix(&prefix, &self.root, seen, known, tx);
            initial
        };
        Ok((initial, self.life.watch_ends_on_close(stream)))
    }

    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>> {
        self.key(&format!("elections/{name}"))?;
        // The election's entries carry the lock TTL (not a named lock's day) and are
        // renewed while this process lives, so a killed leader is replaced within the TTL.
        Ok(Box::new(SequenceCampaign::participant(
            Arc::new(self.clone()),
            name,
            id,
            Some(self.options.lock_ttl),
        )?))
    }

    async fn close(&self) {
        lock::close(&self.store, &self.life).await;
    }

    fn value_limit(&self) -> Option<ValueLimit> {
        Some(self.limit())
    }
}
