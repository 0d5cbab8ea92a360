//! Copy and compare between two topologies (Vitess's topo2topo helpers, spec §7.2–§7.3),
//! for every kind of record.
//!
//! Copy moves each record's bytes exactly (unknown fields included) with unconditional
//! writes, so it can be re-run. Compare decodes both sides and compares the messages, never
//! backend versions, so it works across backends.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use topo_core::backoff::Backoff;
use topo_core::{Conn, ErrorKind, Result, TopoError, ValueLimit};
use topo_proto::json::{message_type_for_path, to_json, JsonForm};

use crate::{paths, Server, GLOBAL_CELL};

/// A kind of record that copy and compare handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// `CellInfo` records. Off in topo2topo by default: they hold the source's addresses.
    CellInfo,
    /// `CellsAlias` records.
    CellsAlias,
    /// `Keyspace` and `VSchema` records.
    Keyspaces,
    /// `Shard` records.
    Shards,
    /// `ShardReplication` records of every cell.
    ShardReplications,
    /// `Tablet` records of every cell.
    Tablets,
    /// Routing, shard routing, keyspace routing and mirror rules.
    RoutingRules,
    /// `SrvKeyspace` records of every cell.
    SrvKeyspaces,
    /// `SrvVSchema` of every cell.
    SrvVSchemas,
}

impl RecordKind {
    /// Every kind, in copy order (Vitess's order first, then the rest).
    pub const ALL: [RecordKind; 9] = [
        RecordKind::CellInfo,
        RecordKind::CellsAlias,
        RecordKind::Keyspaces,
        RecordKind::Shards,
        RecordKind::ShardReplications,
        RecordKind::Tablets,
        RecordKind::RoutingRules,
        RecordKind::SrvKeyspaces,
        RecordKind::SrvVSchemas,
    ];

    /// A short name (`keyspaces`, `shards`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::CellInfo => "cell infos",
            RecordKind::CellsAlias => "cells aliases",
            RecordKind::Keyspaces => "keyspaces",
            RecordKind::Shards => "shards",
            RecordKind::ShardReplications => "shard replications",
            RecordKind::Tablets => "tablets",
            RecordKind::RoutingRules => "routing rules",
            RecordKind::SrvKeyspaces => "srv keyspaces",
            RecordKind::SrvVSchemas => "srv vschemas",
        }
    }
}

/// One record: the cell whose connection holds it (`global` or a cell) and its path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordRef {
    /// `global` or a cell name.
    pub cell: String,
    /// The path relative to that cell's root.
    pub path: String,
}

impl std::fmt::Display for RecordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.cell, self.path)
    }
}

fn global(path: String) -> RecordRef {
    RecordRef {
        cell: GLOBAL_CELL.to_string(),
        path,
    }
}

/// True when the file exists.
async fn exists(server: &Server, r: &RecordRef) -> Result<bool> {
    let conn = server.conn_for_cell(&r.cell).await?;
    match conn.get(&r.path).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_no_node() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The connection of every cell that `records` name in the topology called `side`, each
/// resolved once (resolving reads the cell's `CellInfo`, so once per record would double
/// the round trips).
///
/// # Errors
/// `FailedPrecondition` naming `side` and the cell that cannot be reached.
async fn cell_conns<'a>(
    server: &Server,
    side: &str,
    records: impl IntoIterator<Item = &'a RecordRef>,
) -> Result<HashMap<String, Arc<dyn Conn>>> {
    let cells: BTreeSet<&str> = records.into_iter().map(|r| r.cell.as_str()).collect();
    let mut conns = HashMap::new();
    for cell in cells {
        let conn = server
            .conn_for_cell(cell)
            .await
            .map_err(|e| TopoError::precondition(format!("{side} has no cell {cell}: {e}")))?;
        conns.insert(cell.to_string(), conn);
    }
    Ok(conns)
}

