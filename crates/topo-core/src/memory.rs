//! The in-memory backend: the reference implementation of [`Conn`].
//!
//! A [`MemoryStore`] is one flat, ordered key space shared by every connection made from it
//! (like one etcd server); each [`MemoryConn`] sees it under its own root. Directories are
//! implicit in the keys, so a directory disappears with its last file. Versions come from
//! one store-wide counter. Locks and election proposals are ephemeral entries under
//! `<dir>/locks/<sequence>`, queued by sequence, exactly like the etcd layout; unlike
//! Vitess's memorytopo, `try_lock` really fails at once while the lock is held, and locks
//! carry fencing tokens. Watch channels coalesce to the latest value per key, and `close()`
//! releases the connection's locks, ends its watches and waits with `Interrupted`, and
//! makes later calls fail with `Interrupted`.
//!
//! [`MemoryFactory`] makes connections by server address (one store per address) and wraps
//! each in a [`FaultConn`] so tests can inject errors; the address [`UNREACHABLE_ADDRESS`]
//! gives a connection whose every call hangs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::conn::{Conn, Factory, LeaderParticipation, LockDescriptor, LockGuard};
use crate::election::SequenceCampaign;
use crate::error::{Result, TopoError};
use crate::lock::{self, LockKind, LockOptions};
use crate::path;
use crate::types::{dir_entries, DirEntry, Fence, KvInfo, RecursiveChange, Version, WatchData};
use crate::watch::{WatchSender, WatchStream};
use crate::wrap::{FaultConn, Faults};

/// The server address whose connections hang on every call (Vitess's
/// `memorytopo.UnreachableServerAddr`).
pub const UNREACHABLE_ADDRESS: &str = "unreachable";

const BACKEND: &str = "memory";

#[derive(Debug)]
struct Entry {
    contents: Vec<u8>,
    version: i64,
    ephemeral: bool,
}

#[derive(Debug)]
struct FileWatcher {
    key: String,
    tx: WatchSender<(), WatchData>,
}

#[derive(Debug)]
struct PrefixWatcher {
    prefix: String,
    root: String,
    tx: WatchSender<String, RecursiveChange>,
}

#[derive(Debug)]
struct State {
    next_version: i64,
    entries: BTreeMap<String, Entry>,
    file_watchers: Vec<FileWatcher>,
    prefix_watchers: Vec<PrefixWatcher>,
}

impl State {
    fn bump(&mut self) -> i64 {
        self.next_version += 1;
        self.next_version
    }

    fn keys_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Writes `key` and tells its watchers.
    fn put(&mut self, key: &str, contents: &[u8], ephemeral: bool) -> i64 {
        let version = self.bump();
        self.entries.insert(
            key.to_string(),
            Entry {
                contents: contents.to_vec(),
                version,
                ephemeral,
            },
        );
        let data = WatchData {
            contents: contents.to_vec(),
            version: Version::new(version),
        };
        self.file_watchers
            .retain(|w| w.key != key || w.tx.send((), data.clone()));
        self.tell_prefix_watchers(key, Some(data));
        version
    }

    /// Removes `key` and tells its watchers (file watches end with `NoNode`).
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.file_watchers.retain(|w| {
            if w.key == key {
                w.tx.fail(TopoError::NoNode(key.to_string()));
                false
            } else {
                true
            }
        });
        self.tell_prefix_watchers(key, None);
        Some(entry)
    }

    /// Sends the change of `key` to the recursive watchers it falls under (coalesced per
    /// path), forgetting watchers whose stream is gone.
    fn tell_prefix_watchers(&mut self, key: &str, data: Option<WatchData>) {
        self.prefix_watchers.retain(|w| {
            if !key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            let path = path::strip_root(&w.root, key).unwrap_or_else(|| key.to_string());
            w.tx.send(
                path.clone(),
                RecursiveChange {
                    path,
                    data: data.clone(),
                },
            )
        });
    }

    fn check_fence(&self, fence: &Fence) -> Result<()> {
        match self.entries.get(fence.key()) {
            Some(e) if e.ephemeral && e.version as u64 == fence.token() => Ok(()),
            _ => Err(TopoError::LockLost(fence.dir().to_string())),
        }
    }

    /// The lowest-sequence lock entry under `locks_prefix`, if any.
    fn first_lock<'a>(&'a self, locks_prefix: &'a str) -> Option<(&'a String, &'a Entry)> {
        self.keys_under(locks_prefix)
            .filter(|(_, e)| e.ephemeral)
            .min_by_key(|(_, e)| e.version)
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every change, for lock waiters and election observers.
    changed: Notify,
}

