//! # topo-etcd
//!
//! The etcd v3 topology backend, registered as `etcd2`, with Vitess's layout: values are
//! the raw record bytes at `path.Join(root, relative)`, no directory keys exist, versions
//! are key ModRevisions, and locks are `<dir>/locks/<lease id>` keys queued by revision, so a
//! Vitess process and a Toposphere process exclude each other.
//!
//! Unlike Vitess's etcd2topo, a held lock keeps its lease alive in the background until it
//! is released or dropped, whatever happens to the future that took it (Vitess #11811,
//! #20340); `check()` reports the loss as soon as the lease is gone. Writes can be fenced by
//! a lock: the transaction compares the lock key's create revision.
//!
//! Every call is bounded by the remote-operation timeout; `Unavailable` (a dead member) is
//! retried on the next endpoint with backoff. Large prefix reads are paged below the gRPC
//! message limit. Watches resume after reconnects and re-read after compactions.
//!
//! ## Layout
//! `lib` (factory, connection, files and directories), `lock`, `watch`, `election`, `error`.

mod election;
mod error;
mod lock;
mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio_util::sync::CancellationToken;
use topo_core::{
    path, Conn, DirEntry, Factory, Fence, KvInfo, LeaderParticipation, LockGuard, RecursiveChange,
    Result, TopoError, Version, WatchData, WatchStream,
};

use crate::error::{convert, is_unavailable};

pub(crate) const BACKEND: &str = "etcd2";

/// How many attempts a call gets when endpoints are unavailable.
const ATTEMPTS: u32 = 4;
/// The first pause between attempts; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Bytes one page of a prefix read aims at: well below the usual 2 to 4 MiB gRPC message
/// limits (a single etcd value is at most 1.5 MiB by default, so one key always fits).
const PAGE_BYTES: usize = 1 << 20;
/// Keys in the first page of a prefix read with values; later pages are sized from the
/// bytes per key seen so far (and halved while a response is still too large).
const FIRST_PAGE: i64 = 64;
/// Most keys in one page.
const MAX_PAGE: i64 = 10_000;

/// TLS files for the client (Vitess's `--topo-etcd-tls-ca`, `-cert`, `-key`).
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// CA certificate to verify the server with; alone, it enables server-authenticated TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate (with `key`) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Client key (with `cert`).
    pub key: Option<PathBuf>,
}

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
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            lease_ttl: Duration::from_secs(30),
            remote_operation_timeout: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(5),
            tls: TlsFiles::default(),
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

fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| TopoError::invalid(format!("{what} {}: {e}", path.display())))
}

/// A connection to etcd under a root.
#[derive(Clone)]
pub struct EtcdConn {
    client: Client,
    root: String,
    options: EtcdOptions,
    /// Cancelled by `close`: calls fail, watches end, held locks are released.
    closed: CancellationToken,
}

impl std::fmt::Debug for EtcdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConn")
            .field("root", &self.root)
            .finish()
    }
}

/// The first key after every key with `prefix` (etcd's range end for a prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One key of a range read.
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) mod_revision: i64,
    pub(crate) lease: i64,
}

