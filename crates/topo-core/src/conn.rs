//! The [`Conn`] contract every backend implements, with its lock and election types.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::limit::ValueLimit;
use crate::lock::LockOptions;
use crate::types::{DirEntry, Fence, KvInfo, RecursiveChange, Version, WatchData};
use crate::watch::WatchStream;

/// A connection to one cell of the topology (the global cell or a local cell): a consistent
/// key/value store with versions, watches, locks and elections.
///
/// Paths are relative to the connection's root and follow Go `path.Join` semantics (see
/// [`crate::path`]); a path whose `..` climbs above the root is refused with
/// `InvalidArgument`. Paths returned by the connection are in canonical form (`/a/b`).
///
/// # Cancellation
/// Every method is a future; dropping it abandons the call. A dropped write may or may not
/// have happened. A dropped lock or election acquisition leaves no entry behind (backends
/// remove their entry in the background). Bounded waits are the caller's: wrap a call in
/// `tokio::time::timeout`, or use [`crate::ConnExt::lock_timeout`], which reports `Timeout`.
///
/// # Errors
/// Each method lists the kinds it returns for the conditions of the contract; any method may
/// also return `Timeout`, `Interrupted` or `Backend` for transport failures, and
/// `InvalidArgument` for a path that climbs above the root. After [`Conn::close`] every
/// call fails with `Interrupted` on every backend.
///
/// # Locks and elections, backend by backend
/// A lock is an entry `<dir>/locks/<name>` in a queue; the oldest entry holds the lock.
/// Everywhere, the holder keeps its entry alive in the background until it unlocks or drops
/// the guard, and a crashed holder's entry goes away on its own after a bounded time:
///
/// | backend | entry lives while | crashed holder freed after | fencing token |
/// |---|---|---|---|
/// | etcd (`etcd2`) | its lease is kept alive (TTL `--topo-etcd-lease-ttl`, 30 s) | the lease TTL | the lock key's create revision |
/// | ZooKeeper (`zk2`) | the session lives (ephemeral sequential node) | the session timeout | the lock node's creation zxid (not its sequence number, which restarts when the emptied `locks` node is removed) |
/// | `local` | the owning process renews its lease (every third of the lock TTL, 30 s) | the lock TTL; named locks: 24 h | the entry's sequence (a store-wide version) |
/// | `memory` | the process lives (no TTL) | never needed: one process | the entry's sequence |
///
/// A holder learns of a loss through [`LockDescriptor::check`] (`LockLost`), and writes made
/// with [`LockDescriptor::fence`] are refused once the lock is lost, so a holder that lost
/// its lock cannot overwrite the next holder's work. Fencing tokens strictly increase for
/// successive holders of one directory.
///
/// Elections use the same machinery under `elections/<name>`: the oldest participant leads
/// (etcd: lowest create revision of lease-bound keys; ZooKeeper: lowest ephemeral sequential
/// node; local and memory: a named lock whose entry, on local, carries the lock TTL, not
/// the 24 h named-lock lease, so a killed leader is replaced within the TTL). Leadership
/// ends, and its token is cancelled, when the participant stops or its entry is lost.
///
/// # Closing
/// [`Conn::close`] releases every lock the connection holds (etcd revokes the leases,
/// ZooKeeper closes the session, local and memory delete the entries), removes its queued
/// entries, ends its open watches and lock waits with `Interrupted`, and returns only once
/// the background clean-ups of abandoned acquisitions are done, so another connection can
/// take the locks at once. `check()` of a guard of a closed connection fails.
#[async_trait]
pub trait Conn: Send + Sync + Debug + 'static {
    /// The immediate children of `dir`, sorted by name.
    ///
    /// With `full == false` only names are filled (type `Directory`, not ephemeral). With
    /// `full == true` each entry says whether it is a file or a directory and whether it is
    /// ephemeral (lock and election entries).
    ///
    /// # Errors
    /// `NoNode` when nothing exists under `dir`. (ZooKeeper returns an empty list for an
    /// existing empty directory node.)
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>>;

    /// Creates `path` with `contents`; intermediate directories are implicit.
    ///
    /// # Errors
    /// `NodeExists` when the file exists.
    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version>;

    /// Writes `contents` to `path` and returns the new version. With `version == None` the
    /// write is unconditional and creates the file when absent; otherwise it is a
    /// compare-and-set.
    ///
    /// # Errors
    /// `BadVersion` when the stored version differs. For a missing file with a version:
    /// `NoNode` (memory, local, ZooKeeper) or `BadVersion` (etcd).
    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version>;

    /// The contents and version of `path`.
    ///
    /// # Errors
    /// `NoNode` when absent.
    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)>;

    /// The contents `path` had at `version` (etcd only).
    ///
    /// # Errors
    /// `NoImplementation` on backends without history; `NoNode` when no such version exists.
    async fn get_version(&self, path: &str, version: &Version) -> Result<Vec<u8>>;

    /// Every file whose key starts with the string `root + prefix` (a plain string prefix,
    /// not a directory boundary: `/top` matches `/toplevel/x`), sorted by key.
    ///
    /// # Errors
    /// `NoNode` when nothing matches; `ResourceExhausted` when the result is over the
    /// backend's size limit.
    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>>;

    /// Deletes the file at `path`; `version == None` is unconditional. Directories left empty
    /// disappear from their parent's listing.
    ///
    /// # Errors
    /// `NoNode` when absent, `BadVersion` on a version mismatch.
    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()>;

    /// [`Conn::create`], refused atomically unless the lock behind `fence` is still held.
    ///
    /// # Errors
    /// As `create`, plus `LockLost` when the lock is gone (nothing is written then).
    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version>;

    /// [`Conn::update`], refused atomically unless the lock behind `fence` is still held.
    ///
    /// # Errors
    /// As `update`, plus `LockLost` when the lock is gone (nothing is written then).
    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version>;

    /// [`Conn::delete`], refused atomically unless the lock behind `fence` is still held.
    ///
    /// # Errors
    /// As `delete`, plus `LockLost` when the lock is gone (nothing is deleted then).
    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()>;

    /// Takes the advisory lock on directory `dir` as `opts` says (see [`LockKind`](crate::LockKind) for the
    /// kinds; [`ConnExt`](crate::ConnExt) has the short forms `lock`, `lock_with_ttl`,
    /// `lock_name` and `try_lock`). `contents` (a human-readable description, by
    /// convention Vitess's JSON lock descriptor) is stored in the lock entry under
    /// `<dir>/locks/`. Waiters are served in arrival order.
    ///
    /// The lock stays held until [`LockDescriptor::unlock`] or until the guard is dropped,
    /// whatever happens to the future that acquired it: backends keep leases and sessions
    /// alive in the background.
    ///
    /// # Errors
    /// `NoNode` when nothing exists under `dir` and the lock is not a named one (on every
    /// backend; Vitess's zk2topo creates the path instead); for a try,
    /// `NodeExists` (`lock already exists at path <dir>`) at once when the lock is held or
    /// waited for.
    ///
    /// # Cancellation safety
    /// Dropping the future while it waits removes the waiter's entry.
    async fn lock_with(&self, dir: &str, contents: &str, opts: LockOptions) -> Result<LockGuard>;

    /// The current value of `path` and a stream of its later changes (see [`WatchStream`]
    /// for the contract). Versions in the stream are of the same kind as those of `get`.
    ///
    /// # Errors
    /// `NoNode` when the file does not exist (no stream is returned).
    async fn watch(&self, path: &str) -> Result<(WatchData, WatchStream<WatchData>)>;

    /// The current files under the prefix `path/` and a stream of their later changes. A
    /// deletion is an item with `data == None` and does not end the stream.
    async fn watch_recursive(
        &self,
        path: &str,
    ) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)>;

    /// A participant in the election `name`, with `id` (unique per process, usually
    /// host:port). Creating it does not enter the election.
    async fn new_leader_participation(
        &self,
        name: &str,
        id: &str,
    ) -> Result<Box<dyn LeaderParticipation>>;

    /// Closes the connection: held locks are released, queued lock entries removed, open
    /// watches and lock waits end with `Interrupted`, pending clean-ups finish before it
    /// returns, and later calls fail with `Interrupted` (see "Closing" above).
    async fn close(&self);

    /// The largest value this connection writes; larger creates and updates are refused
    /// with `TooLarge` before anything is sent. `None`: no limit (the memory backend).
    fn value_limit(&self) -> Option<ValueLimit> {
        None
    }
}

