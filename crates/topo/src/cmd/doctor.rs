//! `doctor`: is the topology healthy?

use std::process::ExitCode;
use std::time::{Duration, Instant};

use topo_core::{Conn, Result};
use toposphere::Server;

use crate::args::GlobalArgs;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// How connections of `g`'s implementation travel: every cell's connection uses the same
/// flags, so this holds for each.
fn transport(g: &GlobalArgs) -> &'static str {
    let (ca, cert) = match g.implementation.as_str() {
        "etcd2" => (&g.etcd_tls_ca, &g.etcd_tls_cert),
        "zk2" => (&g.zk_tls_ca, &g.zk_tls_cert),
        "local" => return "local file, no network",
        "memory" => return "in memory, no network",
        _ => return "transport unknown",
    };
    match (ca, cert) {
        (_, Some(_)) => "TLS, mutual",
        (Some(_), None) => "TLS, server authenticated",
        (None, None) => "plain TCP, NOT encrypted",
    }
}

/// Lists `dir` to see that the connection answers.
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

pub(crate) async fn run(ts: &Server, g: &GlobalArgs, stale_after: Duration) -> Result<ExitCode> {
    let mut failures = 0;
    let transport = transport(g);
    match probe_list(ts.global().as_ref()).await {
        Ok(d) => crate::out!("ok    global answers ({}; {transport})", ms(d)),
        Err(e) => {
            crate::out!("FAIL  global does not answer: {e}");
            failures += 1;
        }
    }
    for cell in ts.get_cell_info_names().await? {
        let r = match ts.conn_for_cell(&cell).await {
            Ok(conn) => probe_list(conn.as_ref()).await,
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(d) => crate::out!("ok    cell {cell} answers ({}; {transport})", ms(d)),
            Err(e) => {
                crate::out!("FAIL  cell {cell} does not answer: {e}");
                failures += 1;
            }
        }
    }
    let probe = format!("toposphere-doctor/probe-{}", std::process::id());
    let start = Instant::now();
    let round_trip = async {
        let v = ts.global().create(&probe, b"probe").await?;
        let (bytes, _) = ts.global().get(&probe).await?;
        ts.global().delete(&probe, Some(&v)).await?;
        Ok::<_, topo_core::TopoError>(bytes == b"probe")
    }
    .await;
    match round_trip {
        Ok(true) => crate::out!(
            "ok    a probe key was written, read and deleted ({})",
            ms(start.elapsed())
        ),
        Ok(false) => {
            crate::out!("FAIL  the probe key read back different contents");
            failures += 1;
        }
        Err(e) => {
            crate::out!("FAIL  probe key round trip: {e}");
            failures += 1;
        }
    }
    let start = Instant::now();
    match ts.lock_name("toposphere-doctor", "topo doctor").await {
        Ok(lock) => {
            let acquired = start.elapsed();
            lock.unlock().await?;
            crate::out!("ok    a lock was taken ({}) and released", ms(acquired));
        }
        Err(e) => {
            crate::out!("FAIL  cannot take a lock: {e}");
            failures += 1;
        }
    }
    let mut stale = 0;
    for dir in lock_dirs(ts).await? {
        let locks = format!("{dir}/locks");
        let Ok(entries) = ts.global().list_dir(&locks, false).await else {
            continue;
        };
        for e in entries {
            let path = format!("{locks}/{}", e.name);
            let Ok((contents, _)) = ts.global().get(&path).await else {
                continue;
            };
            let (holder, age) = describe(&contents);
            match age {
                Some(a) if a > stale_after => {
                    crate::out!("STALE lock on {dir} held by {holder} for {}s", a.as_secs());
                    stale += 1;
                }
                Some(a) => crate::out!("info  lock on {dir} held by {holder} for {}s", a.as_secs()),
                None => crate::out!("info  lock on {dir} held by {holder}"),
            }
        }
    }
    if failures == 0 && stale == 0 {
        crate::out!("The topology is healthy.");
        Ok(ExitCode::SUCCESS)
    } else {
        crate::out!("{failures} checks failed, {stale} stale locks.");
        Ok(ExitCode::FAILURE)
    }
}
