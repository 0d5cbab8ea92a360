//! The etcd client under a root: connecting (endpoints, TLS), keys, calls bounded by the
//! remote-operation timeout with retries on unavailable endpoints, and paged range reads.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions};
use tokio_util::sync::CancellationToken;
use topo_core::backoff::Backoff;
use topo_core::{path, Result, TopoError};

use crate::error::{convert, is_unavailable, never_sent, rejected};
use crate::{EtcdConn, EtcdOptions};

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

/// The pauses of retries in the background (watches, lease renewals and revokes): from
/// `first`, doubling up to `max`, each spread by up to half either way so that clients
/// retrying after the same failure do not retry in step.
pub(crate) fn backoff(first: Duration, max: Duration) -> Backoff {
    Backoff::new(first, max).with_jitter(0.5)
}

/// The bytes of a configured TLS file; one that cannot be read is an error naming the flag.
fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| TopoError::invalid(format!("{what} {}: {e}", path.display())))
}

/// The first key after every key with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Why a bounded call failed.
enum CallError {
    /// The remote-operation deadline passed.
    TimedOut,
    /// The last attempt's error.
    Failed(etcd_client::Error),
}

/// How a write that did not succeed ended.
pub(crate) enum WriteError {
    /// It was not applied: the server rejected it, or it was never sent.
    NotApplied(TopoError),
    /// It may have been applied: it was sent, and its reply was lost (a broken
    /// connection, the deadline, etcd's "request timed out" or "leader changed").
    MaybeApplied(TopoError),
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
        let use_tls = tls.enabled();
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
            cleanups: tokio_util::task::TaskTracker::new(),
        })
    }

    pub(crate) fn key(&self, rel: &str) -> Result<String> {
        if self.closed.is_cancelled() {
            return Err(TopoError::Interrupted(format!("{rel}: connection closed")));
        }
        path::join(&self.root, rel)
    }

    pub(crate) fn rel(&self, key: &str) -> String {
        path::strip_root(&self.root, key).unwrap_or_else(|| key.to_string())
    }

    /// Runs `op` on the client, the whole call (retries included) under the
    /// remote-operation timeout, retrying on another endpoint while endpoints are
    /// unavailable or connections break. Only for calls that may be repeated: reads, and
    /// writes whose repetition is harmless (lease grants and revokes). Other writes use
    /// [`EtcdConn::call_write`].
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.options.remote_operation_timeout;
        match self.attempts(what, deadline, is_unavailable, op).await {
            Ok(v) => Ok(v),
            Err(CallError::TimedOut) => Err(TopoError::Timeout(what.to_string())),
            Err(CallError::Failed(e)) => Err(convert(e, what)),
        }
    }

    /// Runs a write that must not be applied twice, until `deadline`: it is sent again only
    /// when the previous attempt provably never reached a server (the connection could not
    /// be opened). Any other failure says whether the write may have been applied.
    pub(crate) async fn call_write<T, F, Fut>(
        &self,
        what: &str,
        deadline: tokio::time::Instant,
        op: F,
    ) -> std::result::Result<T, WriteError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        match self.attempts(what, deadline, never_sent, op).await {
            Ok(v) => Ok(v),
            Err(CallError::TimedOut) => Err(WriteError::MaybeApplied(TopoError::Timeout(
                what.to_string(),
            ))),
            Err(CallError::Failed(e)) if never_sent(&e) || rejected(&e) => {
                Err(WriteError::NotApplied(convert(e, what)))
            }
            Err(CallError::Failed(e)) => Err(WriteError::MaybeApplied(convert(e, what))),
        }
    }

    /// Runs `op` until it succeeds, fails with an error `retry` refuses, runs out of
    /// attempts, or `deadline` passes; with doubling backoff between attempts.
    async fn attempts<T, F, Fut>(
        &self,
        what: &str,
        deadline: tokio::time::Instant,
        retry: fn(&etcd_client::Error) -> bool,
        mut op: F,
    ) -> std::result::Result<T, CallError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let err = match tokio::time::timeout_at(deadline, op(self.client.clone())).await {
                Err(_) => return Err(CallError::TimedOut),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
            };
            if attempt == ATTEMPTS
                || !retry(&err)
                || tokio::time::Instant::now() + backoff >= deadline
            {
                return Err(CallError::Failed(err));
            }
            tracing::debug!(what, attempt, "etcd call failed, retrying: {err}");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    /// Opens an etcd watch of `key`, bounded by the remote-operation timeout (a member that
    /// hangs must not hold the caller forever); the stream itself has no bound: waiting is
    /// its point. A failure comes with whether retrying cannot fix it.
    pub(crate) async fn open_watch(
        &self,
        key: &str,
        opts: WatchOptions,
    ) -> std::result::Result<etcd_client::WatchStream, (TopoError, bool)> {
        let mut client = self.client.clone();
        match tokio::time::timeout(
            self.options.remote_operation_timeout,
            client.watch(key, Some(opts)),
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                let permanent = crate::error::permanent(&e);
                Err((convert(e, key), permanent))
            }
            Err(_) => Err((TopoError::Timeout(format!("{key}: opening a watch")), false)),
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