/// A held lock (Vitess's `LockDescriptor`). Dropping it releases the lock in the background.
#[async_trait]
pub trait LockDescriptor: Send + Sync + Debug {
    /// The locked directory, relative to the connection's root.
    fn dir(&self) -> &str;

    /// The fencing token: strictly larger for every later holder of the same directory
    /// (etcd: the lock key's create revision; ZooKeeper: the lock node's creation zxid;
    /// memory and local: the entry's sequence).
    fn fencing_token(&self) -> u64;

    /// The fence for writes made under this lock (see [`Conn::create_fenced`]).
    fn fence(&self) -> Fence;

    /// Succeeds while the lock is held.
    ///
    /// # Errors
    /// `LockLost` as soon as the backend lost the lock (lease expired, session expired).
    async fn check(&self) -> Result<()>;

    /// Releases the lock. A guard can be released only once: the method consumes it.
    ///
    /// # Errors
    /// `LockLost` or `NoNode` when the lock had already been lost.
    async fn unlock(self: Box<Self>) -> Result<()>;
}

/// A held lock, as returned by the `lock*` methods of [`Conn`].
pub type LockGuard = Box<dyn LockDescriptor>;

/// One participant in a leader election (Vitess's `LeaderParticipation`).
#[async_trait]
pub trait LeaderParticipation: Send + Sync + Debug {
    /// Becomes a candidate and waits until this participant leads. The returned token is
    /// cancelled when leadership is lost or [`LeaderParticipation::stop`] is called.
    ///
    /// # Errors
    /// `Interrupted` when `stop` was called before or while waiting.
    async fn wait_for_leadership(&self) -> Result<CancellationToken>;