impl EtcdConn {
    /// Connects to `server_address` (comma-separated endpoints, `http://` or `https://`
    /// optional) under `root`.
    ///
    /// # Errors
    /// `InvalidArgument` when a configured TLS file cannot be read (never a silent fallback
    /// to plaintext); `Timeout` or `Backend` when no endpoint can be reached.
    pub async fn connect(server_address: &str, root: &str, options: EtcdOptions) -> Result<Self> {
        let tls = &options.tls;
        let use_tls = tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some();
        let scheme = if use_tls { "https" } else { "http" };
        let endpoints: Vec<String> = server_address
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err(TopoError::invalid(format!(
                "etcd server address {server_address:?} names no endpoint"
            )));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if use_tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(read_file(
                    "--topo-etcd-tls-ca",
                    ca,
                )?));
            }
            match (&tls.cert, &tls.key) {
                (Some(c), Some(k)) => {
                    t = t.identity(etcd_client::Identity::from_pem(
                        read_file("--topo-etcd-tls-cert", c)?,
                        read_file("--topo-etcd-tls-key", k)?,
                    ))
                }
                (None, None) => {}
                _ => {
                    return Err(TopoError::invalid(
                        "--topo-etcd-tls-cert and --topo-etcd-tls-key go together",
                    ))
                }
            }
            connect = connect.with_tls(t);
        }
        let client = match tokio::time::timeout(
            options.dial_timeout,
            Client::connect(&endpoints, Some(connect)),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(convert(e, server_address)),
            Err(_) => {
                return Err(TopoError::Timeout(format!(
                    "connecting to etcd at {server_address}"
                )))
            }
        };
        Ok(EtcdConn {
            client,
            root: path::clean(&format!("/{root}")),
            options,
            closed: CancellationToken::new(),
        })
    }

    fn key(&self, rel: &str) -> Result<String> {
        if self.closed.is_cancelled() {
            return Err(TopoError::Interrupted(format!("{rel}: connection closed")));
        }
        path::join(&self.root, rel)
    }

    fn rel(&self, key: &str) -> String {
        path::strip_root(&self.root, key).unwrap_or_else(|| key.to_string())
    }

    /// Runs `op` on the client, the whole call (retries included) under the
    /// remote-operation timeout, retrying on another endpoint while endpoints are
    /// unavailable. A refused connection sent nothing, so a retry is safe; after a
    /// connection broke mid-call a conditional write that did apply can come back as a
    /// conflict (`BadVersion` / `NodeExists`), never as a silent double write.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.options.remote_operation_timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let err = match tokio::time::timeout_at(deadline, op(self.client.clone())).await {
                Err(_) => return Err(TopoError::Timeout(what.to_string())),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
            };
            if attempt == ATTEMPTS
                || !is_unavailable(&err)
                || tokio::time::Instant::now() + backoff >= deadline
            {
                return Err(convert(err, what));
            }
            tracing::debug!(what, attempt, "etcd endpoint unavailable, retrying: {err}");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    /// Every key with `prefix` (pinned to one revision across pages), and that revision.
    /// Pages are sized so that each response stays near [`PAGE_BYTES`].
    pub(crate) async fn range(&self, prefix: &str, keys_only: bool) -> Result<(Vec<Item>, i64)> {
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut page = if keys_only { MAX_PAGE } else { FIRST_PAGE };
        let (mut seen_bytes, mut out) = (0usize, Vec::new());
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(page);
            if keys_only {
                opts = opts.with_keys_only();
            }
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let from = start.clone();
            let resp = match self
                .call(prefix, |mut c| {
                    let (from, opts) = (from.clone(), opts.clone());
                    async move { c.get(from, Some(opts)).await }
                })
                .await
            {
                Err(TopoError::ResourceExhausted(why)) if page > 1 => {
                    tracing::debug!(prefix, page, "range page too large, halving: {why}");
                    page /= 2;
                    continue;
                }
                // The revision the pages are pinned to was compacted: read it all again.
                Err(e) if e.is_no_node() && revision > 0 => {
                    tracing::debug!(prefix, revision, "range revision compacted, restarting");
                    (start, revision, seen_bytes) = (prefix.as_bytes().to_vec(), 0, 0);
                    out.clear();
                    continue;
                }
                other => other?,
            };
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in resp.kvs() {
                seen_bytes += kv.key().len() + kv.value().len();
                out.push(Item {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                });
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((out, revision)),
            }
            let per_key = (seen_bytes / out.len()).max(1);
            page = i64::try_from(PAGE_BYTES / per_key)
                .unwrap_or(MAX_PAGE)
                .clamp(1, MAX_PAGE);
        }
    }

    /// A conditional write: `when` (plus the fence's lock-key check) then `op`. On failure,
    /// `on_fail` explains it from the current state of `key` (and the lock is checked
    /// first).
    async fn txn(
        &self,
        key: &str,
        fence: Option<&Fence>,
        mut when: Vec<Compare>,
        op: TxnOp,
        on_fail: impl FnOnce(Option<i64>) -> TopoError,
    ) -> Result<(i64, Option<TxnOpResponse>)> {
        let mut else_ops = vec![TxnOp::get(key, None)];
        if let Some(f) = fence {
            when.push(Compare::create_revision(
                f.key(),
                CompareOp::Equal,
                f.token() as i64,
            ));
            else_ops.push(TxnOp::get(f.key(), None));
        }
        let txn = Txn::new().when(when).and_then(vec![op]).or_else(else_ops);
        let resp = self
            .call(key, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut responses = resp.op_responses().into_iter();
        if resp.succeeded() {
            return Ok((revision, responses.next()));
        }
        let current = match responses.next() {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        };
        if let Some(f) = fence {
            let lock_held = match responses.next() {
                Some(TxnOpResponse::Get(g)) => g
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == f.token() as i64),
                _ => false,
            };
            if !lock_held {
                return Err(TopoError::LockLost(f.dir().to_string()));
            }
        }
        Err(on_fail(current))
    }

    async fn write(
        &self,
        fence: Option<&Fence>,
        rel: &str,
        contents: &[u8],
        version: Option<Option<&Version>>,
    ) -> Result<Version> {
        let key = self.key(rel)?;
        let put = TxnOp::put(key.as_str(), contents, None);
        let creating = version.is_none();
        let when = match version {
            None => vec![Compare::version(key.as_str(), CompareOp::Equal, 0)],
            Some(None) => vec![],
            Some(Some(v)) => vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                v.raw(),
            )],
        };
        let k2 = key.clone();
        // A failed create means the key exists; a failed compare-and-set means another
        // version (etcd reports a missing key as a version mismatch too).
        let fail = move |_| {
            if creating {
                TopoError::NodeExists(k2)
            } else {
                TopoError::BadVersion(k2)
            }
        };
        let (revision, _) = self.txn(&key, fence, when, put, fail).await?;
        Ok(Version::new(revision))
    }

    async fn remove(
        &self,
        fence: Option<&Fence>,
        rel: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        let key = self.key(rel)?;
        let when = match version {
            Some(v) => vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                v.raw(),
            )],
            None => vec![],
        };
        let k2 = key.clone();
        let (_, resp) = self
            .txn(
                &key,
                fence,
                when,
                TxnOp::delete(key.as_str(), None),
                move |cur| match cur {
                    Some(_) => TopoError::BadVersion(k2),
                    None => TopoError::NoNode(k2),
                },
            )
            .await?;
        match resp {
            Some(TxnOpResponse::Delete(d)) if d.deleted() == 0 => Err(TopoError::NoNode(key)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Conn for EtcdConn {
    async fn list_dir(&self, dir: &str, full: bool) -> Result<Vec<DirEntry>> {
        let dir_key = self.key(dir)?;
        let prefix = path::dir_prefix(&self.root, dir)?;
        let (items, _) = self.range(&prefix, true).await?;
        let entries = topo_core::dir_entries(
            &prefix,
            items.iter().map(|i| (i.key.as_str(), i.lease != 0)),
            full,
        );
        if entries.is_empty() {
            return Err(TopoError::NoNode(dir_key));
        }
        Ok(entries)
    }

    async fn create(&self, path: &str, contents: &[u8]) -> Result<Version> {
        self.write(None, path, contents, None).await
    }

    async fn update(
        &self,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.write(None, path, contents, Some(version)).await
    }

    async fn get(&self, path: &str) -> Result<(Vec<u8>, Version)> {
        let key = self.key(path)?;
        let resp = self
            .call(&key, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok((kv.value().to_vec(), Version::new(kv.mod_revision()))),
            None => Err(TopoError::NoNode(key)),
        }
    }

    async fn get_version(&self, path: &str, version: &Version) -> Result<Vec<u8>> {
        let key = self.key(path)?;
        let rev = version.raw();
        let what = format!("{key} at version {rev}");
        let resp = self
            .call(&what, |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_revision(rev))).await }
            })
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok(kv.value().to_vec()),
            None => Err(TopoError::NoNode(what)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvInfo>> {
        let mut key_prefix = self.key(prefix)?;
        if prefix.ends_with('/') && !key_prefix.ends_with('/') {
            key_prefix.push('/');
        }
        let (items, _) = self.range(&key_prefix, false).await?;
        if items.is_empty() {
            return Err(TopoError::NoNode(key_prefix));
        }
        Ok(items
            .into_iter()
            .map(|i| KvInfo {
                key: self.rel(&i.key),
                value: i.value,
                version: Version::new(i.mod_revision),
            })
            .collect())
    }

    async fn delete(&self, path: &str, version: Option<&Version>) -> Result<()> {
        self.remove(None, path, version).await
    }

    async fn create_fenced(&self, fence: &Fence, path: &str, contents: &[u8]) -> Result<Version> {
        self.write(Some(fence), path, contents, None).await
    }

    async fn update_fenced(
        &self,
        fence: &Fence,
        path: &str,
        contents: &[u8],
        version: Option<&Version>,
    ) -> Result<Version> {
        self.write(Some(fence), path, contents, Some(version)).await
    }

    async fn delete_fenced(
        &self,
        fence: &Fence,
        path: &str,
        version: Option<&Version>,
    ) -> Result<()> {
        self.remove(Some(fence), path, version).await
    }

    async fn lock(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        lock::acquire(
            self,
            dir,
            contents,
            self.options.lease_ttl,
            lock::Kind::Blocking,
        )
        .await
    }

    async fn lock_with_ttl(&self, dir: &str, contents: &str, ttl: Duration) -> Result<LockGuard> {
        lock::acquire(self, dir, contents, ttl, lock::Kind::Blocking).await
    }

    async fn lock_name(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        lock::acquire(self, dir, contents, lock::NAMED_LOCK_TTL, lock::Kind::Named).await
    }

    async fn try_lock(&self, dir: &str, contents: &str) -> Result<LockGuard> {
        lock::acquire(self, dir, contents, self.options.lease_ttl, lock::Kind::Try).await
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
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(TopoError::invalid(format!(
                "invalid election name {name:?}"
            )));
        }
        Ok(Box::new(election::EtcdElection::new(
            self.clone(),
            name,
            id,
        )))
    }

    async fn close(&self) {
        self.closed.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }
}