/// One in-memory key space, shared by every connection made from it.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store. Versions start at a random value (as Vitess's memorytopo does), so no
    /// caller can come to rely on particular numbers.
    pub fn new() -> Self {
        let start = rand::random_range(1..(1i64 << 40));
        MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    next_version: start,
                    entries: BTreeMap::new(),
                    file_watchers: Vec::new(),
                    prefix_watchers: Vec::new(),
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// A connection to this store under `root`.
    pub fn conn(&self, root: &str) -> Arc<dyn Conn> {
        Arc::new(self.memory_conn(root))
    }

    /// A concrete connection to this store under `root`.
    pub fn memory_conn(&self, root: &str) -> MemoryConn {
        MemoryConn {
            store: self.clone(),
            root: path::clean(&format!("/{root}")),
            life: Arc::default(),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written (every mutation
        // is a single insert or remove), so a poisoned lock is safe to keep using.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.shared.changed.notify_waiters();
    }
}

/// What `close()` ends: the connection's watches (children of `closed`) and held locks.
#[derive(Debug, Default)]
struct Life {
    closed: CancellationToken,
    /// Held lock entries of this connection: key and version.
    held: Mutex<HashMap<String, i64>>,
}

impl Life {
    fn held(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection to a [`MemoryStore`] under a root.
#[derive(Debug, Clone)]
pub struct MemoryConn {
    store: MemoryStore,
    root: String,
    life: Arc<Life>,
}

impl MemoryConn {
    fn key(&self, rel: &str) -> Result<String> {
        if self.life.closed.is_cancelled() {
            return Err(TopoError::Interrupted(format!("{rel}: connection closed")));
        }
        path::join(&self.root, rel)
    }

    fn write(
        &self,
        fence: Option<&Fence>,
        path: &str,
        contents: &[u8],
        mode: WriteMode<'_>,
    ) -> Result<Version> {
        let key = self.key(path)?;
        let version = {
            let mut st = self.store.lock_state();
            if let Some(f) = fence {
                st.check_fence(f)?;
            }
            match (mode, st.entries.get(&key)) {
                (WriteMode::Create, Some(_)) => return Err(TopoError::NodeExists(key)),
                (WriteMode::Update(Some(_)), None) => return Err(TopoError::NoNode(key)),
                (WriteMode::Update(Some(v)), Some(e)) if e.version != v.raw() => {
                    return Err(TopoError::BadVersion(key))
                }
                _ => {}
            }
            st.put(&key, contents, false)
        };
        self.store.notify();
        Ok(Version::new(version))
    }

    fn remove(&self, fence: Option<&Fence>, path: &str, version: Option<&Version>) -> Result<()> {
        let key = self.key(path)?;
        {
            let mut st = self.store.lock_state();
            if let Some(f) = fence {
                st.check_fence(f)?;
            }
            match (st.entries.get(&key), version) {
                (None, _) => return Err(TopoError::NoNode(key)),
                (Some(e), Some(v)) if e.version != v.raw() => {
                    return Err(TopoError::BadVersion(key))
                }
                _ => {}
            }
            st.remove(&key);
        }
        self.store.notify();
        Ok(())
    }

    /// Queues for the lock on `dir` and waits for it.
    async fn acquire(&self, dir: &str, contents: &str, kind: LockKind) -> Result<LockGuard> {
        let dir_key = self.key(dir)?;
        let locks_prefix = format!("{}/", lock::locks_dir(&dir_key));
        let (key, token) = {
            let mut st = self.store.lock_state();
            if kind != LockKind::Named {
                let dir_prefix = path::dir_prefix(&self.root, dir)?;
                if st.keys_under(&dir_prefix).next().is_none() {
                    return Err(TopoError::NoNode(dir_key));
                }
            }
            if kind == LockKind::Try && st.first_lock(&locks_prefix).is_some() {
                return Err(lock::lock_exists(dir));
            }
            let seq = st.next_version + 1;
            let key = format!("{locks_prefix}{seq}");
            let token = st.put(&key, contents.as_bytes(), true);
            (key, token)
        };
        self.store.notify();
        // Until the lock is granted, dropping this future must withdraw the entry.
        let mut pending = PendingEntry {
            store: self.store.clone(),
            key: Some(key.clone()),
        };
        loop {
            let notified = self.store.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.life.closed.is_cancelled() {
                return Err(TopoError::Interrupted(format!("{dir}: connection closed")));
            }
            {
                let st = self.store.lock_state();
                if !st.entries.contains_key(&key) {
                    pending.key = None;
                    return Err(TopoError::LockLost(dir.to_string()));
                }
                if st.first_lock(&locks_prefix).is_some_and(|(k, _)| *k == key) {
                    break;
                }
            }
            // Closing the connection wakes the wait too (checked above).
            tokio::select! {
                _ = notified => {}
                _ = self.life.closed.cancelled() => {}
            }
        }
        let rel_dir = path::normalize(dir)?;
        pending.key = None;
        self.life.held().insert(key.clone(), token);
        let guard = MemoryLock {
            life: self.life.clone(),
            store: self.store.clone(),
            dir: rel_dir,
            key,
            token: token as u64,
            released: false,
        };
        // A close() since the check above may have emptied `held` before this lock joined
        // it: then the lock must not outlive the connection (dropping the guard releases it).
        if self.life.closed.is_cancelled() {
            return Err(TopoError::Interrupted(format!("{dir}: connection closed")));
        }
        Ok(Box::new(guard))
    }
}

#[derive(Clone, Copy, Debug)]
enum WriteMode<'a> {
    Create,
    Update(Option<&'a Version>),
}

/// Removes a queued lock entry when its acquisition is abandoned.
struct PendingEntry {
    store: MemoryStore,
    key: Option<String>,
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.store.lock_state().remove(&key);
            self.store.notify();
        }
    }
}

/// A held memory lock.
#[derive(Debug)]
struct MemoryLock {
    life: Arc<Life>,
    store: MemoryStore,
    dir: String,
    key: String,
    token: u64,
    released: bool,
}

impl MemoryLock {
    fn release(&mut self) -> Result<()> {
        self.released = true;
        self.life.held().remove(&self.key);
        let removed = {
            let mut st = self.store.lock_state();
            match st.entries.get(&self.key) {
                Some(e) if e.version as u64 == self.token => st.remove(&self.key).is_some(),
                _ => false,
            }
        };
        self.store.notify();
        if removed {
            Ok(())
        } else {
            Err(TopoError::LockLost(self.dir.clone()))
        }
    }
}

#[async_trait]
impl LockDescriptor for MemoryLock {
    fn dir(&self) -> &str {
        &self.dir
    }
    fn fencing_token(&self) -> u64 {
        self.token
    }
    fn fence(&self) -> Fence {
        Fence::new(self.dir.clone(), self.key.clone(), self.token)
    }
    async fn check(&self) -> Result<()> {
        self.store.lock_state().check_fence(&self.fence())
    }
    async fn unlock(mut self: Box<Self>) -> Result<()> {
        self.release()
    }
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.release();
        }
    }
}