    /// The fence of the leadership won, from `wait_for_leadership`'s return until `stop`;
    /// `None` before (it does not wait for a campaign in progress) and after. Writes made
    /// with it ([`Conn::update_fenced`] and the other fenced calls) fail with `LockLost`
    /// once the leadership's entry is gone, so a leader that lost its place without
    /// noticing yet cannot overwrite its successor's work.
    async fn fence(&self) -> Option<Fence>;

    /// Leaves the election, releasing leadership if held, and returns once cleaned up. A
    /// pending `wait_for_leadership` returns `Interrupted`.
    async fn stop(&self);

    /// The id of the current leader, or `""` when there is none.
    async fn current_leader_id(&self) -> Result<String>;

    /// A stream of leader ids: the current leader first (if any), then each new leader.
    async fn wait_for_new_leader(&self) -> Result<WatchStream<String>>;
}

/// Creates connections for one backend implementation (Vitess's `topo.Factory`).
#[async_trait]
pub trait Factory: Send + Sync + Debug + 'static {
    /// The implementation's registered name (`memory`, `local`, `etcd2`, `zk2`, `consul`).
    fn name(&self) -> &'static str;

    /// True when `server_address` names a separate read-only replica set for the global
    /// cell (ZooKeeper observers after `|`).
    fn has_global_read_only_cell(&self, _server_address: &str, _root: &str) -> bool {
        false
    }

    /// A connection for `cell` (`global`, `global-read-only` or a cell name) to
    /// `server_address` under `root`.
    async fn create(&self, cell: &str, server_address: &str, root: &str) -> Result<Arc<dyn Conn>>;
}
