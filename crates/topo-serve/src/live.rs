//! Live updates: watches on the global cell and every cell turn into change events for the
//! pages (server-sent events), and their failures into a connection status.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use topo_core::{Conn, ErrorKind, TopoError};
use toposphere::Server;

use crate::metrics::ExtraCounts;
use crate::model::{self, GLOBAL};

/// How often a backend without recursive watches (ZooKeeper) is polled for changes.
const POLL_EVERY: Duration = Duration::from_millis(400);
/// First and largest wait before re-opening a failed watch.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the set of cells is re-read and every cell probed (besides on every change of
/// the global cell). A watch may retry quietly while its server is down, so the probe is
/// what notices a lost connection.
const CELLS_EVERY: Duration = Duration::from_secs(2);
/// The shortest pause between two such passes.
const CELLS_AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// What the event stream tells the pages.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Event {
    /// Something changed in the topology.
    Change {
        /// A counter of changes.
        generation: u64,
    },
    /// Whether every watched cell answers; `lost` names those that do not, with the error.
    Status {
        /// Cell name to error, for cells whose watch failed.
        lost: BTreeMap<String, String>,
    },
}

/// The shared live state.
#[derive(Debug)]
pub struct Live {
    tx: broadcast::Sender<Event>,
    lost: Mutex<BTreeMap<String, String>>,
    generation: AtomicU64,
    open_watches: AtomicU64,
    watch_events: AtomicU64,
    watch_errors: AtomicU64,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            tx: broadcast::channel(256).0,
            lost: Mutex::default(),
            generation: AtomicU64::new(0),
            open_watches: AtomicU64::new(0),
            watch_events: AtomicU64::new(0),
            watch_errors: AtomicU64::new(0),
        }
    }
}