#[async_trait]
impl Conn for MemoryConn {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        let dir_key = self.key(dir)?;
        let prefix = path::dir_prefix(&self.root, dir)?;
        let st = self.store.lock_state();
        let entries = dir_entries(
            &prefix,
            st.keys_under(&prefix)
                .map(|(k, e)| (k.as_str(), e.ephemeral)),
            full,
        );
        if entries.is_empty() {
            return Err(TopoError::NoNode(dir_key));
        }
        Ok(entries)
    }

    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        self.write(None, path, contents, WriteMode::Create)
    }

    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.write(None, path, contents, WriteMode::Update(version))
    }

    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        let key = self.key(path)?;
        let st = self.store.lock_state();
        match st.entries.get(&key) {
            Some(e) => Ok((e.contents.clone(), Version::new(e.version))),
            None => Err(TopoError::NoNode(key)),
        }
    }

    async fn get_version(&self, path: &str, _version: &Version) -> Result<Vec<u8>> {
        self.key(path)?;
        Err(TopoError::NoImplementation(
            "GetVersion is not supported by the memory topology".into(),
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        let mut key_prefix = self.key(prefix)?;
        if prefix.ends_with('/') && !key_prefix.ends_with('/') {
            key_prefix.push('/');
        }
        let st = self.store.lock_state();
        let out: Vec<KvInfo> = st
            .keys_under(&key_prefix)
            .map(|(k, e)| KvInfo {
                key: path::strip_root(&self.root, k).unwrap_or_else(|| k.clone()),
                value: e.contents.clone(),
                version: Version::new(e.version),
            })
            .collect();
        if out.is_empty() {
            return Err(TopoError::NoNode(key_prefix));
        }
        Ok(out)
    }

    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        self.remove(None, path, version)
    }

    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        self.write(Some(fence), path, contents, WriteMode::Create)
    }

    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.write(Some(fence), path, contents, WriteMode::Update(version))
    }

    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        self.remove(Some(fence), path, version)
    }

    async fn lock_with(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard> {
        // Entries live as long as the process: there is no lease, so no TTL.
        self.acquire(dir, contents, opts.kind).await
    }

    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)> {
        let key = self.key(path)?;
        let (tx, stream) = WatchStream::coalescing(path);
        let current = {
            let mut st = self.store.lock_state();
            let current = match st.entries.get(&key) {
                Some(e) => WatchData {
                    contents: e.contents.clone(),
                    version: Version::new(e.version),
                },
                None => return Err(TopoError::NoNode(key)),
            };
            st.file_watchers.push(FileWatcher { key, tx });
            current
        };
        Ok((current, stream.cancelled_with(&self.life.closed)))
    }

    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
        let prefix = path::dir_prefix(&self.root, path)?;
        self.key(path)?;
        let (tx, stream) = WatchStream::coalescing(path);
        let initial = {
            let mut st = self.store.lock_state();
            let initial = st
                .keys_under(&prefix)
                .map(|(k, e)| RecursiveChange {
                    path: path::strip_root(&self.root, k).unwrap_or_else(|| k.clone()),
                    data: Some(WatchData {
                        contents: e.contents.clone(),
                        version: Version::new(e.version),
                    }),
                })
                .collect();
            st.prefix_watchers.push(PrefixWatcher {
                prefix,
                root: self.root.clone(),
                tx,
            });
            initial
        };
        Ok((initial, stream.cancelled_with(&self.life.closed)))
    }

    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>> {
        self.key(&format!("elections/{name}"))?;
        Ok(Box::new(SequenceCampaign::participant(
            Arc::new(self.clone()),
            name,
            id,
            None,
        )?))
    }

    async fn close(&self) {
        // Ends watches and queued lock waits (they remove their own entries).
        self.life.closed.cancel();
        let held: Vec<(String, i64)> = self.life.held().drain().collect();
        {
            let mut st = self.store.lock_state();
            for (key, version) in held {
                if st.entries.get(&key).is_some_and(|e| e.version == version) {
                    st.remove(&key);
                }
            }
        }
        self.store.notify();
    }
}

