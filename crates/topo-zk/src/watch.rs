//! Watches (Vitess's `watch.go`): a re-armed one-shot data watch per file, and ZooKeeper's
//! persistent recursive watch for prefixes (which Vitess's zk backend lacks). Both survive
//! reconnects inside the session (the client re-registers them) and end with an error when
//! the session ends.

use std::collections::BTreeSet;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use topo_core::{RecursiveChange, Result, TopoError, Version, WatchData, WatchStream};
use zookeeper_client::{AddWatchMode, EventType, OneshotWatcher, WatchedEvent};

use crate::ZkConn;

/// `Interrupted` for an event that says the session ended, naming `key`.
fn session_end(event: &WatchedEvent, key: &str) -> Option<TopoError> {
    event.session_state.is_terminated().then(|| {
        TopoError::Interrupted(format!(
            "{key}: ZooKeeper session {:?}",
            event.session_state
        ))
    })
}

/// Reads `key` and arms a one-shot data watch on it.
async fn read_and_watch(conn: &ZkConn, key: &str) -> Result<(WatchData, OneshotWatcher)> {
    let (contents, stat, watcher) = conn
        .call(key, |c| async move { c.get_and_watch_data(key).await })
        .await?;
    Ok((
        WatchData {
            contents,
            version: Version::new(i64::from(stat.version)),
        },
        watcher,
    ))
}

/// Watches one file: the current value, then every change until it is deleted (`NoNode`)
/// or the session ends (`Interrupted`).
pub(crate) async fn watch_file(
    conn: ZkConn,
    rel: &str,
    key: String,
) -> Result<(WatchData, WatchStream<WatchData>)> {
    let (current, mut watcher) = read_and_watch(&conn, &key).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                ev = watcher.changed() => ev,
                _ = tx.closed() => return,
            };
            if let Some(e) = session_end(&event, &key) {
                let _ = tx.send(Err(e));
                return;
            }
            if event.event_type == EventType::NodeDeleted {
                let _ = tx.send(Err(TopoError::NoNode(key)));
                return;
            }
            match read_and_watch(&conn, &key).await {
                Ok((data, w)) => {
                    watcher = w;
                    if tx.send(Ok(data)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    Ok((
        current,
        WatchStream::new(rel, UnboundedReceiverStream::new(rx)),
    ))
}

/// Watches every file below `key` with a persistent recursive watch.
pub(crate) async fn watch_tree(
    conn: ZkConn,
    rel: &str,
    key: String,
) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
    // Arm the watch before reading, so nothing between the read and the watch is missed.
    let k = key.as_str();
    let mut watcher = conn
        .call(k, |c| async move {
            c.watch(k, AddWatchMode::PersistentRecursive).await
        })
        .await?;
    let files = conn.walk(key.clone()).await?;
    let mut known: BTreeSet<String> = files.iter().map(|(k, _, _)| k.clone()).collect();
    let initial = files
        .into_iter()
        .filter(|(k, _, _)| *k != key)
        .map(|(k, contents, version)| RecursiveChange {
            path: conn.rel(&k),
            data: Some(WatchData { contents, version }),
        })
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                ev = watcher.changed() => ev,
                _ = tx.closed() => return,
            };
            if let Some(e) = session_end(&event, &key) {
                let _ = tx.send(Err(e));
                return;
            }
            let rel = conn.rel(&event.path);
            let change = match event.event_type {
                EventType::NodeDeleted if known.remove(&event.path) => RecursiveChange {
                    path: rel,
                    data: None,
                },
                EventType::NodeCreated | EventType::NodeDataChanged => {
                    if event.event_type == EventType::NodeDataChanged {
                        // Only files change data: even if it is gone before the read below,
                        // its deletion is reported.
                        known.insert(event.path.clone());
                    }
                    let file = match conn.get_key(&event.path).await {
                        // A directory znode (empty, and either with children already or
                        // made with directory permissions) is not reported.
                        Ok((data, version))
                            if data.is_empty() && event.event_type == EventType::NodeCreated =>
                        {
                            match conn.is_empty_file(&event.path).await {
                                Ok(true) => Ok((data, version)),
                                Ok(false) => continue,
                                Err(e) => Err(e),
                            }
                        }
                        other => other,
                    };
                    match file {
                        Ok((contents, version)) => {
                            known.insert(event.path.clone());
                            RecursiveChange {
                                path: rel,
                                data: Some(WatchData { contents, version }),
                            }
                        }
                        // Deleted again before we read it: its deletion event follows.
                        Err(e) if e.is_no_node() => continue,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                _ => continue,
            };
            if tx.send(Ok(change)).is_err() {
                return;
            }
        }
    });
    Ok((
        initial,
        WatchStream::new(rel, UnboundedReceiverStream::new(rx)),
    ))
}
