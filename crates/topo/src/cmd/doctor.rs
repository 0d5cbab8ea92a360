//! `doctor`: is the topology healthy, and set up as Vitess's production checklist says?
//!
//! Every check gives a status: `ok`, `info`, `warn` (works, but not as production should
//! be), `stale` (a lock held too long) or `fail`. The exit status is 1 when a check failed
//! or a lock is stale. `--format json` prints the same checks as one object.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use topo_core::{Conn, Result};
use toposphere::Server;

use crate::args::{DoctorArgs, DoctorFormat, GlobalArgs};
use crate::cmd::backups;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Info,
    Warn,
    Stale,
    Fail,
}

impl Status {
    /// The text form's label.
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "WARN",
            Status::Stale => "STALE",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Serialize)]
struct Check {
    /// What was checked (`answers`, `encryption`, `servers`, `root`, `serving-graph`,
    /// `round-trip`, `lock`, `held-lock`, `backup`).
    check: &'static str,
    /// `global`, a cell, a lock's directory or the backup directory.
    subject: String,
    status: Status,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
}

/// The checks found so far.
#[derive(Debug, Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: &'static str, subject: &str, status: Status, message: String) {
        self.checks.push(Check {
            check,
            subject: subject.to_string(),
            status,
            message,
            latency_ms: None,
        });
    }

    /// An `ok` check that took `took`, or a failed one.
    fn outcome(
        &mut self,
        check: &'static str,
        subject: &str,
        outcome: std::result::Result<(Duration, String), String>,
    ) {
        match outcome {
            Ok((took, message)) => {
                self.add(check, subject, Status::Ok, message);
                if let Some(c) = self.checks.last_mut() {
                    c.latency_ms = Some((took.as_secs_f64() * 10_000.0).round() / 10.0);
                }
            }
            Err(message) => self.add(check, subject, Status::Fail, message),
        }
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// How connections of `implementation` travel with `g`'s flags (a tee: its primary's).
fn transport(g: &GlobalArgs, implementation: &str) -> &'static str {
    let (ca, cert) = match implementation {
        "etcd2" => (&g.etcd_tls_ca, &g.etcd_tls_cert),
        "zk2" => (&g.zk_tls_ca, &g.zk_tls_cert),
        "local" => return "local file, no network",
        "memory" => return "in memory, no network",
        "tee" => {
            return transport(
                g,
                g.tee_primary_implementation.as_deref().unwrap_or_default(),
            )
        }
        _ => return "transport unknown",
    };
    match (ca, cert) {
        (_, Some(_)) => "TLS, mutual",
        (Some(_), None) => "TLS, server authenticated",
        (None, None) => PLAIN,
    }
}

const PLAIN: &str = "plain TCP, NOT encrypted";

/// The servers a server address names (ZooKeeper's observers after `|` not counted).
fn servers(address: &str) -> Vec<&str> {
    address
        .split('|')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether one root is the other or holds it.
fn nested(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
    let inside = |outer: &str, inner: &str| {
        inner == outer || inner.starts_with(&format!("{outer}/")) || outer.is_empty()
    };
    inside(a, b) || inside(b, a)
}

/// Lists the root to see that the connection answers.
async fn probe_list(conn: &dyn Conn) -> std::result::Result<Duration, String> {
    let start = Instant::now();
    match conn.list_dir("/", false).await {
        Ok(_) => Ok(start.elapsed()),
        Err(e) if e.is_no_node() => Ok(start.elapsed()),
        Err(e) => Err(e.to_string()),
    }
}

/// The directories whose `locks` children are lock entries.
async fn lock_dirs(ts: &Server) -> Result<Vec<String>> {
    let mut dirs = vec!["routing_rules".to_string()];
    for ks in ts.get_keyspaces().await? {
        dirs.push(format!("keyspaces/{ks}"));
        for shard in ts.get_shard_names(&ks).await.unwrap_or_default() {
            dirs.push(format!("keyspaces/{ks}/shards/{shard}"));
        }
    }
    if let Ok(named) = ts.global().list_dir("internal/named_locks", false).await {
        dirs.extend(
            named
                .into_iter()
                .map(|e| format!("internal/named_locks/{}", e.name)),
        );
    }
    Ok(dirs)
}

/// A lock entry's holder and age, from Vitess's JSON descriptor.
fn describe(contents: &[u8]) -> (String, Option<Duration>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(contents) else {
        return (String::from_utf8_lossy(contents).into_owned(), None);
    };
    let holder = format!(
        "{}@{} ({})",
        v["UserName"].as_str().unwrap_or("?"),
        v["HostName"].as_str().unwrap_or("?"),
        v["Action"].as_str().unwrap_or("?")
    );
    let age = v["Time"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        });
    (holder, age)
}

