//! Watches: a re-armed one-shot data watch per file, and ZooKeeper's persistent recursive
//! watch for prefixes. Both survive reconnects inside the session (the server re-arms
//! them) and end with an error when the session ends.

use std::collections::BTreeSet;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use topo_core::{path, RecursiveChange, Result, TopoError, Version, WatchData, WatchStream};
use zookeeper_client::{AddWatchMode, EventType};

use crate::error::convert;
use crate::ZkConn;

/// Watches one file.
pub(crate) async fn watch_file(
    conn: ZkConn,
    rel: &str,
    key: String,
) -> Result<(WatchData, WatchStream<WatchData>)> {
    let client = conn.client().await?;
    let read = |client: std::sync::Arc<zookeeper_client::Client>, key: String| async move {
        let r = client.get_and_watch_data(&key).await;
        r.map(|(data, stat, w)| {
            (
                WatchData {
                    contents: data,
                    version: Version::new(i64::from(stat.version)),
                },
                w,
            )
        })
    };
    let (current, mut watcher) = match tokio::time::timeout(
        conn.options().remote_operation_timeout,
        read(client, key.clone()),
    )
    .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(convert(e, &key)),
        Err(_) => return Err(TopoError::Timeout(key)),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                ev = watcher.changed() => ev,
                _ = tx.closed() => return,
            };
            if event.session_state.is_terminated() {
                let _ = tx.send(Err(TopoError::Interrupted(format!(
                    "{key}: ZooKeeper session {:?}",
                    event.session_state
                ))));
                return;
            }
            if event.event_type == EventType::NodeDeleted {
                let _ = tx.send(Err(TopoError::NoNode(key)));
                return;
            }
            let next = match conn.client().await {
                Ok(c) => read(c, key.clone()).await.map_err(|e| convert(e, &key)),
                Err(e) => Err(e),
            };
            match next {
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
    let client = conn.client().await?;
    // Arm the watch before reading, so nothing between the read and the watch is missed.
    let mut watcher = match tokio::time::timeout(
        conn.options().remote_operation_timeout,
        client.watch(&key, AddWatchMode::PersistentRecursive),
    )
    .await
    {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return Err(convert(e, &key)),
        Err(_) => return Err(TopoError::Timeout(key)),
    };
    let files = conn.walk(key.clone()).await?;
    let mut known: BTreeSet<String> = files.iter().map(|(k, _, _)| k.clone()).collect();
    let initial = files
        .into_iter()
        .filter(|(k, _, _)| *k != key)
        .map(|(k, data, v)| RecursiveChange {
            path: path::strip_root(&conn.root, &k).unwrap_or(k),
            data: Some(WatchData {
                contents: data,
                version: Version::new(i64::from(v)),
            }),
        })
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                ev = watcher.changed() => ev,
                _ = tx.closed() => return,
            };
            if event.event_type == EventType::Session {
                if event.session_state.is_terminated() {
                    let _ = tx.send(Err(TopoError::Interrupted(format!(
                        "{key}: ZooKeeper session {:?}",
                        event.session_state
                    ))));
                    return;
                }
                continue;
            }
            let rel =
                path::strip_root(&conn.root, &event.path).unwrap_or_else(|| event.path.clone());
            let change = match event.event_type {
                EventType::NodeDeleted if known.remove(&event.path) => RecursiveChange {
                    path: rel,
                    data: None,
                },
                EventType::NodeCreated | EventType::NodeDataChanged => {
                    let p = event.path.clone();
                    let read = conn
                        .call(&p.clone(), |c| async move { c.get_data(&p).await })
                        .await;
                    match read {
                        // A directory znode has no data: only files are reported.
                        Ok((data, stat))
                            if !(data.is_empty() && event.event_type == EventType::NodeCreated) =>
                        {
                            known.insert(event.path.clone());
                            RecursiveChange {
                                path: rel,
                                data: Some(WatchData {
                                    contents: data,
                                    version: Version::new(i64::from(stat.version)),
                                }),
                            }
                        }
                        Ok(_) => continue,
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
