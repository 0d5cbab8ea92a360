//! Watches that survive reconnects and compactions.
//!
//! A watch starts right after the revision of its initial read. When the etcd watch
//! stream breaks it is re-opened from the last revision seen; when that revision has been
//! compacted away, the key (or prefix) is read again, its current state delivered, and the
//! watch continues from the new read. Versions in events are ModRevisions, like `get`'s.
//!
//! Transient failures (a member down, a broken connection) are retried with capped,
//! jittered exponential backoff; a failure that retrying cannot fix (permission denied,
//! authentication required, an invalid request) ends the stream with that error.
//!
//! A file watch delivers every change of its key, in order. A recursive watch, whose
//! backlog would grow with a whole tree's traffic while its reader falls behind, keeps
//! only the latest unread state of each path ([`WatchStream::coalescing`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use topo_core::{RecursiveChange, Result, TopoError, Version, WatchData, WatchStream};

use crate::client::backoff;
use crate::error::{permanent, permanent_cancel};
use crate::EtcdConn;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a watch delivers: one key change, or the error that ends it.
enum Change {
    Put(String, WatchData),
    Delete(String),
    Failed(TopoError),
}

/// Runs an etcd watch of `key` (a prefix when `prefix`) from `next_rev`, calling `deliver`
/// for every change, until `deliver` says stop or the receiver is gone, or a permanent
/// failure (delivered last). On compaction, `resync` reads the current state and returns
/// the revision to go on from.
async fn run<D, R, RF>(
    conn: EtcdConn,
    key: String,
    prefix: bool,
    mut next_rev: i64,
    mut deliver: D,
    mut resync: R,
) where
    D: FnMut(Change) -> bool,
    R: FnMut() -> RF,
    RF: Future<Output = Option<i64>>,
{
    let mut backoff = backoff(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        let mut opts = WatchOptions::new().with_start_revision(next_rev);
        if prefix {
            opts = opts.with_prefix();
        }
        let mut stream = match conn.open_watch(&key, opts).await {
            Ok(s) => s,
            Err((e, true)) => {
                tracing::warn!(key, "the etcd watch cannot be opened: {e}");
                deliver(Change::Failed(e));
                return;
            }
            Err((e, false)) => {
                tracing::debug!(key, "opening an etcd watch: {e}; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        loop {
            let msg = match stream.message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(e) if permanent(&e) => {
                    tracing::warn!(key, "the etcd watch failed: {e}");
                    deliver(Change::Failed(crate::error::convert(e, &key)));
                    return;
                }
                Err(e) => {
                    tracing::debug!(key, "the etcd watch broke: {e}");
                    break;
                }
            };
            if msg.compact_revision() > 0 {
                tracing::info!(
                    key,
                    compacted = msg.compact_revision(),
                    "watch revision compacted; re-reading"
                );
                match resync().await {
                    Some(rev) => next_rev = rev,
                    None => return,
                }
                break;
            }
            if msg.canceled() {
                if permanent_cancel(msg.cancel_reason()) {
                    tracing::warn!(
                        key,
                        reason = msg.cancel_reason(),
                        "etcd cancelled the watch"
                    );
                    deliver(Change::Failed(TopoError::backend_msg(
                        crate::BACKEND,
                        format!("{key}: etcd cancelled the watch: {}", msg.cancel_reason()),
                    )));
                    return;
                }
                break;
            }
            // A message came through: the connection works again.
            backoff.reset();
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let k = String::from_utf8_lossy(kv.key()).into_owned();
                next_rev = kv.mod_revision() + 1;
                let change = match ev.event_type() {
                    EventType::Put => Change::Put(
                        k,
                        WatchData {
                            contents: kv.value().to_vec(),
                            version: Version::new(kv.mod_revision()),
                        },
                    ),
                    EventType::Delete => Change::Delete(k),
                };
                if !deliver(change) {
                    return;
                }
            }
        }
        // The stream ended or broke: re-open it from the last revision seen.
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Watches one file.
pub(crate) async fn watch_file(
    conn: EtcdConn,
    rel: &str,
    key: String,
) -> Result<(WatchData, WatchStream<WatchData>)> {
    let resp = conn
        .call(&key, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
    let Some(kv) = resp.kvs().first() else {
        return Err(TopoError::NoNode(key));
    };
    let current = WatchData {
        contents: kv.value().to_vec(),
        version: Version::new(kv.mod_revision()),
    };
    let start = resp.header().map(|h| h.revision()).unwrap_or(0) + 1;
    let (tx, rx) = mpsc::unbounded_channel();
    let dropped = {
        let tx = tx.clone();
        async move { tx.closed().await }
    };
    let stream = WatchStream::new(rel, UnboundedReceiverStream::new(rx));
    // The re-read after a compaction needs its own handles: the event closure owns these.
    let (reread_tx, reread_conn, reread_key) = (tx.clone(), conn.clone(), key.clone());
    let closed = conn.closed.clone();
    let task = run(
        conn,
        key.clone(),
        false,
        start,
        move |change| match change {
            Change::Put(_, d) => tx.send(Ok(d)).is_ok(),
            Change::Delete(k) => {
                let _ = tx.send(Err(TopoError::NoNode(k)));
                false
            }
            Change::Failed(e) => {
                let _ = tx.send(Err(e));
                false
            }
        },
        move || {
            let (tx, conn, key) = (reread_tx.clone(), reread_conn.clone(), reread_key.clone());
            async move {
                let read = conn
                    .call(&key, |mut c| {
                        let key = key.clone();
                        async move { c.get(key, None).await }
                    })
                    .await;
                match read {
                    Ok(r) => {
                        let rev = r.header().map(|h| h.revision()).unwrap_or(0) + 1;
                        match r.kvs().first() {
                            Some(kv) => tx
                                .send(Ok(WatchData {
                                    contents: kv.value().to_vec(),
                                    version: Version::new(kv.mod_revision()),
                                }))
                                .ok()
                                .map(|_| rev),
                            None => {
                                let _ = tx.send(Err(TopoError::NoNode(key)));
                                None
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        None
                    }
                }
            }
        },
    );
    Ok((current, spawn_watch(task, closed, dropped, stream)))
}

/// Watches every file under a prefix.
pub(crate) async fn watch_prefix(
    conn: EtcdConn,
    rel: &str,
    prefix: String,
) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
    let (items, revision) = conn.range(&prefix, false).await?;
    let root = conn.root.clone();
    let to_rel =
        move |k: &str| topo_core::path::strip_root(&root, k).unwrap_or_else(|| k.to_string());
    let initial: Vec<RecursiveChange> = items
        .iter()
        .map(|i| RecursiveChange {
            path: to_rel(&i.key),
            data: Some(WatchData {
                contents: i.value.clone(),
                version: Version::new(i.mod_revision),
            }),
        })
        .collect();
    // What the consumer has seen, to report deletions found by a re-read after compaction.
    let known: BTreeMap<String, i64> = items
        .iter()
        .map(|i| (i.key.clone(), i.mod_revision))
        .collect();
    let known = Arc::new(Mutex::new(known));
    let reread_known = known.clone();
    let (tx, stream) = WatchStream::coalescing::<String>(rel);
    let tx = Arc::new(tx);
    let dropped = {
        let tx = tx.clone();
        async move { tx.closed().await }
    };
    // The re-read after a compaction needs its own handles: the event closure owns these.
    let (reread_tx, reread_conn, reread_prefix, reread_to_rel) =
        (tx.clone(), conn.clone(), prefix.clone(), to_rel.clone());
    let closed = conn.closed.clone();
    let task = run(
        conn,
        prefix.clone(),
        true,
        revision + 1,
        move |change| {
            let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
            let item = match change {
                Change::Put(k, d) => {
                    known.insert(k.clone(), d.version.raw());
                    RecursiveChange {
                        path: to_rel(&k),
                        data: Some(d),
                    }
                }
                Change::Delete(k) => {
                    known.remove(&k);
                    RecursiveChange {
                        path: to_rel(&k),
                        data: None,
                    }
                }
                Change::Failed(e) => {
                    tx.fail(e);
                    return false;
                }
            };
            tx.send(item.path.clone(), item)
        },
        move || {
            let (tx, conn, prefix, to_rel, known) = (
                reread_tx.clone(),
                reread_conn.clone(),
                reread_prefix.clone(),
                reread_to_rel.clone(),
                reread_known.clone(),
            );
            async move {
                let (items, rev) = match conn.range(&prefix, false).await {
                    Ok(v) => v,
                    Err(e) => {
                        tx.fail(e);
                        return None;
                    }
                };
                let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
                let now: BTreeMap<String, i64> = items
                    .iter()
                    .map(|i| (i.key.clone(), i.mod_revision))
                    .collect();
                for gone in known.keys().filter(|k| !now.contains_key(*k)) {
                    let path = to_rel(gone);
                    if !tx.send(path.clone(), RecursiveChange { path, data: None }) {
                        return None;
                    }
                }
                for i in items {
                    if known.get(&i.key) != Some(&i.mod_revision) {
                        let change = RecursiveChange {
                            path: to_rel(&i.key),
                            data: Some(WatchData {
                                contents: i.value,
                                version: Version::new(i.mod_revision),
                            }),
                        };
                        if !tx.send(change.path.clone(), change) {
                            return None;
                        }
                    }
                }
                *known = now;
                Some(rev + 1)
            }
        },
    );
    Ok((initial, spawn_watch(task, closed, dropped, stream)))
}

/// Runs `task` until it ends, `dropped` (the stream was dropped) completes, or the
/// connection is closed (the stream then ends with `Interrupted`, the contract's final
/// error); ending the task closes its etcd watch.
fn spawn_watch<T>(
    task: impl Future<Output = ()> + Send + 'static,
    closed: CancellationToken,
    dropped: impl Future<Output = ()> + Send + 'static,
    stream: WatchStream<T>,
) -> WatchStream<T> {
    let stream = stream.cancelled_with(&closed);
    tokio::spawn(async move {
        tokio::select! {
            _ = closed.cancelled() => {}
            _ = dropped => {}
            _ = task => {}
        }
    });
    stream
}
