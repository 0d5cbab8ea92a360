//! # topo-etcd
//!
//! The etcd v3 topology backend, registered as `etcd2`, with Vitess's layout: values are
//! the raw record bytes at `path.Join(root, relative)`, no directory keys exist, versions
//! are key ModRevisions, and locks are `<dir>/locks/<lease id>` keys queued by revision, so a
//! Vitess process and a Toposphere process exclude each other.
//!
//! ## Locks, fencing and elections: what is guaranteed
//!
//! - **Mutual exclusion while the lease lives.** A lock is the lowest-revision key under
//!   `<dir>/locks/`; each key is bound to a lease of the lock's TTL (30 s by default, 24 h
//!   for named locks). Unlike Vitess's etcd2topo, a held lock keeps its lease alive in the
//!   background until it is released or dropped, whatever happens to the future that took
//!   it (Vitess #11811, #20340).
//! - **Fencing.** The fencing token is the lock key's create revision: strictly larger for
//!   every later holder. A fenced write's transaction compares the lock key's create
//!   revision, so it applies only while that very key exists; fenced writes are the only
//!   protection against a holder that does not yet know it lost the lock.
//! - **Loss detection.** The lease task counts the loss clock from when the last successful
//!   renewal (first: the lease grant) was *sent*, so the server cannot have kept the lease
//!   longer than we believe; failed renewals are retried soon, and the loss fires at that
//!   deadline even while the member hangs. So `check()` returns `LockLost` (and an
//!   election's leadership token is cancelled) no later than the server's own expiry,
//!   before anyone else can take the lock. A lock key deleted behind the holder's back is
//!   also a loss: `check()` compares the key's create revision, elections watch their key,
//!   and a waiter whose queued key vanished fails with `LockLost` instead of taking a lock
//!   it has no key for.
//! - **No orphans.** A failed acquisition revokes its lease before it returns; a dropped
//!   one (a timeout around `lock`) leaves the revoke to the lease task. An unlock whose
//!   revoke fails keeps revoking in the background (capped backoff) until it succeeds or
//!   the lease would have expired anyway. `close()` waits (bounded by the
//!   remote-operation timeout) for these clean-ups, so a process that exits right after
//!   leaves no entry behind.
//!
//! ## Calls, writes and watches
//!
//! Every call is bounded by the remote-operation timeout. Reads and lease calls are retried
//! on the next endpoint with backoff while members are unavailable. A write is sent again
//! only when it provably never reached a server (the connection was refused); when its
//! reply is lost, its outcome is settled by reading the key back (see `file`), and what
//! cannot be settled is `OutcomeUnknown`, never a possibly wrong `NodeExists`,
//! `BadVersion` or a silent second write. Large prefix reads are paged below the gRPC
//! message limit. Watches resume after reconnects (capped, jittered backoff) and re-read
//! after compactions; an error retrying cannot fix (permission denied, authentication
//! required) ends the watch with that error.
//!
//! ## Layout
//! `lib` (options, factory, the `Conn` implementation), `client` (connecting, bounded
//! calls with retries, paged ranges), `file`, `directory`, `lock`, `watch`, `election`,
//! `error`.

mod client;
mod directory;
mod election;
mod error;
mod file;
mod lock;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::Client;
use tokio_util::sync::CancellationToken;
use topo_core::{
    path, Conn, DirEntry, Factory, Fence, KvInfo, LeaderParticipation, LockGuard, LockOptions,
    RecursiveChange, Result, ValueLimit, Version, WatchData, WatchStream,
};

pub(crate) const BACKEND: &str = "etcd2";

/// TLS files for the client (Vitess's `--topo-etcd-tls-ca`, `-cert`, `-key`).
pub use topo_core::TlsFiles;

