//! # topo-zk
//!
//! The ZooKeeper topology backend, registered as `zk2`, with Vitess's layout: directories
//! are real znodes with empty data, files carry the record bytes, versions are
//! `stat.version`, locks are ephemeral sequential znodes `<dir>/locks/<seq>` and election
//! proposals ephemeral sequential znodes `elections/<name>/<seq>`.
//!
//! Better behaved than Vitess's zk2topo: the client keeps its session across dropped
//! connections (it reconnects inside the session instead of starting a new one); only when
//! the session expires do lock guards report the loss, watches end with an error, and a new
//! session is made. Recursive watches (persistent recursive watches) and prefix lists (a
//! bounded walk of the tree) work instead of answering `NoImplementation`; so does
//! wait-for-new-leader. An auth file that is missing or malformed fails at open.
//!
//! Server address: `host:port,host:port`, optionally followed by `|host:port,…` naming
//! observers that serve the read-only global connection.
//!
//! ## Layout
//! `lib` (factory, session, files and directories), `lock` (locks and elections), `watch`,
//! `error`.

mod error;
mod lock;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use topo_core::{
    path, Conn, DirEntry, DirEntryType, Factory, Fence, KvInfo, LeaderParticipation, LockGuard,
    RecursiveChange, Result, TopoError, Version, WatchData, WatchStream,
};
use zookeeper_client::{Acl, Acls, AuthId, Client, CreateMode, CreateOptions, Permission};

use crate::error::convert;

pub(crate) const BACKEND: &str = "zk2";

/// Vitess's directory permissions: everything (31).
static DIR_ACL: LazyLock<[Acl; 1]> =
    LazyLock::new(|| [Acl::new(Permission::ALL, AuthId::anyone())]);
/// Vitess's file permissions: ADMIN | READ | WRITE (19).
static FILE_ACL: LazyLock<[Acl; 1]> = LazyLock::new(|| {
    [Acl::new(
        Permission::ADMIN | Permission::READ | Permission::WRITE,
        AuthId::anyone(),
    )]
});

/// A leaf znode found by a tree walk: key, data, version.
type Leaf = (String, Vec<u8>, i32);

/// How many znodes a tree walk reads at once.
const WALK_CONCURRENCY: usize = 32;

/// Settings of the ZooKeeper backend.
#[derive(Clone, Debug)]
pub struct ZkOptions {
    /// Session timeout (Vitess's `--topo-zk-base-timeout`, 30 s).
    pub session_timeout: Duration,
    /// Bound on every call (Vitess's `--remote-operation-timeout`, 15 s).
    pub remote_operation_timeout: Duration,
    /// `--topo-zk-auth-file`: a file holding `<scheme>:<auth>`, e.g. `digest:user:pass`.
    pub auth_file: Option<PathBuf>,
    /// `--topo-zk-acl`: create nodes readable and writable only by their creator (needs
    /// an auth file) instead of world:anyone.
    pub restrictive_acl: bool,
}

impl Default for ZkOptions {
    fn default() -> Self {
        ZkOptions {
            session_timeout: Duration::from_secs(30),
            remote_operation_timeout: Duration::from_secs(15),
            auth_file: None,
            restrictive_acl: false,
        }
    }
}

/// Reads an auth file: `<scheme>:<auth>`.
///
/// # Errors
/// `InvalidArgument` naming the file when it cannot be read or is malformed.
fn read_auth(path: &std::path::Path) -> Result<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TopoError::invalid(format!("--topo-zk-auth-file {}: {e}", path.display())))?;
    let text = text.trim();
    match text.split_once(':') {
        Some((scheme, auth)) if !scheme.is_empty() && !auth.is_empty() => {
            Ok((scheme.to_string(), auth.as_bytes().to_vec()))
        }
        _ => Err(TopoError::invalid(format!(
            "--topo-zk-auth-file {}: expected <scheme>:<auth>, e.g. digest:user:password",
            path.display()
        ))),
    }
}

/// Splits `a:1,b:2|c:3` into the main servers and the observers.
pub fn split_observers(server_address: &str) -> (&str, Option<&str>) {
    match server_address.split_once('|') {
        Some((main, obs)) => (main, Some(obs)),
        None => (server_address, None),
    }
}