impl Live {
    /// A receiver of later events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// The current status event.
    pub fn status(&self) -> Event {
        Event::Status {
            lost: self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Cells whose watch failed, with the error.
    pub fn lost(&self) -> BTreeMap<String, String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The watch counters for `/metrics`.
    pub fn counts(&self) -> ExtraCounts {
        ExtraCounts {
            open_watches: self.open_watches.load(Ordering::Relaxed),
            watch_events: self.watch_events.load(Ordering::Relaxed),
            watch_errors: self.watch_errors.load(Ordering::Relaxed),
            srv_cache: None,
        }
    }

    fn changed(&self) {
        self.watch_events.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        // No receiver is fine: no page is open.
        let _ = self.tx.send(Event::Change { generation });
    }

    fn set_status(&self, cell: &str, error: Option<&TopoError>) {
        let changed = {
            let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
            match error {
                Some(e) => lost.insert(cell.to_string(), e.to_string()) != Some(e.to_string()),
                None => lost.remove(cell).is_some(),
            }
        };
        if changed {
            let _ = self.tx.send(self.status());
        }
    }
}

/// Counts one open watch (or poll) while it lives, so the gauge also falls when the task
/// holding it is aborted (a cell removed, the server stopped).
struct OpenWatch<'a>(&'a AtomicU64);

impl<'a> OpenWatch<'a> {
    fn new(live: &'a Live) -> Self {
        live.open_watches.fetch_add(1, Ordering::Relaxed);
        OpenWatch(&live.open_watches)
    }
}

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Watches `conn` (the cell `cell`) until the task is aborted, reporting changes and
/// failures to `live`. Uses a recursive watch of the root where the backend has one, and
/// polls the file versions where it has not.
async fn watch_cell(live: Arc<Live>, cell: String, conn: Arc<dyn Conn>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match conn.watch_recursive("/").await {
            Ok((_initial, mut stream)) => {
                live.set_status(&cell, None);
                // What happened while the watch was down is unknown: refresh.
                live.changed();
                backoff = BACKOFF_MIN;
                let open = OpenWatch::new(&live);
                let end = loop {
                    match stream.next().await {
                        Some(Ok(_)) => live.changed(),
                        Some(Err(e)) => break e,
                        None => break TopoError::backend_msg("watch", "the watch ended"),
                    }
                };
                drop(open);
                live.watch_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(cell, "watch ended: {end}; re-watching");
                live.set_status(&cell, Some(&end));
            }
            Err(e) if e.is(ErrorKind::NoImplementation) => {
                tracing::debug!(cell, "no recursive watch ({e}); polling");
                poll_cell(&live, &cell, conn.as_ref()).await;
            }
            Err(e) => {
                tracing::warn!(cell, "cannot watch: {e}");
                live.set_status(&cell, Some(&e));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Polls the paths and versions of every file of a cell; returns when a read fails. A poll
/// counts as an open watch.
async fn poll_cell(live: &Live, cell: &str, conn: &dyn Conn) {
    let mut last: Option<Vec<(String, String)>> = None;
    let _open = OpenWatch::new(live);
    loop {
        match model::all_files(conn).await {
            Ok(files) => {
                live.set_status(cell, None);
                let now: Vec<(String, String)> = files
                    .into_iter()
                    .map(|(f, _)| (f.path, f.version))
                    .collect();
                if last.as_ref().is_some_and(|l| *l != now) {
                    live.changed();
                }
                last = Some(now);
            }
            Err(e) => {
                live.watch_errors.fetch_add(1, Ordering::Relaxed);
                live.set_status(cell, Some(&e));
                return;
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Lists the root of a cell to see that it answers, and records the outcome.
async fn probe(live: &Live, cell: &str, conn: &dyn Conn) {
    match conn.list_dir("/", false).await {
        Err(e) if !e.is_no_node() => live.set_status(cell, Some(&e)),
        _ => live.set_status(cell, None),
    }
}

/// Keeps a watch on the global cell and on every cell, adding cells as they appear and
/// dropping those that disappear. Runs until aborted; aborting it stops every watch.
pub async fn run(ts: Server, live: Arc<Live>) {
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    // Aborts the per-cell tasks when this task is aborted.
    struct AbortAll<'a>(&'a mut HashMap<String, JoinHandle<()>>);
    impl Drop for AbortAll<'_> {
        fn drop(&mut self) {
            self.0.values().for_each(JoinHandle::abort);
        }
    }
    let tasks = AbortAll(&mut tasks);
    tasks.0.insert(
        GLOBAL.to_string(),
        tokio::spawn(watch_cell(live.clone(), GLOBAL.into(), ts.global().clone())),
    );
    let mut changes = live.subscribe();
    loop {
        probe(&live, GLOBAL, ts.global().as_ref()).await;
        match ts.get_cell_info_names().await {
            Ok(names) => {
                tasks.0.retain(|cell, task| {
                    let keep = cell == GLOBAL || names.contains(cell);
                    if !keep {
                        task.abort();
                        live.set_status(cell, None);
                    }
                    keep
                });
                for cell in names {
                    let conn = match ts.conn_for_cell(&cell).await {
                        Ok(conn) => conn,
                        Err(e) => {
                            live.set_status(&cell, Some(&e));
                            continue;
                        }
                    };
                    match tasks.0.entry(cell) {
                        Entry::Occupied(e) => probe(&live, e.key(), conn.as_ref()).await,
                        Entry::Vacant(e) => {
                            let task =
                                tokio::spawn(watch_cell(live.clone(), e.key().clone(), conn));
                            e.insert(task);
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("cannot read the cells: {e}"),
        }
        // Re-read the cells after a change (perhaps to cells/) or a while, but not once per
        // change: a burst of writes would otherwise cost a probe of every cell each.
        let _ = tokio::time::timeout(CELLS_EVERY, async {
            while let Ok(ev) = changes.recv().await {
                if matches!(ev, Event::Change { .. }) {
                    break;
                }
            }
        })
        .await;
        tokio::time::sleep(CELLS_AT_MOST_EVERY).await;
        // The pass that follows reads the state after every change seen so far.
        changes = changes.resubscribe();
    }
}