/// Vitess runs the global topology on about five servers, one per cell, and each cell's
/// on three or five: fewer than three lose the topology with one server, and an even
/// number tolerates no more failures than one fewer.
fn check_servers(r: &mut Report, subject: &str, implementation: &str, address: &str) {
    if !matches!(implementation, "etcd2" | "zk2") {
        return;
    }
    let n = servers(address).len();
    if n < 3 {
        r.add(
            "servers",
            subject,
            Status::Warn,
            format!("{subject} runs on {n} server(s); production needs 3 or 5 (one lost server loses it)"),
        );
    } else if n % 2 == 0 {
        r.add(
            "servers",
            subject,
            Status::Warn,
            format!(
                "{subject} runs on {n} servers; an even number survives no more failures than {}",
                n - 1
            ),
        );
    } else {
        r.add(
            "servers",
            subject,
            Status::Ok,
            format!("{subject} runs on {n} servers"),
        );
    }
}

/// A cell on the servers of the global topology (or of another cell) needs a root of its
/// own, neither inside nor around the other's.
fn check_roots(r: &mut Report, places: &[(String, String, String)]) {
    for (i, (cell, address, root)) in places.iter().enumerate().skip(1) {
        let mine = servers(address);
        let clash = places[..i].iter().find(|(_, a, other_root)| {
            servers(a).iter().any(|s| mine.contains(s)) && nested(root, other_root)
        });
        match clash {
            Some((other, _, other_root)) => r.add(
                "root",
                cell,
                Status::Fail,
                format!(
                    "cell {cell} shares servers with {other} and its root {root} overlaps {other}'s root {other_root}: give it a root of its own"
                ),
            ),
            None => r.add("root", cell, Status::Ok, format!("cell {cell} has a root of its own ({root})")),
        }
    }
}

/// A cell's serving graph: its SrvVSchema, and a SrvKeyspace for every keyspace with
/// tablets in the cell.
async fn check_serving(r: &mut Report, ts: &Server, cell: &str, conn: &dyn Conn, keyspaces: usize) {
    let mut missing = Vec::new();
    match ts.get_srv_vschema(cell).await {
        Ok(_) => {}
        Err(e) if e.is_no_node() && keyspaces == 0 => {}
        Err(e) if e.is_no_node() => {
            missing.push("its SrvVSchema (topo RebuildVSchemaGraph)".to_string())
        }
        Err(e) => missing.push(format!("its SrvVSchema ({e})")),
    }
    let with_tablets = match conn.list_dir("keyspaces", false).await {
        Ok(entries) => entries.into_iter().map(|e| e.name).collect(),
        Err(e) if e.is_no_node() => Vec::new(),
        Err(e) => {
            missing.push(format!("its keyspaces ({e})"));
            Vec::new()
        }
    };
    for ks in with_tablets {
        match ts.get_srv_keyspace(cell, &ks).await {
            Ok(_) => {}
            Err(e) if e.is_no_node() => missing.push(format!(
                "the SrvKeyspace of {ks}, which has tablets there (topo RebuildKeyspaceGraph {ks})"
            )),
            Err(e) => missing.push(format!("the SrvKeyspace of {ks} ({e})")),
        }
    }
    if missing.is_empty() {
        r.add(
            "serving-graph",
            cell,
            Status::Ok,
            format!("cell {cell} has its serving graph"),
        );
    } else {
        r.add(
            "serving-graph",
            cell,
            Status::Fail,
            format!("cell {cell} lacks {}", missing.join("; ")),
        );
    }
}