/// The records of `kind` that `server` holds, sorted.
pub async fn list_records(server: &Server, kind: RecordKind) -> Result<Vec<RecordRef>> {
    let mut out = Vec::new();
    match kind {
        RecordKind::CellInfo => {
            for c in server.get_cell_info_names().await? {
                out.push(global(paths::cell_info(&c)));
            }
        }
        RecordKind::CellsAlias => {
            for a in server.get_cells_aliases().await?.keys() {
                out.push(global(paths::cells_alias(a)));
            }
        }
        RecordKind::Keyspaces => {
            for ks in server.get_keyspaces().await? {
                for r in [global(paths::keyspace(&ks)), global(paths::vschema(&ks))] {
                    if exists(server, &r).await? {
                        out.push(r);
                    }
                }
            }
        }
        RecordKind::Shards => {
            for ks in server.get_keyspaces().await? {
                for shard in server.find_all_shards_in_keyspace(&ks).await?.keys() {
                    out.push(global(paths::shard(&ks, shard)));
                }
            }
        }
        RecordKind::ShardReplications => {
            let cells = server.get_cell_info_names().await?;
            for ks in server.get_keyspaces().await? {
                for shard in server.get_shard_names(&ks).await? {
                    for cell in &cells {
                        let r = RecordRef {
                            cell: cell.clone(),
                            path: paths::shard_replication(&ks, &shard),
                        };
                        if exists(server, &r).await? {
                            out.push(r);
                        }
                    }
                }
            }
        }
        RecordKind::Tablets => {
            for cell in server.get_cell_info_names().await? {
                for t in server.get_tablets_by_cell(&cell, None, None).await? {
                    out.push(RecordRef {
                        cell: cell.clone(),
                        path: paths::tablet(&t.alias()),
                    });
                }
            }
        }
        RecordKind::RoutingRules => {
            for p in [
                paths::ROUTING_RULES,
                paths::SHARD_ROUTING_RULES,
                paths::MIRROR_RULES,
                paths::KEYSPACE_ROUTING_RULES,
            ] {
                let r = global(p.to_string());
                if exists(server, &r).await? {
                    out.push(r);
                }
            }
        }
        RecordKind::SrvKeyspaces => {
            for cell in server.get_cell_info_names().await? {
                for ks in server.get_srv_keyspace_names(&cell).await? {
                    let r = RecordRef {
                        cell: cell.clone(),
                        path: paths::srv_keyspace(&ks),
                    };
                    if exists(server, &r).await? {
                        out.push(r);
                    }
                }
            }
        }
        RecordKind::SrvVSchemas => {
            for cell in server.get_cell_info_names().await? {
                let r = RecordRef {
                    cell,
                    path: paths::SRV_VSCHEMA.to_string(),
                };
                if exists(server, &r).await? {
                    out.push(r);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopySummary {
    /// Records written (or, in a dry run, that would be).
    pub copied: usize,
    /// Records the destination already held with the same bytes.
    pub unchanged: usize,
    /// Records left out because they are over the destination's value limit (only with
    /// [`CopyOptions::skip_too_large`]).
    pub skipped: Vec<RecordRef>,
}

/// How [`copy`] writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Write nothing; count what would be written.
    pub dry_run: bool,
    /// Leave out records over the destination's value limit instead of refusing the copy.
    pub skip_too_large: bool,
    /// Reads and writes in flight at once (0 means [`DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
}

/// Checks the sizes of values about to be written to a topology whose limit is `limit`,
/// before any is written. Returns the labels of the values over it when `skip` (to leave
/// them out); otherwise any value over it fails the whole operation.
///
/// # Errors
/// `FailedPrecondition` listing every value over the limit with its size, and the setting
/// that raises the limit.
pub fn check_sizes<L: std::fmt::Display>(
    limit: Option<ValueLimit>,
    values: impl IntoIterator<Item = (L, usize)>,
    skip: bool,
) -> Result<Vec<L>> {
    let Some(limit) = limit else {
        return Ok(Vec::new());
    };
    let over: Vec<(L, usize)> = values
        .into_iter()
        .filter(|(_, size)| *size > limit.max)
        .collect();
    if over.is_empty() || skip {
        return Ok(over.into_iter().map(|(l, _)| l).collect());
    }
    let list: Vec<String> = over
        .iter()
        .map(|(l, size)| format!("  {l} ({size} bytes)"))
        .collect();
    Err(TopoError::precondition(format!(
        "{} value(s) are over the target's limit of {} bytes ({} raises it, if the servers \
         accept more); nothing was written (--skip-too-large writes the rest):\n{}",
        over.len(),
        limit.max,
        limit.setting,
        list.join("\n")
    )))
}

/// How many writes (or reads) a bulk operation keeps in flight by default: enough to fill
/// an etcd or ZooKeeper pipeline on one host, few enough not to crowd out other clients.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// How many times a bulk write that timed out is tried in all.
pub const WRITE_ATTEMPTS: usize = 3;

/// Writes `bytes` at `path` unconditionally, as bulk writes do: a create first (one round
/// trip on every backend for a new key, as in an empty target, where ZooKeeper's
/// unconditional update of a missing node takes two), an update when the key exists. The
/// write is idempotent, so an attempt that timed out is tried again after a pause,
/// [`WRITE_ATTEMPTS`] in all.
///
/// # Errors
/// The write's error; `Timeout` once every attempt timed out.
pub async fn put(conn: &dyn Conn, path: &str, bytes: &[u8]) -> Result<()> {
    write(conn, path, bytes, false).await
}

/// As [`put`]; `exists` says the key was just seen, so the write starts with the update.
async fn write(conn: &dyn Conn, path: &str, bytes: &[u8], mut exists: bool) -> Result<()> {
    let mut pauses = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut attempt = 1;
    loop {
        let written = if exists {
            conn.update(path, bytes, None).await.map(drop)
        } else {
            match conn.create(path, bytes).await {
                Err(e) if e.is(ErrorKind::NodeExists) => {
                    exists = true;
                    conn.update(path, bytes, None).await.map(drop)
                }
                r => r.map(drop),
            }
        };
        match written {
            Err(e) if e.is(ErrorKind::Timeout) && attempt < WRITE_ATTEMPTS => {
                tracing::warn!(path, attempt, "a write timed out; trying again: {e}");
                attempt += 1;
                tokio::time::sleep(pauses.next_delay()).await;
            }
            r => return r,
        }
    }
}

/// Writes every `(path, bytes)` of `items` to `conn` unconditionally (see [`put`]),
/// `concurrency` at a time, calling `on_written` after each. Stops at the first error
/// (other writes already in flight finish); what was written before stays.
///
/// # Errors
/// The first write error (backend errors name the path).
pub async fn write_all(
    conn: &dyn Conn,
    items: &[(String, Vec<u8>)],
    concurrency: usize,
    on_written: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    let mut writes = futures::stream::iter(items)
        .map(|(path, bytes)| async move {
            put(conn, path, bytes).await?;
            on_written(path);
            Ok::<(), TopoError>(())
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = writes.next().await {
        r?;
    }
    Ok(())
}

/// Reads every `(path, bytes)` of `items` back from `conn`, `concurrency` at a time.
///
/// # Errors
/// `FailedPrecondition` naming the first path that reads back differently; read errors.
pub async fn verify_all(
    conn: &dyn Conn,
    label: &str,
    items: &[(String, Vec<u8>)],
    concurrency: usize,
) -> Result<()> {
    let mut reads = futures::stream::iter(items)
        .map(|(path, bytes)| async move {
            let (got, _) = conn.get(path).await?;
            if &got != bytes {
                return Err(TopoError::precondition(format!(
                    "{label}:{path} reads back differently than written"
                )));
            }
            Ok(())
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = reads.next().await {
        r?;
    }
    Ok(())
}

/// Copies every record of `kinds` from `from` to `to`. Every record is read and checked
/// against the destination's value limit before the first write. `on_record` is called
/// once per record written or found unchanged (for progress).
///
/// # Errors
/// The first read or write error, naming the record; `FailedPrecondition` listing the
/// records over the destination's limit (nothing written then) unless
/// [`CopyOptions::skip_too_large`].
pub async fn copy(
    from: &Server,
    to: &Server,
    kinds: &[RecordKind],
    options: CopyOptions,
    on_record: &(dyn Fn(&RecordRef) + Sync),
) -> Result<CopySummary> {
    let concurrency = match options.concurrency {
        0 => DEFAULT_CONCURRENCY,
        n => n,
    };
    // Read everything first: sizes are checked before the first write.
    let mut by_kind = Vec::new();
    for kind in RecordKind::ALL.iter().filter(|k| kinds.contains(k)) {
        let refs = list_records(from, *kind).await?;
        let sources = &cell_conns(from, "source", &refs).await?;
        let records: Vec<(RecordRef, Vec<u8>)> = futures::stream::iter(refs)
            .map(|r| async move {
                let bytes = sources[&r.cell].get(&r.path).await?.0;
                Ok::<_, TopoError>((r, bytes))
            })
            .buffered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        by_kind.push((*kind, records));
    }
    let skipped = check_sizes(
        to.global().value_limit(),
        by_kind
            .iter()
            .flat_map(|(_, rs)| rs.iter().map(|(r, b)| (r.clone(), b.len()))),
        options.skip_too_large,
    )?;
    let left_out: BTreeSet<&RecordRef> = skipped.iter().collect();
    let mut summary = CopySummary::default();
    // Kind by kind, in order: a cell's records need its CellInfo in the destination.
    for (kind, records) in &by_kind {
        let records: Vec<_> = records
            .iter()
            .filter(|(r, _)| !left_out.contains(r))
            .collect();
        let dests = &cell_conns(to, "destination", records.iter().map(|(r, _)| r)).await?;
        let mut results = futures::stream::iter(records)
            .map(|(r, bytes)| async move {
                let dest = &dests[&r.cell];
                let existing = match dest.get(&r.path).await {
                    Ok((existing, _)) => Some(existing),
                    Err(TopoError::NoNode(_)) => None,
                    Err(e) => return Err(e),
                };
                let same = existing.as_deref() == Some(bytes.as_slice());
                if !same && !options.dry_run {
                    write(dest.as_ref(), &r.path, bytes, existing.is_some()).await?;
                }
                on_record(r);
                Ok(same)
            })
            .buffer_unordered(concurrency);
        while let Some(same) = results.next().await {
            if same? {
                summary.unchanged += 1;
            } else {
                summary.copied += 1;
            }
        }
        tracing::info!(kind = kind.name(), "copied");
    }
    summary.skipped = skipped;
    Ok(summary)
}

/// The decoded form of a record for comparison (JSON of the message; raw text for files
/// with no record type).
async fn decoded(
    conns: &HashMap<String, Arc<dyn Conn>>,
    r: &RecordRef,
) -> Result<serde_json::Value> {
    let (bytes, _) = conns[&r.cell].get(&r.path).await?;
    match message_type_for_path(&r.path) {
        Some(t) => to_json(&bytes, t, JsonForm::Vtctld),
        None => Ok(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).into_owned(),
        )),
    }
}

/// Compares every record of `kinds` in `a` and `b` as decoded messages.
///
/// # Errors
/// `FailedPrecondition` naming the first record that is missing on one side or differs.
pub async fn compare(a: &Server, b: &Server, kinds: &[RecordKind]) -> Result<usize> {
    let mut compared = 0;
    for kind in RecordKind::ALL.iter().filter(|k| kinds.contains(k)) {
        let left: BTreeSet<RecordRef> = list_records(a, *kind).await?.into_iter().collect();
        let right: BTreeSet<RecordRef> = list_records(b, *kind).await?.into_iter().collect();
        if let Some(r) = left.symmetric_difference(&right).next() {
            let side = if left.contains(r) { "second" } else { "first" };
            return Err(TopoError::precondition(format!(
                "{} differ: {r} is missing in the {side} topology",
                kind.name()
            )));
        }
        let conns_a = cell_conns(a, "the first topology", &left).await?;
        let conns_b = cell_conns(b, "the second topology", &left).await?;
        for r in &left {
            if decoded(&conns_a, r).await? != decoded(&conns_b, r).await? {
                return Err(TopoError::precondition(format!(
                    "{} differ: {r} has different contents",
                    kind.name()
                )));
            }
            compared += 1;
        }
    }
    Ok(compared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use topo_core::memory::MemoryStore;
    use topo_core::wrap::{ConnHook, HookedConn, Op};

    /// Fails the first `timeouts` creates with `Timeout` (not applied) and counts calls.
    #[derive(Debug, Default)]
    struct Flaky {
        timeouts: AtomicUsize,
        calls: Mutex<Vec<Op>>,
    }

    #[async_trait::async_trait]
    impl ConnHook for Flaky {
        type Permit = ();
        async fn before(&self, op: Op, path: &str) -> Result<()> {
            self.calls.lock().unwrap().push(op);
            let left = self.timeouts.load(Ordering::SeqCst);
            if op == Op::Create && left > 0 {
                self.timeouts.store(left - 1, Ordering::SeqCst);
                return Err(TopoError::Timeout(format!("Create {path}")));
            }
            Ok(())
        }
        fn after(&self, _op: Op, _permit: (), _error: Option<&TopoError>) {}
    }

    fn flaky(timeouts: usize) -> HookedConn<Flaky> {
        let hook = Flaky {
            timeouts: AtomicUsize::new(timeouts),
            ..Default::default()
        };
        HookedConn::new(MemoryStore::new().conn("/r"), hook)
    }

    /// A new key is one create; an existing key a create, then an update.
    #[tokio::test]
    async fn put_creates_first_and_updates_an_existing_key() {
        let conn = flaky(0);
        put(&conn, "a", b"1").await.unwrap();
        assert_eq!(*conn.hook().calls.lock().unwrap(), [Op::Create]);
        put(&conn, "a", b"2").await.unwrap();
        assert_eq!(
            *conn.hook().calls.lock().unwrap(),
            [Op::Create, Op::Create, Op::Update]
        );
        assert_eq!(conn.get("a").await.unwrap().0, b"2");
    }

    /// A key known to exist (copy has just read it) is one update, no create.
    #[tokio::test]
    async fn a_known_key_is_updated_at_once() {
        let conn = flaky(0);
        put(&conn, "a", b"1").await.unwrap();
        write(&conn, "a", b"2", true).await.unwrap();
        assert_eq!(*conn.hook().calls.lock().unwrap(), [Op::Create, Op::Update]);
        assert_eq!(conn.get("a").await.unwrap().0, b"2");
    }

    /// Timed-out writes are tried again, up to WRITE_ATTEMPTS in all.
    #[tokio::test]
    async fn put_retries_timed_out_writes() {
        let conn = flaky(WRITE_ATTEMPTS - 1);
        put(&conn, "a", b"1").await.unwrap();
        assert_eq!(conn.get("a").await.unwrap().0, b"1");
        let conn = flaky(WRITE_ATTEMPTS);
        let err = put(&conn, "a", b"1").await.unwrap_err();
        assert!(err.is(ErrorKind::Timeout), "{err}");
        assert_eq!(conn.hook().calls.lock().unwrap().len(), WRITE_ATTEMPTS);
        assert!(conn.get("a").await.unwrap_err().is_no_node());
    }

    #[test]
    fn sizes_are_checked_all_at_once() {
        let limit = Some(ValueLimit {
            max: 10,
            setting: "--max",
        });
        let values = [("a", 10), ("b", 11), ("c", 3), ("d", 12)];
        let err = check_sizes(limit, values, false).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("2 value(s)"), "{text}");
        assert!(
            text.contains("b (11 bytes)") && text.contains("d (12 bytes)"),
            "{text}"
        );
        assert!(!text.contains("a (") && text.contains("--max"), "{text}");
        assert_eq!(check_sizes(limit, values, true).unwrap(), ["b", "d"]);
        assert!(check_sizes(None, values, false).unwrap().is_empty());
    }
}
