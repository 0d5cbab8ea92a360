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
//! ## Differences from Vitess, on purpose
//! - `lock` / `try_lock` of a directory with nothing in it is `NoNode`, as on every other
//!   backend (Vitess's zk2topo creates the path and locks it).
//! - The fencing token is the lock node's creation zxid, not its sequence number: the
//!   sequence restarts whenever the emptied `locks` directory is removed, the zxid only
//!   grows. The node's name is still Vitess's ten-digit sequence.
//! - The read-only global connection syncs its server with the leader before reads, so it
//!   sees every write completed before the read.
//! - A lock call dropped mid-way removes its node; `close()` ends the session (releasing
//!   locks at once).
//!
//! ## Guarantees
//! - **Locks.** A lock is held while its node, the lowest of the queue, exists with the
//!   creation zxid it was made with; a node of the same name made later (after the queue
//!   directory was removed and made again) is someone else's. `check()` reports
//!   `LockLost` once the node is gone or replaced, once the session ended, and once the
//!   connection has been down for a third of the negotiated session timeout (counted from
//!   when the client noticed, at most 0.45 of the timeout after the last answer): the
//!   server expires a silent session after the timeout, while the client library learns
//!   of the expiry only at 1.4 times it, so without this a holder could go on believing
//!   in a lock already given to another. A lock given up that way has its node deleted
//!   as soon as the connection is back. `try_lock` never waits: when its node is not the first, it
//!   removes it and answers `NodeExists`. A lock call that times out or is dropped
//!   deletes its node in the background; `close()` waits for such clean-ups, then for the
//!   server to confirm the end of the session, so a process that exits right after leaves
//!   no node behind.
//! - **Fencing.** The fencing token is the lock node's creation zxid. Fenced writes are
//!   multi-ops checking that the lock node is still there, after a read that its creation
//!   zxid is the token (ZooKeeper's check op compares data versions only; see
//!   `file.rs`).
//! - **Writes.** A write is sent once. When its answer is lost (the connection fails or
//!   the time runs out after the request left), an update reads the node back: holding
//!   our bytes (one version on, for a compare-and-set) it was applied; a compare-and-set
//!   still at its expected version was not, and is sent again (still conditional, so it
//!   cannot apply twice). A create is read back the same way (our bytes, never written
//!   since: applied; another's: `NodeExists`), and a delete found gone was applied, as on
//!   etcd. Anything else, and a lost answer to a fenced write, is `OutcomeUnknown`: never
//!   a blind second write that could undo a later one.
//! - **Elections.** The lowest proposal leads. Leadership ends (the token is cancelled)
//!   when the proposal is deleted or replaced, when the session ends, and when the
//!   connection has been down for a third of the session timeout, before the server can
//!   expire the session and let another participant lead. `wait_for_new_leader` arms its
//!   child watch before each read of the leader, so no change goes unseen.
//! - **Recursive watches** are persistent watches that the client re-adds after a
//!   reconnect; since the server does not replay what changed meanwhile, the tree is read
//!   again and the differences (creations, updates, deletions) are reported. Events carry
//!   no data, so each changed file is read after its last event, and files are reported
//!   in the order of their last events.
//!
//! ## Layout
//! Along Vitess's zk2topo files: `lib` (options, factory, the `Conn` implementation),
//! `client` (session and bounded calls), `file`, `directory`, `queue` (the entries under
//! locks and elections), `lock`, `election`, `watch`,
//! `error` (the one conversion of ZooKeeper errors).

mod client;
mod directory;
mod election;
mod error;
mod file;
mod lock;
mod queue;
mod tls;
mod watch;

/// TLS files for the client (Vitess's `--topo-zk-tls-ca`, `-cert`, `-key`).
pub use topo_core::TlsFiles;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use topo_core::{
    path, Conn, DirEntry, Factory, Fence, KvInfo, LeaderParticipation, LockGuard, LockOptions,
    RecursiveChange, Result, TopoError, ValueLimit, Version, WatchData, WatchStream,
};
use zookeeper_client::{Acl, Acls, AuthId, CreateMode, CreateOptions, Permission};

pub(crate) const BACKEND: &str = "zk2";