/// The newest rotated backup in `dir` is younger than `max_age`.
fn check_backup(r: &mut Report, dir: &Path, max_age: Duration) {
    let subject = dir.display().to_string();
    let newest = match backups::list(dir) {
        Ok(list) => list.into_iter().last(),
        Err(e) => {
            r.add("backup", &subject, Status::Fail, e.to_string());
            return;
        }
    };
    let Some((path, taken)) = newest else {
        r.add(
            "backup",
            &subject,
            Status::Fail,
            format!("no backup in {subject} (topo backup --keep N {subject})"),
        );
        return;
    };
    let age = (chrono::Utc::now() - taken).to_std().unwrap_or_default();
    let status = if age > max_age {
        Status::Fail
    } else {
        Status::Ok
    };
    r.add(
        "backup",
        &subject,
        status,
        format!(
            "the newest backup, {}, is {}s old (at most {}s)",
            path.display(),
            age.as_secs(),
            max_age.as_secs()
        ),
    );
}

async fn check(ts: &Server, g: &GlobalArgs, a: &DoctorArgs) -> Report {
    let mut r = Report::default();
    let transport = transport(g, &g.implementation);
    let backend = match g.implementation.as_str() {
        "tee" => g.tee_primary_implementation.clone().unwrap_or_default(),
        other => other.to_string(),
    };
    let answer = probe_list(ts.global().as_ref()).await;
    r.outcome(
        "answers",
        "global",
        answer
            .map(|d| (d, format!("global answers ({}; {transport})", ms(d))))
            .map_err(|e| format!("global does not answer: {e}")),
    );
    if transport == PLAIN {
        r.add(
            "encryption",
            "global",
            Status::Warn,
            "connections are plain TCP, NOT encrypted: give the TLS flags (see README, Security)"
                .into(),
        );
    }
    check_servers(&mut r, "global", &backend, &g.server_address);
    let cells = match ts.get_cell_info_names().await {
        Ok(c) => c,
        Err(e) => {
            r.add(
                "answers",
                "global",
                Status::Fail,
                format!("cannot list the cells: {e}"),
            );
            Vec::new()
        }
    };
    let keyspaces = ts
        .get_keyspaces()
        .await
        .map(|k| k.len())
        .unwrap_or_default();
    let mut places = vec![(
        "global".to_string(),
        g.server_address.clone(),
        g.root.clone(),
    )];
    for cell in &cells {
        let conn = ts.conn_for_cell(cell).await.map_err(|e| e.to_string());
        let answer = match &conn {
            Ok(conn) => probe_list(conn.as_ref()).await,
            Err(e) => Err(e.clone()),
        };
        let answered = answer.is_ok();
        r.outcome(
            "answers",
            cell,
            answer
                .map(|d| (d, format!("cell {cell} answers ({}; {transport})", ms(d))))
                .map_err(|e| format!("cell {cell} does not answer: {e}")),
        );
        let conn = match conn {
            Ok(conn) if answered => conn,
            _ => continue,
        };
        if let Ok(info) = ts.get_cell_info(cell, false).await {
            let address = if info.server_address.is_empty() {
                g.server_address.clone()
            } else {
                info.server_address.clone()
            };
            check_servers(&mut r, cell, &backend, &address);
            places.push((cell.clone(), address, info.root.clone()));
        }
        check_serving(&mut r, ts, cell, conn.as_ref(), keyspaces).await;
    }
    check_roots(&mut r, &places);

    let probe = format!("toposphere-doctor/probe-{}", std::process::id());
    let start = Instant::now();
    let round_trip = async {
        let v = ts.global().create(&probe, b"probe").await?;
        let (bytes, _) = ts.global().get(&probe).await?;
        ts.global().delete(&probe, Some(&v)).await?;
        Ok::<_, topo_core::TopoError>(bytes == b"probe")
    }
    .await;
    let round_trip = match round_trip {
        Ok(true) => {
            let d = start.elapsed();
            Ok((
                d,
                format!("a probe key was written, read and deleted ({})", ms(d)),
            ))
        }
        Ok(false) => Err("the probe key read back different contents".to_string()),
        Err(e) => Err(format!("probe key round trip: {e}")),
    };
    r.outcome("round-trip", "global", round_trip);
    let start = Instant::now();
    let lock = match ts.lock_name("toposphere-doctor", "topo doctor").await {
        Ok(lock) => {
            let d = start.elapsed();
            lock.unlock()
                .await
                .map(|()| (d, format!("a lock was taken ({}) and released", ms(d))))
                .map_err(|e| format!("a lock was taken but not released: {e}"))
        }
        Err(e) => Err(format!("cannot take a lock: {e}")),
    };
    r.outcome("lock", "global", lock);
    match lock_dirs(ts).await {
        Ok(dirs) => {
            for dir in dirs {
                held_locks(&mut r, ts, &dir, a.stale_after).await;
            }
        }
        Err(e) => r.add(
            "held-lock",
            "global",
            Status::Fail,
            format!("cannot list the lock directories: {e}"),
        ),
    }
    if let Some(dir) = &a.backup_dir {
        check_backup(&mut r, dir, a.backup_max_age);
    }
    r
}

