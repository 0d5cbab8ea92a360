//! The history: one JSON object per line, one line per invocation or completion.
//!
//! ```json
//! {"index": 0, "time_ns": 1234, "process": 3, "type": "invoke", "f": "cas", "key": "r1", "value": [4, 9]}
//! ```

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether an event starts an operation or how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The client is about to call.
    Invoke,
    /// The call succeeded.
    Ok,
    /// The call definitely did not take effect.
    Fail,
    /// The outcome is unknown: the operation may or may not have taken effect.
    Info,
}

/// The operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    /// Register read; `ok` carries the value (null when absent).
    Read,
    /// Register write of an integer.
    Write,
    /// Register compare-and-set; the value is `[expected, new]`.
    Cas,
    /// Lock acquisition; `ok` carries the fencing token.
    Lock,
    /// Lock release.
    Unlock,
    /// Fenced increment of the lock workload's counter; `ok` carries `[token, new value]`.
    Incr,
    /// Leadership gained (election workload).
    Lead,
    /// Leadership given up or lost.
    Resign,
    /// A watcher saw a value.
    WatchEvent,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the merged history (ordered by `time_ns`).
    pub index: u64,
    /// CLOCK_MONOTONIC nanoseconds, comparable across the processes of one machine.
    pub time_ns: u64,
    /// The client process (one operation at a time per process).
    pub process: u64,
    /// Invocation or completion.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The operation.
    pub f: F,
    /// The key (register key, counter path).
    #[serde(default)]
    pub key: String,
    /// The operation's argument (invoke) or result (completion).
    #[serde(default)]
    pub value: Value,
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine, so
/// histories of worker processes merge in real-time order.
pub fn now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        // The monotonic clock cannot fail on Linux; keep the history usable regardless.
        Err(_) => 0,
    }
}

/// Collects the events of the clients of one process.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    /// Each event is also appended here at once, so a worker killed with SIGKILL leaves
    /// every event it recorded behind.
    sink: Option<Arc<Mutex<std::fs::File>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder that also appends every event to `path` as it happens.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn with_file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Recorder {
            events: Arc::default(),
            sink: Some(Arc::new(Mutex::new(file))),
        })
    }

    /// Records an event now.
    pub fn record(&self, process: u64, kind: Kind, f: F, key: &str, value: Value) {
        let event = Event {
            index: 0,
            time_ns: now_ns(),
            process,
            kind,
            f,
            key: key.to_string(),
            value,
        };
        if let Some(sink) = &self.sink {
            // One write per line, so a kill never leaves half a line behind a whole one.
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            let mut file = sink.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = file.write_all(&line) {
                tracing::warn!("cannot append to the history: {e}");
            }
        }
        self.lock().push(event);
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        // A client that panicked mid-push leaves a usable vector behind.
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Orders events by time (stable: a process's own order is kept), closes every operation
/// left open (a killed process, a client stopped at the deadline) with an `info` at
/// `end_ns`, and numbers the result.
pub fn merge(mut events: Vec<Event>, end_ns: u64) -> Vec<Event> {
    events.sort_by_key(|e| e.time_ns);
    let mut open: std::collections::BTreeMap<u64, Event> = Default::default();
    for e in &events {
        if e.kind == Kind::Invoke {
            open.insert(e.process, e.clone());
        } else {
            open.remove(&e.process);
        }
    }
    for (_, mut e) in open {
        e.kind = Kind::Info;
        e.time_ns = end_ns.max(e.time_ns);
        e.value = Value::Null;
        events.push(e);
    }
    events.sort_by_key(|e| e.time_ns);
    for (i, e) in events.iter_mut().enumerate() {
        e.index = i as u64;
    }
    events
}

/// Writes `events` as JSON lines.
///
/// # Errors
/// When the file cannot be written.
pub fn save(path: &Path, events: &[Event]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a JSON-lines history; blank lines are skipped.
///
/// # Errors
/// When the file cannot be read, or a line (named by number) is not an event.
pub fn load(path: &Path) -> std::io::Result<Vec<Event>> {
    let file = std::fs::File::open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: not a history event: {e}", path.display(), n + 1),
            )
        })?;
        events.push(event);
    }
    Ok(events)
}