/// Makes `zk2` connections.
#[derive(Debug, Default)]
pub struct ZkFactory {
    options: ZkOptions,
}

impl ZkFactory {
    /// A factory with `options`.
    pub fn new(options: ZkOptions) -> Self {
        ZkFactory { options }
    }
}

#[async_trait]
impl Factory for ZkFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn has_global_read_only_cell(&self, server_address: &str, _root: &str) -> bool {
        split_observers(server_address).1.is_some()
    }

    async fn create(&self, cell: &str, server_address: &str, root: &str) -> Result<Arc<dyn Conn>> {
        let (main, observers) = split_observers(server_address);
        let addr = match (cell, observers) {
            ("global-read-only", Some(obs)) => obs,
            _ => main,
        };
        Ok(Arc::new(
            ZkConn::connect(addr, root, self.options.clone()).await?,
        ))
    }
}

/// The ZooKeeper session a connection uses, replaced only after it expired.
#[derive(Debug)]
struct Session {
    addr: String,
    options: ZkOptions,
    auth: Option<(String, Vec<u8>)>,
    /// The current client; a plain lock and an `Arc` keep the per-call cost to a
    /// reference-count increment.
    client: std::sync::RwLock<Arc<Client>>,
    /// Serialises making a new session.
    reconnect: tokio::sync::Mutex<()>,
}

