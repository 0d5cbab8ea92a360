//! Watches (Vitess's `watch.go`): a re-armed one-shot data watch per file, and ZooKeeper's
//! persistent recursive watch for prefixes (which Vitess's zk backend lacks). Both survive
//! reconnects inside the session (the client re-registers them; a recursive watch then
//! reads its tree again to report what changed meanwhile) and end with an error when the
//! session ends.

use std::collections::{BTreeMap, HashMap};

use futures::FutureExt;
use topo_core::{RecursiveChange, Result, TopoError, Version, WatchData, WatchStream};
use zookeeper_client::{
    AddWatchMode, EventType, OneshotWatcher, PersistentWatcher, SessionState, WatchedEvent,
};

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
    // One key: a reader that falls behind gets the latest value.
    let (tx, stream) = WatchStream::coalescing::<()>(rel);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                ev = watcher.changed() => ev,
                _ = tx.closed() => return,
            };
            if let Some(e) = session_end(&event, &key) {
                tx.fail(e);
                return;
            }
            if event.event_type == EventType::NodeDeleted {
                tx.fail(TopoError::NoNode(key));
                return;
            }
            match read_and_watch(&conn, &key).await {
                Ok((data, w)) => {
                    watcher = w;
                    if !tx.send((), data) {
                        return;
                    }
                }
                Err(e) => {
                    tx.fail(e);
                    return;
                }
            }
        }
    });
    Ok((current, stream))
}

/// Every file at or below `key`, by key.
async fn read_tree(conn: &ZkConn, key: &str) -> Result<BTreeMap<String, WatchData>> {
    Ok(conn
        .walk(key.to_string())
        .await?
        .into_iter()
        .map(|(k, contents, version)| (k, WatchData { contents, version }))
        .collect())
}

/// The change reporting file `key` (absolute) as `data` (`None`: deleted).
fn change(conn: &ZkConn, key: &str, data: Option<WatchData>) -> RecursiveChange {
    RecursiveChange {
        path: conn.rel(key),
        data,
    }
}

/// Reads the tree at `key` again after a reconnect and returns how it differs from `known`
/// (which becomes the tree read): the server re-adds a persistent watch without replaying
/// what changed while the connection was down (ZOOKEEPER-4698).
async fn catch_up(
    conn: &ZkConn,
    key: &str,
    known: &mut BTreeMap<String, WatchData>,
) -> Result<Vec<RecursiveChange>> {
    let now = read_tree(conn, key).await?;
    let deleted = known
        .keys()
        .filter(|k| !now.contains_key(*k))
        .map(|k| change(conn, k, None));
    let changed = now
        .iter()
        .filter(|(k, d)| known.get(*k) != Some(*d))
        .map(|(k, d)| change(conn, k, Some(d.clone())));
    let out = deleted
        .chain(changed)
        .filter(|c| c.path != conn.rel(key))
        .collect();
    *known = now;
    Ok(out)
}

/// The current contents of file `key`, or `None` when it is gone or a directory znode
/// (empty, and made with directory permissions or with children already); `file` says it
/// is known to be a file.
async fn read_file(conn: &ZkConn, key: &str, file: bool) -> Result<Option<WatchData>> {
    match conn.get_key(key).await {
        Ok((contents, version)) => {
            if contents.is_empty() && !file {
                match conn.is_empty_file(key).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(None),
                    Err(e) if e.is_no_node() => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Ok(Some(WatchData { contents, version }))
        }
        Err(e) if e.is_no_node() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A recursive watch's view of its tree, kept up to date from its events.
struct Tree {
    conn: ZkConn,
    key: String,
    watcher: PersistentWatcher,
    /// Every file below `key` as last reported.
    known: BTreeMap<String, WatchData>,
    /// The connection dropped since the last catch-up.
    disconnected: bool,
}

impl Tree {
    /// The changes made by `first` and the events queued behind it, or `Interrupted` once
    /// the session ended. A path is read after its last event, so what is read may be newer
    /// than events of other paths queued meanwhile: those are taken in too (the answer to
    /// a read comes after every event of the changes before it), and the paths reported in
    /// the order of their last events, so a deletion is never reported after a later
    /// change of another file.
    async fn changes(&mut self, first: WatchedEvent) -> Result<Vec<RecursiveChange>> {
        let mut out = Vec::new();
        // Paths by their last event, with what was read after it.
        let mut order: Vec<String> = Vec::new();
        let mut read: HashMap<String, Option<WatchData>> = HashMap::new();
        let mut next = Some(first);
        loop {
            while let Some(event) = next
                .take()
                .or_else(|| self.watcher.changed().now_or_never())
            {
                if let Some(e) = session_end(&event, &self.key) {
                    return Err(e);
                }
                match event.event_type {
                    EventType::Session if event.session_state == SessionState::Disconnected => {
                        self.disconnected = true;
                    }
                    EventType::Session if self.disconnected => {
                        self.disconnected = false;
                        // The whole tree is read again: it covers every event so far.
                        out.extend(catch_up(&self.conn, &self.key, &mut self.known).await?);
                        order.clear();
                        read.clear();
                    }
                    EventType::NodeCreated
                    | EventType::NodeDataChanged
                    | EventType::NodeDeleted => {
                        order.retain(|p| *p != event.path);
                        read.remove(&event.path);
                        order.push(event.path);
                    }
                    _ => {}
                }
            }
            let unread: Vec<String> = order
                .iter()
                .filter(|p| !read.contains_key(*p))
                .cloned()
                .collect();
            if unread.is_empty() {
                break;
            }
            for p in unread {
                let data = read_file(&self.conn, &p, self.known.contains_key(&p)).await?;
                read.insert(p, data);
            }
        }
        for p in order {
            match read.remove(&p).flatten() {
                Some(data) if self.known.get(&p) != Some(&data) => {
                    self.known.insert(p.clone(), data.clone());
                    out.push(change(&self.conn, &p, Some(data)));
                }
                None if self.known.remove(&p).is_some() => {
                    out.push(change(&self.conn, &p, None));
                }
                // Unchanged (reported by a catch-up already), or not a file.
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Watches every file below `key` with a persistent recursive watch. After a reconnect the
/// tree is read again and the differences reported, so no change made while the
/// connection was down is missed.
pub(crate) async fn watch_tree(
    conn: ZkConn,
    rel: &str,
    key: String,
) -> Result<(Vec<RecursiveChange>, WatchStream<RecursiveChange>)> {
    // Arm the watch before reading, so nothing between the read and the watch is missed.
    let k = key.as_str();
    let watcher = conn
        .call(k, |c| async move {
            c.watch(k, AddWatchMode::PersistentRecursive).await
        })
        .await?;
    let known = read_tree(&conn, &key).await?;
    let initial = known
        .iter()
        .filter(|(k, _)| **k != key)
        .map(|(k, d)| change(&conn, k, Some(d.clone())))
        .collect();
    let mut tree = Tree {
        conn,
        key,
        watcher,
        known,
        disconnected: false,
    };
    // Keyed by path: a reader that falls behind gets each file's latest state.
    let (tx, stream) = WatchStream::coalescing::<String>(rel);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                ev = tree.watcher.changed() => ev,
                _ = tx.closed() => return,
            };
            match tree.changes(event).await {
                Ok(changes) => {
                    for c in changes {
                        if !tx.send(c.path.clone(), c) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tx.fail(e);
                    return;
                }
            }
        }
    });
    Ok((initial, stream))
}