/// Makes memory connections by server address: one [`MemoryStore`] per address, each
/// connection wrapped in a [`FaultConn`] sharing the factory's [`Faults`].
#[derive(Debug, Default)]
pub struct MemoryFactory {
    stores: Mutex<HashMap<String, MemoryStore>>,
    faults: Arc<Faults>,
}

impl MemoryFactory {
    /// A factory with no stores yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The fault hooks applied to every connection this factory makes.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The store behind `server_address` (created on first use).
    pub fn store(&self, server_address: &str) -> MemoryStore {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(server_address.to_string())
            .or_default()
            .clone()
    }
}

#[async_trait]
impl Factory for MemoryFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, _cell: &str, server_address: &str, root: &str) -> Result<Arc<dyn Conn>> {
        let inner = self.store(server_address).conn(root);
        let faults = if server_address == UNREACHABLE_ADDRESS {
            let f = Faults::new();
            f.set_unreachable(true);
            f
        } else {
            self.faults.clone()
        };
        Ok(Arc::new(FaultConn::new(inner, faults)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::ConnFactory;
    use std::time::Duration;

    /// Every connection opened by the suite shares one store, like clients of one server.
    pub(crate) struct Suite(MemoryStore);

    #[async_trait]
    impl ConnFactory for Suite {
        async fn open(&self, root: &str) -> Result<Arc<dyn Conn>> {
            Ok(self.0.conn(root))
        }
    }

    pub(crate) async fn factory() -> Option<Suite> {
        Some(Suite(MemoryStore::new()))
    }

    mod memory {
        crate::conformance_tests!(memory, crate::memory::tests::factory);
    }

    #[tokio::test]
    async fn factory_shares_stores_by_address_and_hangs_when_unreachable() {
        let f = MemoryFactory::new();
        let a = f.create("global", "mem", "/global").await.unwrap();
        let b = f.create("zone1", "mem", "/global").await.unwrap();
        a.create("/x", b"1").await.unwrap();
        assert_eq!(b.get("/x").await.unwrap().0, b"1");
        let other = f.create("zone2", "other", "/global").await.unwrap();
        assert!(other.get("/x").await.unwrap_err().is_no_node());
        let dead = f.create("zone3", UNREACHABLE_ADDRESS, "/z").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(50), dead.get("/x")).await;
        assert!(r.is_err());
        f.faults()
            .add_error(crate::wrap::Op::Get, "^/x$", TopoError::Timeout("x".into()))
            .unwrap();
        assert!(a.get("/x").await.unwrap_err().is(crate::ErrorKind::Timeout));
    }

    #[tokio::test]
    async fn closed_connection_refuses_calls() {
        let conn = MemoryStore::new().conn("/r");
        conn.close().await;
        assert!(conn
            .get("/x")
            .await
            .unwrap_err()
            .is(crate::ErrorKind::Interrupted));
        assert!(conn.create("/x", b"").await.is_err());
    }

    /// Watchers that never read while 100,000 changes happen hold at most one unread item
    /// per file, and still end at the final values.
    #[tokio::test]
    async fn unread_watches_stay_bounded() {
        use futures::StreamExt;
        let conn = MemoryStore::new().conn("/r");
        for f in 0..10 {
            conn.create(&format!("/d/{f}"), b"0").await.unwrap();
        }
        let (_, mut file) = conn.watch("/d/0").await.unwrap();
        let (_, mut tree) = conn.watch_recursive("/d").await.unwrap();
        for i in 0..100_000u32 {
            conn.update(&format!("/d/{}", i % 10), i.to_string().as_bytes(), None)
                .await
                .unwrap();
        }
        assert_eq!(file.queued(), Some(1));
        assert_eq!(tree.queued(), Some(10));
        let last = file.next().await.unwrap().unwrap();
        assert_eq!(last.contents, b"99990");
        let mut finals = BTreeMap::new();
        for _ in 0..10 {
            let c = tree.next().await.unwrap().unwrap();
            finals.insert(c.path, c.data.unwrap().contents);
        }
        let want: BTreeMap<String, Vec<u8>> = (0..10u32)
            .map(|f| (format!("/d/{f}"), (99_990 + f).to_string().into_bytes()))
            .collect();
        assert_eq!(finals, want);
    }
}