impl Session {
    async fn connect(
        addr: &str,
        options: &ZkOptions,
        auth: &Option<(String, Vec<u8>)>,
    ) -> Result<Client> {
        let mut connector = Client::connector()
            .with_session_timeout(options.session_timeout)
            .with_connection_timeout(
                options
                    .remote_operation_timeout
                    .min(options.session_timeout),
            );
        if let Some((scheme, a)) = auth {
            connector = connector.with_auth(scheme, a);
        }
        match tokio::time::timeout(options.remote_operation_timeout, connector.connect(addr)).await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(convert(e, addr)),
            Err(_) => Err(TopoError::Timeout(format!(
                "connecting to ZooKeeper at {addr}"
            ))),
        }
    }

    /// The live client, making a new session when the current one has ended.
    async fn client(&self) -> Result<Arc<Client>> {
        let current = self.current();
        if !current.state().is_terminated() {
            return Ok(current);
        }
        let _one_at_a_time = self.reconnect.lock().await;
        let current = self.current();
        if !current.state().is_terminated() {
            return Ok(current);
        }
        tracing::warn!(addr = %self.addr, "ZooKeeper session ended; starting a new one");
        let fresh = Arc::new(Self::connect(&self.addr, &self.options, &self.auth).await?);
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    fn current(&self) -> Arc<Client> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A connection to ZooKeeper under a root.
#[derive(Clone, Debug)]
pub struct ZkConn {
    session: Arc<Session>,
    root: String,
    closed: Arc<AtomicBool>,
}

impl ZkConn {
    /// Connects to `server_address` (`host:port,…`) under `root`.
    ///
    /// # Errors
    /// `InvalidArgument` for an unreadable or malformed auth file, or a restrictive ACL
    /// without one; `Timeout` or `Backend` when no server answers.
    pub async fn connect(server_address: &str, root: &str, options: ZkOptions) -> Result<Self> {
        let auth = options.auth_file.as_deref().map(read_auth).transpose()?;
        if options.restrictive_acl && auth.is_none() {
            return Err(TopoError::invalid(
                "--topo-zk-acl needs --topo-zk-auth-file (the creator's identity)",
            ));
        }
        let client = Session::connect(server_address, &options, &auth).await?;
        Ok(ZkConn {
            session: Arc::new(Session {
                addr: server_address.to_string(),
                options,
                auth,
                client: std::sync::RwLock::new(Arc::new(client)),
                reconnect: tokio::sync::Mutex::new(()),
            }),
            root: path::clean(&format!("/{root}")),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    fn key(&self, rel: &str) -> Result<String> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TopoError::Interrupted(format!("{rel}: connection closed")));
        }
        path::join(&self.root, rel)
    }

    fn rel(&self, key: &str) -> String {
        path::strip_root(&self.root, key).unwrap_or_else(|| key.to_string())
    }

    pub(crate) fn options(&self) -> &ZkOptions {
        &self.session.options
    }

    /// The current session's client.
    pub(crate) async fn client(&self) -> Result<Arc<Client>> {
        self.session.client().await
    }

    /// Runs `op` under the remote-operation timeout, converting errors for `what`.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, zookeeper_client::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(self.options().remote_operation_timeout, op(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(convert(e, what)),
            Err(_) => Err(TopoError::Timeout(what.to_string())),
        }
    }

    pub(crate) fn acls(&self, dir: bool) -> Acls<'static> {
        if self.options().restrictive_acl {
            Acls::creator_all()
        } else if dir {
            Acls::new(&DIR_ACL[..])
        } else {
            Acls::new(&FILE_ACL[..])
        }
    }

    pub(crate) fn dir_options(&self) -> CreateOptions<'static> {
        CreateMode::Persistent.with_acls(self.acls(true))
    }

    fn file_options(&self) -> CreateOptions<'static> {
        CreateMode::Persistent.with_acls(self.acls(false))
    }

    /// Creates the directory znodes of `key`'s parent chain.
    pub(crate) async fn mkdirs(&self, key: &str) -> Result<()> {
        let opts = self.dir_options();
        match self
            .call(key, |c| async move { c.mkdir(key, &opts).await })
            .await
        {
            Err(e) if e.is(topo_core::ErrorKind::NodeExists) => Ok(()),
            other => other,
        }
    }

    /// Creates `key` with `contents`, its parents first when missing. With a fence the
    /// creation is a multi-op checking the lock node.
    async fn create_key(
        &self,
        fence: Option<&Fence>,
        key: &str,
        contents: &[u8],
    ) -> Result<Version> {
        for attempt in 0..2 {
            let r = match fence {
                None => {
                    let opts = self.file_options();
                    self.call(key, |c| async move {
                        c.create(key, contents, &opts).await.map(|(s, _)| s.version)
                    })
                    .await
                }
                Some(f) => {
                    let opts = self.file_options();
                    self.multi(f, key, |w| w.add_create(key, contents, &opts))
                        .await
                        .map(|_| 0)
                }
            };
            match r {
                Err(e) if e.is_no_node() && attempt == 0 => self.mkdirs(&path::parent(key)).await?,
                other => return other.map(|v| Version::new(i64::from(v))),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// A multi-op of a check that the lock node behind `fence` exists, then `add`'s write.
    async fn multi(
        &self,
        fence: &Fence,
        key: &str,
        add: impl FnOnce(
            &mut zookeeper_client::MultiWriter<'_>,
        ) -> std::result::Result<(), zookeeper_client::Error>,
    ) -> Result<Vec<zookeeper_client::MultiWriteResult>> {
        // The lock node must be the very one we created (its creation zxid is the token):
        // a node of the same name made after the queue directory was recreated is not ours.
        let fk = fence.key().to_string();
        let stat = self
            .call(&fk.clone(), |c| async move { c.check_stat(&fk).await })
            .await?;
        if stat.is_none_or(|s| s.czxid as u64 != fence.token()) {
            return Err(TopoError::LockLost(fence.dir().to_string()));
        }
        let client = self.client().await?;
        let mut w = client.new_multi_writer();
        // Lock nodes are never written after creation: version 0 means "still there", and
        // the multi-op makes that check atomic with the write.
        w.add_check_version(fence.key(), 0)
            .map_err(|e| convert(e, key))?;
        add(&mut w).map_err(|e| convert(e, key))?;
        match tokio::time::timeout(self.options().remote_operation_timeout, w.commit()).await {
            Err(_) => Err(TopoError::Timeout(key.to_string())),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(zookeeper_client::MultiWriteError::OperationFailed { index: 0, .. })) => {
                Err(TopoError::LockLost(fence.dir().to_string()))
            }
            Ok(Err(zookeeper_client::MultiWriteError::OperationFailed { source, .. })) => {
                Err(convert(source, key))
            }
            Ok(Err(zookeeper_client::MultiWriteError::RequestFailed { source })) => {
                Err(convert(source, key))
            }
        }
    }

    async fn update_key(
        &self,
        fence: Option<&Fence>,
        key: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        let expected = version.map(|v| v.raw() as i32);
        let r = match fence {
            None => {
                self.call(key, |c| async move {
                    c.set_data(key, contents, expected).await.map(|s| s.version)
                })
                .await
            }
            Some(f) => self
                .multi(f, key, |w| w.add_set_data(key, contents, expected))
                .await
                .map(|r| match r.get(1) {
                    Some(zookeeper_client::MultiWriteResult::SetData { stat }) => stat.version,
                    _ => 0,
                }),
        };
        match r {
            // An unconditional write of a missing file creates it (Vitess does the same).
            Err(e) if e.is_no_node() && version.is_none() => {
                self.create_key(fence, key, contents).await
            }
            other => other.map(|v| Version::new(i64::from(v))),
        }
    }

    async fn delete_key(
        &self,
        fence: Option<&Fence>,
        key: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        let expected = version.map(|v| v.raw() as i32);
        match fence {
            None => {
                self.call(key, |c| async move { c.delete(key, expected).await })
                    .await?
            }
            Some(f) => {
                self.multi(f, key, |w| w.add_delete(key, expected)).await?;
            }
        }
        self.remove_empty_parents(key).await;
        Ok(())
    }

    /// Deletes now-empty directory znodes above `key`, up to (not including) the root.
    pub(crate) async fn remove_empty_parents(&self, key: &str) {
        let mut dir = path::parent(key);
        while dir.len() > self.root.len() && dir.starts_with(&self.root) {
            let d = dir.clone();
            // Fails with NotEmpty (or NoNode) when someone else still uses it: stop there.
            if self
                .call(&d.clone(), |c| async move { c.delete(&d, None).await })
                .await
                .is_err()
            {
                return;
            }
            dir = path::parent(&dir);
        }
    }

    /// Every leaf znode at or below `key` (files), as (key, data, version).
    fn walk(&self, key: String) -> BoxFuture<'_, Result<Vec<Leaf>>> {
        async move {
            let k = key.clone();
            let children = match self
                .call(&k.clone(), |c| async move { c.list_children(&k).await })
                .await
            {
                Ok(c) => c,
                Err(e) if e.is_no_node() => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            if children.is_empty() {
                let k = key.clone();
                return match self
                    .call(&k.clone(), |c| async move { c.get_data(&k).await })
                    .await
                {
                    Ok((data, stat)) => Ok(vec![(key, data, stat.version)]),
                    Err(e) if e.is_no_node() => Ok(Vec::new()),
                    Err(e) => Err(e),
                };
            }
            let subs = futures::stream::iter(
                children
                    .into_iter()
                    .map(|c| self.walk(format!("{}/{c}", key.trim_end_matches('/')))),
            )
            .buffer_unordered(WALK_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
            let mut out = Vec::new();
            for s in subs {
                out.extend(s?);
            }
            Ok(out)
        }
        .boxed()
    }
}

use futures::StreamExt;

#[async_trait]
impl Conn for ZkConn {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        let key = self.key(dir)?;
        let k = key.clone();
        let mut children = self
            .call(&key, |c| async move { c.list_children(&k).await })
            .await?;
        children.sort();
        if !full {
            return Ok(children.into_iter().map(DirEntry::name_only).collect());
        }
        let mut out = Vec::with_capacity(children.len());
        for name in children {
            let child = format!("{}/{name}", key.trim_end_matches('/'));
            let stat = match self
                .call(
                    &child.clone(),
                    |c| async move { c.check_stat(&child).await },
                )
                .await?
            {
                Some(s) => s,
                None => continue,
            };
            let at_root = key == self.root || dir.trim_matches('/').is_empty();
            let (entry_type, ephemeral) = if at_root && name == "elections" {
                (DirEntryType::Directory, true)
            } else if stat.num_children == 0 {
                (DirEntryType::File, stat.ephemeral_owner != 0)
            } else {
                (DirEntryType::Directory, stat.ephemeral_owner != 0)
            };
            out.push(DirEntry {
                name,
                entry_type,
                ephemeral,
            });
        }
        Ok(out)
    }

    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        let key = self.key(path)?;
        self.create_key(None, &key, contents).await
    }

    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        let key = self.key(path)?;
        self.update_key(None, &key, contents, version).await
    }

    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        let key = self.key(path)?;
        let k = key.clone();
        let (data, stat) = self
            .call(&key, |c| async move { c.get_data(&k).await })
            .await?;
        Ok((data, Version::new(i64::from(stat.version))))
    }

    async fn get_version(&self, path: &str, _version: &Version) -> Result<Vec<u8>> {
        self.key(path)?;
        Err(TopoError::NoImplementation(
            "GetVersion is not supported by ZooKeeper (it keeps no history)".into(),
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        let full = self.key(prefix)?;
        let want = if prefix.ends_with('/') && !full.ends_with('/') {
            format!("{full}/")
        } else {
            full.clone()
        };
        // Walk from the deepest directory that every match lies under.
        let base = if want.ends_with('/') {
            want.trim_end_matches('/').to_string()
        } else {
            path::parent(&want)
        };
        let base = if base.is_empty() {
            "/".to_string()
        } else {
            base
        };
        let mut items: BTreeMap<String, (Vec<u8>, i32)> = BTreeMap::new();
        for (k, data, v) in self.walk(base).await? {
            if k.starts_with(&want) {
                items.insert(k, (data, v));
            }
        }
        if items.is_empty() {
            return Err(TopoError::NoNode(want));
        }
        Ok(items
            .into_iter()
            .map(|(k, (value, v))| KvInfo {
                key: self.rel(&k),
                value,
                version: Version::new(i64::from(v)),
            })
            .collect())
    }

    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        let key = self.key(path)?;
        self.delete_key(None, &key, version).await
    }

    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        let key = self.key(path)?;
        self.create_key(Some(fence), &key, contents).await
    }

    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        let key = self.key(path)?;
        self.update_key(Some(fence), &key, contents, version).await
    }

    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        let key = self.key(path)?;
        self.delete_key(Some(fence), &key, version).await
    }

    async fn lock(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        lock::lock(self, dir, contents, lock::Kind::Blocking).await
    }

    async fn lock_with_ttl(&self, dir: &str, contents: &str, _ttl: Duration) -> Result<LockGuard> {
        // ZooKeeper locks live as long as the session: there is no TTL to set.
        lock::lock(self, dir, contents, lock::Kind::Blocking).await
    }

    async fn lock_name(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        lock::lock(self, dir, contents, lock::Kind::Named).await
    }

    async fn try_lock(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        lock::lock(self, dir, contents, lock::Kind::Try).await
    }

    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)> {
        let key = self.key(path)?;
        watch::watch_file(self.clone(), path, key).await
    }

    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
        let key = self.key(path)?;
        watch::watch_tree(self.clone(), path, key).await
    }

    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(TopoError::invalid(format!(
                "invalid election name {name:?}"
            )));
        }
        let dir = self.key(&format!("elections/{name}"))?;
        Ok(Box::new(lock::ZkElection::new(self.clone(), dir, id)))
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observers_split() {
        assert_eq!(split_observers("a:1,b:2"), ("a:1,b:2", None));
        assert_eq!(
            split_observers("a:1,b:2|c:3,d:4"),
            ("a:1,b:2", Some("c:3,d:4"))
        );
        let f = ZkFactory::default();
        assert!(!f.has_global_read_only_cell("a:1", "/r"));
        assert!(f.has_global_read_only_cell("a:1|b:2", "/r"));
    }

    #[test]
    fn auth_files() {
        let dir = tempfile_dir();
        let good = dir.join("good");
        std::fs::write(&good, "digest:user:pass\n").unwrap();
        assert_eq!(
            read_auth(&good).unwrap(),
            ("digest".to_string(), b"user:pass".to_vec())
        );
        let bad = dir.join("bad");
        std::fs::write(&bad, "nocolon").unwrap();
        assert!(read_auth(&bad)
            .unwrap_err()
            .to_string()
            .contains("expected <scheme>:<auth>"));
        assert!(read_auth(&dir.join("missing")).is_err());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("topo-zk-unit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