/// Vitess's directory permissions (31), and its file permissions ADMIN|READ|WRITE (19).
fn dir_perms() -> Permission {
    Permission::ALL
}
fn file_perms() -> Permission {
    Permission::ADMIN | Permission::READ | Permission::WRITE
}

/// ACLs of new znodes: for anyone (Vitess's), or for the creator's identity only.
static DIR_ACL: LazyLock<[Acl; 1]> = LazyLock::new(|| [Acl::new(dir_perms(), AuthId::anyone())]);
static FILE_ACL: LazyLock<[Acl; 1]> = LazyLock::new(|| [Acl::new(file_perms(), AuthId::anyone())]);
static CREATOR_DIR_ACL: LazyLock<[Acl; 1]> =
    LazyLock::new(|| [Acl::new(dir_perms(), AuthId::authed())]);
static CREATOR_FILE_ACL: LazyLock<[Acl; 1]> =
    LazyLock::new(|| [Acl::new(file_perms(), AuthId::authed())]);

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
    /// The servers' `jute.maxbuffer`: values that would make a larger packet are refused
    /// before they are sent (the server would close the connection).
    pub jute_maxbuffer: usize,
    /// TLS files (`--topo-zk-tls-ca/-cert/-key`), for every connection the factory makes;
    /// none set means plain TCP.
    pub tls: TlsFiles,
    /// `--topo-zk-max-concurrency` (Vitess: 64): the most calls a connection has in flight
    /// at once; further calls wait their turn (within their timeout).
    pub max_concurrency: usize,
}

/// Vitess's default of `--topo-zk-max-concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

impl Default for ZkOptions {
    fn default() -> Self {
        ZkOptions {
            session_timeout: Duration::from_secs(30),
            remote_operation_timeout: Duration::from_secs(15),
            auth_file: None,
            restrictive_acl: false,
            jute_maxbuffer: topo_core::limit::ZK_DEFAULT_JUTE_MAXBUFFER,
            tls: TlsFiles::default(),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
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
        Ok(Arc::new(match (cell, observers) {
            ("global-read-only", Some(obs)) => {
                let mut conn = ZkConn::connect(obs, root, self.options.clone()).await?;
                // Observers learn of commits after the voters: without a sync a record just
                // written through the global connection could read as missing or old.
                conn.sync_reads = true;
                conn
            }
            _ => ZkConn::connect(main, root, self.options.clone()).await?,
        }))
    }
}

/// A connection to ZooKeeper under a root.
#[derive(Clone, Debug)]
pub struct ZkConn {
    session: Arc<client::Session>,
    root: String,
    closed: Arc<AtomicBool>,
    /// Whether reads first make the server catch up with the leader (`sync`), so they see
    /// every write completed before them.
    sync_reads: bool,
    /// The largest value written (from `jute.maxbuffer`).
    limit: ValueLimit,
}

impl ZkConn {
    /// Connects to `server_address` (`host:port,…`) under `root`.
    ///
    /// # Errors
    /// `InvalidArgument` for an unreadable or malformed auth file, a restrictive ACL
    /// without one, unusable TLS files, a TLS misconfiguration shown by the servers (a
    /// certificate the CA did not sign, a refused client, plain TCP to a TLS-only port) or
    /// a max concurrency of 0; `Timeout` or `Backend` when no server answers.
    pub async fn connect(server_address: &str, root: &str, options: ZkOptions) -> Result<Self> {
        let auth = options.auth_file.as_deref().map(read_auth).transpose()?;
        if options.max_concurrency == 0 {
            return Err(TopoError::invalid(
                "--topo-zk-max-concurrency must be at least 1",
            ));
        }
        if options.restrictive_acl && auth.is_none() {
            return Err(TopoError::invalid(
                "--topo-zk-acl needs --topo-zk-auth-file (the creator's identity)",
            ));
        }
        let limit = ValueLimit::for_requests(options.jute_maxbuffer, "--topo-zk-jute-maxbuffer");
        Ok(ZkConn {
            limit,
            session: Arc::new(client::Session::open(server_address, options, auth).await?),
            root: path::clean(&format!("/{root}")),
            closed: Arc::new(AtomicBool::new(false)),
            sync_reads: false,
        })
    }

    /// The absolute key of `rel`; `Interrupted` once the connection is closed.
    pub(crate) fn key(&self, rel: &str) -> Result<String> {
        self.check_open(rel)?;
        path::join(&self.root, rel)
    }

