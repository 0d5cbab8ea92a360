//! S7: the CLI's wall time and peak memory for one read, against `etcdctl`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::process::Command;
use topo_proto::topodata::Keyspace;

use crate::backend::Backend;
use crate::harness::{Ctx, Goal, Table, Unit};

/// The `topo` binary built beside this one, if any.
fn topo_binary() -> Option<PathBuf> {
    let p = std::env::current_exe().ok()?.with_file_name("topo");
    p.is_file().then_some(p)
}

/// The CLI's arguments for `GetKeyspace s7` on `b`.
fn topo_args(b: &Backend) -> Vec<String> {
    let implementation = match b.name {
        "etcd" => "etcd2",
        "zk" => "zk2",
        _ => "local",
    };
    [
        "--topo-implementation",
        implementation,
        "--topo-global-server-address",
        &b.addr,
        "--topo-global-root",
        "/global",
        "GetKeyspace",
        "s7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `program args…` and returns its wall time in ms; panics when it fails.
async fn timed(program: &Path, args: &[String]) -> f64 {
    let start = Instant::now();
    let out = Command::new(program)
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .await
        .expect("run");
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

/// Peak resident size in MiB of `program args…`, measured by `/usr/bin/time`.
async fn peak_mib(program: &Path, args: &[String]) -> Option<f64> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        return None;
    }
    let out = Command::new(time)
        .arg("-f")
        .arg("%M")
        .arg(program)
        .args(args)
        .output()
        .await
        .ok()?;
    let kib: f64 = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// S7: `topo GetKeyspace` against `etcdctl get` of the same key.
pub async fn s7(ctx: &Ctx, backends: &[Backend]) -> Table {
    let mut t = Table::new(
        "S7",
        "the CLI: `topo GetKeyspace` wall time and peak memory",
        "wall time ≤ 1.0 × `etcdctl get` of the same key",
    );
    let Some(topo) = topo_binary() else {
        t.note(
            "skipped: no `topo` binary beside topo-bench (build it with `cargo build -p topo`)"
                .into(),
        );
        return t;
    };
    let etcdctl = topo_testkit::find_binary("etcdctl");
    let reps = ctx.size(10, 2);
    for b in backends {
        b.server
            .create_keyspace("s7", &Keyspace::default())
            .await
            .expect("create keyspace");
        let args = topo_args(b);
        let raw_args = match (&etcdctl, b.name) {
            (Some(_), "etcd") => Some(vec![
                format!("--endpoints={}", b.addr),
                "get".into(),
                "/global/keyspaces/s7/Keyspace".into(),
            ]),
            _ => None,
        };
        let (mut tt, mut rt) = (Vec::new(), Vec::new());
        for _ in 0..ctx.rounds * reps {
            tt.push(timed(&topo, &args).await);
            if let (Some(ctl), Some(a)) = (&etcdctl, &raw_args) {
                rt.push(timed(ctl, a).await);
            }
        }
        let goal = if raw_args.is_some() {
            Goal::RatioAtMost(1.0)
        } else {
            Goal::None
        };
        t.row(
            b.name,
            "GetKeyspace wall time",
            Unit::Millis,
            &tt,
            &rt,
            goal,
        );
        let mut tm = Vec::new();
        tm.extend(peak_mib(&topo, &args).await);
        let mut rm = Vec::new();
        if let (Some(ctl), Some(a)) = (&etcdctl, &raw_args) {
            rm.extend(peak_mib(ctl, a).await);
        }
        t.row(
            b.name,
            "GetKeyspace peak RSS",
            Unit::MiB,
            &tm,
            &rm,
            Goal::None,
        );
    }
    t.note(
        "Each run is a new process (`topo` built in the same profile as topo-bench); the raw \
         side is `etcdctl get` (API v3) of the same key, on etcd only. Peak RSS by `/usr/bin/time -f %M`."
            .into(),
    );
    t
}