/// Settings of the etcd backend.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Lease TTL of locks and election entries (Vitess's `--topo-etcd-lease-ttl`, 30 s).
    pub lease_ttl: Duration,
    /// Bound on every remote call (Vitess's `--remote-operation-timeout`, 15 s).
    pub remote_operation_timeout: Duration,
    /// Bound on connecting.
    pub dial_timeout: Duration,
    /// TLS files; none means plaintext.
    pub tls: TlsFiles,
    /// The servers' `--max-request-bytes`: values that would make a larger request are
    /// refused before they are sent.
    pub max_request_bytes: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            lease_ttl: Duration::from_secs(30),
            remote_operation_timeout: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(5),
            tls: TlsFiles::default(),
            max_request_bytes: topo_core::limit::ETCD_DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// Makes `etcd2` connections.
#[derive(Debug, Default)]
pub struct EtcdFactory {
    options: EtcdOptions,
}

impl EtcdFactory {
    /// A factory with `options`.
    pub fn new(options: EtcdOptions) -> Self {
        EtcdFactory { options }
    }
}

#[async_trait]
impl Factory for EtcdFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, _cell: &str, server_address: &str, root: &str) -> Result<Arc<dyn Conn>> {
        Ok(Arc::new(
            EtcdConn::connect(server_address, root, self.options.clone()).await?,
        ))
    }
}

/// A connection to etcd under a root.
#[derive(Clone)]
pub struct EtcdConn {
    client: Client,
    root: String,
    options: EtcdOptions,
    /// Cancelled by `close`: calls fail, watches end, held locks are released.
    closed: CancellationToken,
    /// Background clean-ups (lease keep-alives and revokes of locks released, dropped or
    /// abandoned) that `close` waits for, so that nothing is left behind at exit.
    cleanups: tokio_util::task::TaskTracker,
}

impl std::fmt::Debug for EtcdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConn")
            .field("root", &self.root)
            .finish()
    }
}

impl EtcdConn {
    fn value_limit_of(&self) -> ValueLimit {
        ValueLimit::for_requests(
            self.options.max_request_bytes,
            "--topo-etcd-max-request-bytes",
        )
    }

    /// [`EtcdConn::write`] after refusing a value over the limit (nothing is sent then).
    async fn checked_write(
        &self,
        fence: Option<&Fence>,
        path: &str,
        contents: &[u8],
        version: Option<Option<&Version>>,
    ) -> Result<Version> {
        self.value_limit_of().check(path, contents.len())?;
        self.write(fence, path, contents, version).await
    }
}

#[async_trait]
impl Conn for EtcdConn {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        self.list_directory(dir, full).await
    }

    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        self.checked_write(None, path, contents, None).await
    }

    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.checked_write(None, path, contents, Some(version))
            .await
    }

    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        self.read(path).await
    }

    async fn get_version(&self, path: &str, version: &Version) -> Result<Vec<u8>> {
        self.read_version(path, version).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        self.list_prefix(prefix).await
    }

    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        self.remove(None, path, version).await
    }

    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        self.checked_write(Some(fence), path, contents, None).await
    }

    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.checked_write(Some(fence), path, contents, Some(version))
            .await
    }

    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        self.remove(Some(fence), path, version).await
    }

    async fn lock_with(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard> {
        lock::acquire(self, dir, contents, opts).await
    }

    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)> {
        let key = self.key(path)?;
        watch::watch_file(self.clone(), path, key).await
    }

    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
        self.key(path)?;
        let prefix = path::dir_prefix(&self.root, path)?;
        watch::watch_prefix(self.clone(), path, prefix).await
    }

    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>> {
        topo_core::lock::check_election_name(name)?;
        Ok(Box::new(election::participant(self.clone(), name, id)))
    }

    async fn close(&self) {
        self.closed.cancel();
        // Every lease task revokes its lease on close; wait for them (bounded: a revoke
        // that cannot get through gives up when its lease would expire anyway).
        self.cleanups.close();
        if tokio::time::timeout(self.options.remote_operation_timeout, self.cleanups.wait())
            .await
            .is_err()
        {
            tracing::warn!(root = %self.root, "closing: lock clean-ups still pending");
        }
    }

    fn value_limit(&self) -> Option<ValueLimit> {
        Some(self.value_limit_of())
    }
}