    /// `Interrupted` about `what` once the connection is closed.
    pub(crate) fn check_open(&self, what: &str) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TopoError::Interrupted(format!("{what}: connection closed")));
        }
        Ok(())
    }

    /// On a connection with `sync_reads`, waits until its server has caught up with the
    /// leader (for a read of `key`).
    pub(crate) async fn catch_up(&self, key: &str) -> Result<()> {
        if !self.sync_reads {
            return Ok(());
        }
        self.call(key, |c| async move { c.sync("/").await }).await
    }

    /// The path of `key` relative to the root.
    pub(crate) fn rel(&self, key: &str) -> String {
        path::strip_root(&self.root, key).unwrap_or_else(|| key.to_string())
    }

    pub(crate) fn options(&self) -> &ZkOptions {
        &self.session.options
    }

    /// Whether this connection speaks TLS to its servers.
    pub fn tls_in_use(&self) -> bool {
        self.options().tls.enabled()
    }

    /// The ACL for new znodes: Vitess's world:anyone permissions, or with the restrictive
    /// option the same permissions for the creator's identity only. Directories get all
    /// permissions, files no CREATE (which also tells an empty file from a directory).
    pub(crate) fn acls(&self, dir: bool) -> Acls<'static> {
        match (self.options().restrictive_acl, dir) {
            (false, true) => Acls::new(&DIR_ACL[..]),
            (false, false) => Acls::new(&FILE_ACL[..]),
            (true, true) => Acls::new(&CREATOR_DIR_ACL[..]),
            (true, false) => Acls::new(&CREATOR_FILE_ACL[..]),
        }
    }

    pub(crate) fn dir_options(&self) -> CreateOptions<'static> {
        CreateMode::Persistent.with_acls(self.acls(true))
    }

    pub(crate) fn file_options(&self) -> CreateOptions<'static> {
        CreateMode::Persistent.with_acls(self.acls(false))
    }
}

impl ZkConn {
    /// The node path of `path`, for writing `contents` there: a value over the limit is
    /// refused here, before anything is sent.
    fn write_key(&self, path: &str, contents: &[u8]) -> Result<String> {
        let key = self.key(path)?;
        self.limit.check(path, contents.len())?;
        Ok(key)
    }
}

#[async_trait]
impl Conn for ZkConn {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        self.list_dir_key(dir, &self.key(dir)?, full).await
    }

    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        self.create_key(None, &self.write_key(path, contents)?, contents)
            .await
    }

    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.update_key(None, &self.write_key(path, contents)?, contents, version)
            .await
    }

    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        let key = self.key(path)?;
        self.catch_up(&key).await?;
        self.get_key(&key).await
    }

    async fn get_version(&self, path: &str, _version: &Version) -> Result<Vec<u8>> {
        self.key(path)?;
        Err(TopoError::NoImplementation(
            "GetVersion is not supported by ZooKeeper (it keeps no history)".into(),
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        let full = self.key(prefix)?;
        // `join` drops a trailing slash that limits the match to a directory's contents.
        if prefix.ends_with('/') && !full.ends_with('/') {
            self.list_prefix(&format!("{full}/")).await
        } else {
            self.list_prefix(&full).await
        }
    }

    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        self.delete_key(None, &self.key(path)?, version).await
    }

    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        self.create_key(Some(fence), &self.write_key(path, contents)?, contents)
            .await
    }

    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.update_key(
            Some(fence),
            &self.write_key(path, contents)?,
            contents,
            version,
        )
        .await
    }

    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        self.delete_key(Some(fence), &self.key(path)?, version)
            .await
    }

    async fn lock_with(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard> {
        lock::lock(self, dir, contents, opts).await
    }

    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)> {
        let key = self.key(path)?;
        self.catch_up(&key).await?;
        watch::watch_file(self.clone(), path, key).await
    }

    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
        let key = self.key(path)?;
        self.catch_up(&key).await?;
        watch::watch_tree(self.clone(), path, key).await
    }

    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>> {
        topo_core::lock::check_election_name(name)?;
        Ok(Box::new(election::participant(self.clone(), name, id)?))
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.session.close().await;
    }

    fn value_limit(&self) -> Option<ValueLimit> {
        Some(self.limit)
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
