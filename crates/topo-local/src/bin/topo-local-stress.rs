//! A child process for the local backend's multi-process tests (not a user tool).
//!
//! `topo-local-stress increment <db> <n>`: n times, lock `/keyspaces/ks`, read the counter
//! and write it plus one with a fenced write, printing `token <t> value <v>` while holding.
//! `topo-local-stress hold <db> <ttl-ms>`: take the lock with that TTL, print `locked <t>`,
//! and wait to be killed.
//! `topo-local-stress lead <db> <ttl-ms>`: join the election `stress` as `child` with that
//! lock TTL, print `leading` once it leads, and wait to be killed.
//! `topo-local-stress abandon <db>`: try to lock `/keyspaces/ks` for 300 ms (someone else
//! holds it), give up, close the connection, print `closed` and exit at once (no runtime
//! shutdown: only `close()` may finish the clean-up).
//! `topo-local-stress write <db>`: write `/acked/<i>` for i = 0, 1, …, printing `acked <i>`
//! after each write returns, until killed.
//! `topo-local-stress set <db> <path> <value>...`: write the values to `path` in order.

use std::io::Write;
use std::time::Duration;

use topo_core::{Conn, ConnExt};
use topo_local::{LocalConn, LocalOptions};

fn fail(msg: String) -> ! {
    eprintln!("topo-local-stress: {msg}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, db) = match (args.get(1), args.get(2)) {
        (Some(m), Some(d)) => (m.as_str(), std::path::PathBuf::from(d)),
        _ => fail("usage: topo-local-stress increment|hold|lead|abandon|write|set <db> ...".into()),
    };
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| fail(format!("{mode}: missing argument {i}")))
    };
    let open = |ttl: Duration| {
        LocalConn::open(
            &db,
            "/stress",
            LocalOptions {
                lock_ttl: ttl,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| fail(e.to_string()))
    };
    let mut out = std::io::stdout();
    match mode {
        "increment" => {
            let conn = open(Duration::from_secs(30));
            let n: u32 = arg(3)
                .parse()
                .unwrap_or_else(|_| fail("n must be a number".into()));
            for _ in 0..n {
                let guard = conn
                    .lock("/keyspaces/ks", "increment")
                    .await
                    .unwrap_or_else(|e| fail(e.to_string()));
                let (bytes, v) = conn
                    .get("/keyspaces/ks/counter")
                    .await
                    .unwrap_or_else(|e| fail(e.to_string()));
                let value: u64 = String::from_utf8_lossy(&bytes)
                    .parse()
                    .unwrap_or_else(|_| fail("bad counter".into()));
                conn.update_fenced(
                    &guard.fence(),
                    "/keyspaces/ks/counter",
                    (value + 1).to_string().as_bytes(),
                    Some(&v),
                )
                .await
                .unwrap_or_else(|e| fail(e.to_string()));
                let _ = writeln!(out, "token {} value {}", guard.fencing_token(), value + 1);
                guard.unlock().await.unwrap_or_else(|e| fail(e.to_string()));
            }
        }
        "hold" => {
            let ttl: u64 = arg(3)
                .parse()
                .unwrap_or_else(|_| fail("ttl must be a number".into()));
            let conn = open(Duration::from_millis(ttl));
            let guard = conn
                .lock("/keyspaces/ks", "hold")
                .await
                .unwrap_or_else(|e| fail(e.to_string()));
            let _ = writeln!(out, "locked {}", guard.fencing_token());
            let _ = out.flush();
            std::future::pending::<()>().await;
        }
        "lead" => {
            let ttl: u64 = arg(3)
                .parse()
                .unwrap_or_else(|_| fail("ttl must be a number".into()));
            let conn = open(Duration::from_millis(ttl));
            let participation = conn
                .new_leader_participation("stress", "child")
                .await
                .unwrap_or_else(|e| fail(e.to_string()));
            participation
                .wait_for_leadership()
                .await
                .unwrap_or_else(|e| fail(e.to_string()));
            let _ = writeln!(out, "leading");
            let _ = out.flush();
            std::future::pending::<()>().await;
        }
        "abandon" => {
            let conn = open(Duration::from_secs(30));
            match conn
                .lock_timeout("/keyspaces/ks", "abandoned", Duration::from_millis(300))
                .await
            {
                Err(e) if e.is(topo_core::ErrorKind::Timeout) => {}
                other => fail(format!("expected a lock timeout, got {other:?}")),
            }
            conn.close().await;
            let _ = writeln!(out, "closed");
            let _ = out.flush();
            std::process::exit(0);
        }
        "write" => {
            let conn = open(Duration::from_secs(30));
            for i in 0u64.. {
                conn.update(&format!("/acked/{i}"), i.to_string().as_bytes(), None)
                    .await
                    .unwrap_or_else(|e| fail(e.to_string()));
                let _ = writeln!(out, "acked {i}");
                let _ = out.flush();
            }
        }
        "set" => {
            let conn = open(Duration::from_secs(30));
            let path = arg(3);
            for v in &args[4..] {
                conn.update(&path, v.as_bytes(), None)
                    .await
                    .unwrap_or_else(|e| fail(e.to_string()));
            }
        }
        other => fail(format!("unknown mode {other}")),
    }
}