/// The lock entries of `dir`, stale when held longer than `stale_after`.
async fn held_locks(r: &mut Report, ts: &Server, dir: &str, stale_after: Duration) {
    let locks = format!("{dir}/locks");
    let Ok(entries) = ts.global().list_dir(&locks, false).await else {
        return;
    };
    for e in entries {
        let path = format!("{locks}/{}", e.name);
        let Ok((contents, _)) = ts.global().get(&path).await else {
            continue;
        };
        let (holder, age) = describe(&contents);
        match age {
            Some(a) if a > stale_after => r.add(
                "held-lock",
                dir,
                Status::Stale,
                format!("lock on {dir} held by {holder} for {}s", a.as_secs()),
            ),
            Some(a) => r.add(
                "held-lock",
                dir,
                Status::Info,
                format!("lock on {dir} held by {holder} for {}s", a.as_secs()),
            ),
            None => r.add(
                "held-lock",
                dir,
                Status::Info,
                format!("lock on {dir} held by {holder}"),
            ),
        }
    }
}

pub(crate) async fn run(ts: &Server, g: &GlobalArgs, a: DoctorArgs) -> Result<ExitCode> {
    let r = check(ts, g, &a).await;
    let (failures, stale, warnings) = (
        r.count(Status::Fail),
        r.count(Status::Stale),
        r.count(Status::Warn),
    );
    let healthy = failures == 0 && stale == 0;
    match a.format {
        DoctorFormat::Json => crate::output::print(&serde_json::json!({
            "healthy": healthy,
            "failures": failures,
            "stale_locks": stale,
            "warnings": warnings,
            "checks": r.checks,
        })),
        DoctorFormat::Text => {
            for c in &r.checks {
                crate::out!("{:<6}{}", c.status.label(), c.message);
            }
            if !healthy {
                crate::out!("{failures} checks failed, {stale} stale locks.");
            } else if warnings > 0 {
                crate::out!("The topology is healthy, with {warnings} warnings.");
            } else {
                crate::out!("The topology is healthy.");
            }
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
