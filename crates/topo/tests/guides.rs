//! The operator guides in `docs/guides` run as written.
//!
//! Each test reads its page and runs every ```` ```sh ```` block in order with `sh -e`, in
//! an empty directory, with `topo` the binary under test first on `PATH`, against real etcd
//! and ZooKeeper servers started here on free 127.0.0.1 ports. The page's placeholders
//! (`$ETCD`, `$ZK`, ...) are environment variables holding those servers' addresses, and
//! every variable a block sets is there for the blocks after it. A ```` ```text ```` block
//! right after a `sh` block lists lines its output must contain, in order (`...` skips;
//! `$NAME` is replaced by the variable's value). A ```` ```cron ```` block's command lines
//! are run as cron would, with the block's `NAME=value` lines as their environment.
//!
//! Each test prints how long its guide took.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use topo_testkit::etcd::EtcdCluster;
use topo_testkit::zk::ZkCluster;

/// A fenced block of a page.
#[derive(Debug)]
struct Block {
    lang: String,
    text: String,
}

/// The fenced blocks of a markdown page, in order.
fn blocks(page: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for line in page.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    out
}

/// `text` with `$NAME` and `${NAME}` replaced by the variables' values (longest names
/// first, so `$ETCD1` is not read as `$ETCD` and `1`).
fn substitute(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = env.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut s = text.to_string();
    for n in names {
        s = s
            .replace(&format!("${{{n}}}"), &env[n])
            .replace(&format!("${n}"), &env[n]);
    }
    s
}

/// Asserts that every expected line (trimmed, `...` skipped) is in `output`, in order.
fn assert_contains_in_order(output: &str, expected: &str, script: &str) {
    let mut rest = output;
    for want in expected.lines().map(str::trim) {
        if want.is_empty() || want == "..." {
            continue;
        }
        match rest.find(want) {
            Some(at) => rest = &rest[at + want.len()..],
            None => panic!(
                "the output of\n{script}\nlacks (in this order) {want:?}\nexpected:\n{expected}\noutput:\n{output}"
            ),
        }
    }
}

/// A step about to run (`done` false, with the variables before it) or just run (`done`
/// true, with the variables it left).
struct Step<'a> {
    script: &'a str,
    env: &'a BTreeMap<String, String>,
    done: bool,
}

/// The directory of the `topo` binary under test.
fn topo_dir() -> PathBuf {
    assert_cmd::cargo::cargo_bin("topo")
        .parent()
        .unwrap()
        .to_path_buf()
}

/// How long one step of a guide may take: a step that hangs fails the test (status 124
/// from `timeout`) instead of stalling the run.
const STEP_LIMIT: &str = "120";

/// Runs `script` with `sh -e` (every variable exported) in `dir` with `env`, bounded by
/// [`STEP_LIMIT`] seconds; returns its stdout and the variables it leaves.
fn sh(
    dir: &Path,
    env: &BTreeMap<String, String>,
    script: &str,
) -> (String, BTreeMap<String, String>) {
    let env_file = dir.join(".guide-env");
    let out = Command::new("timeout")
        .args([STEP_LIMIT, "sh", "-c"])
        .arg(format!(
            "set -ea\n{script}\nenv -0 > '{}'",
            env_file.display()
        ))
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "this step failed ({}):\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read(&env_file).unwrap();
    let vars = after
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    (stdout, vars)
}

/// Runs the guide `page` (a file name in docs/guides) with `servers` as its variables;
/// calls `hook` before and after each `sh` block. Returns the directory it ran in and the variables
/// at the end.
fn run_guide(
    page: &str,
    servers: &[(&str, String)],
    mut hook: impl FnMut(Step<'_>),
) -> (tempfile::TempDir, BTreeMap<String, String>) {
    let start = Instant::now();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/guides")
        .join(page);
    let text = std::fs::read_to_string(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let path_var = std::env::var("PATH").unwrap_or_default();
    env.insert(
        "PATH".into(),
        format!("{}:{path_var}", topo_dir().display()),
    );
    env.insert("HOME".into(), dir.path().display().to_string());
    for (k, v) in servers {
        env.insert(k.to_string(), v.clone());
    }
    let blocks = blocks(&text);
    let mut ran = 0;
    for (i, b) in blocks.iter().enumerate() {
        match b.lang.as_str() {
            "sh" => {
                hook(Step {
                    script: &b.text,
                    env: &env,
                    done: false,
                });
                let (stdout, vars) = sh(dir.path(), &env, &b.text);
                env = vars;
                if let Some(next) = blocks.get(i + 1).filter(|n| n.lang == "text") {
                    assert_contains_in_order(&stdout, &substitute(&next.text, &env), &b.text);
                }
                hook(Step {
                    script: &b.text,
                    env: &env,
                    done: true,
                });
                ran += 1;
            }
            "cron" => {
                // Cron gives a command little more than PATH and HOME.
                let mut cron_env: BTreeMap<String, String> = env
                    .iter()
                    .filter(|(k, _)| *k == "PATH" || *k == "HOME")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for line in b.text.lines().map(str::trim) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let line = substitute(line, &env);
                    if let Some((k, v)) = line.split_once('=').filter(|(k, _)| !k.contains(' ')) {
                        cron_env.insert(k.to_string(), v.to_string());
                        continue;
                    }
                    // Five time fields, then the command.
                    let command: Vec<&str> = line.splitn(6, ' ').collect();
                    assert_eq!(command.len(), 6, "a cron line: {line}");
                    sh(dir.path(), &cron_env, command[5]);
                    ran += 1;
                }
            }
            _ => {}
        }
    }
    assert!(ran > 0, "{page} has no sh block");
    eprintln!(
        "guide {page}: {ran} steps in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    (dir, env)
}

/// `topo` with `args` in `dir` with the environment `env`; its stdout and whether it
/// succeeded.
fn topo(dir: &Path, env: &BTreeMap<String, String>, args: &[String]) -> (bool, String) {
    let out = Command::new(topo_dir().join("topo"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().filter(|(k, _)| !k.starts_with("TOPO_")))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn etcd_and_zk(what: &str) -> bool {
    topo_testkit::require_binary("etcd", what) && topo_testkit::zk::require()
}

#[test]
fn one_cell_then_more() {
    if !topo_testkit::require_binary("etcd", "the guide one cell, then more") {
        return;
    }
    let (a, b, c) = (
        EtcdCluster::single().unwrap(),
        EtcdCluster::single().unwrap(),
        EtcdCluster::single().unwrap(),
    );
    run_guide(
        "one-cell-then-more.md",
        &[
            ("ETCD", a.endpoints()),
            ("ZONE2_ETCD", b.endpoints()),
            ("ZONE1_ETCD", c.endpoints()),
        ],
        |_| {},
    );
}

#[test]
fn migration_between_implementations() {
    if !etcd_and_zk("the guide migration between implementations") {
        return;
    }
    let etcd = EtcdCluster::single().unwrap();
    let zk = ZkCluster::standalone().unwrap();
    run_guide(
        "migration-between-implementations.md",
        &[("ETCD", etcd.endpoints()), ("ZK", zk.addrs())],
        |_| {},
    );
}

/// What the fleet did during the live migration.
#[derive(Default)]
struct Fleet {
    /// The flags every process of the fleet is started with now.
    flags: Vec<String>,
    /// A phase number, bumped when the flags change.
    phase: usize,
    /// Per worker, the phase of its last finished operation.
    done_in_phase: Vec<usize>,
    /// Keyspaces whose creation succeeded.
    created: Vec<String>,
    /// Operations that failed, with their output.
    failures: Vec<String>,
    /// Successful operations per phase.
    ops_per_phase: BTreeMap<usize, usize>,
    /// While set, no process starts an operation (a quiet moment the guide asks for).
    quiet: bool,
    /// Operations under way.
    busy: usize,
}

#[test]
fn live_migration_with_the_tee() {
    if !etcd_and_zk("the guide live migration with the tee") {
        return;
    }
    let etcd = EtcdCluster::single().unwrap();
    let zk = ZkCluster::standalone().unwrap();
    let fleet = Arc::new(Mutex::new(Fleet::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let work = tempfile::tempdir().unwrap();
    let history = work.path().join("lock-history");
    let env: BTreeMap<String, String> = std::env::vars().collect();
    // Two writers creating keyspaces and two processes taking the keyspace lock of
    // commerce, each recording when it holds it.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (fleet, stop, env) = (fleet.clone(), stop.clone(), env.clone());
            let (dir, history) = (work.path().to_path_buf(), history.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let job = {
                        let mut f = fleet.lock().unwrap();
                        if f.quiet || f.flags.is_empty() {
                            None
                        } else {
                            f.busy += 1;
                            Some((f.flags.clone(), f.phase))
                        }
                    };
                    let Some((flags, phase)) = job else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    n += 1;
                    let mut args = flags;
                    let name = format!("w{w}n{n}");
                    if w < 2 {
                        args.extend(["CreateKeyspace".to_string(), name.clone()]);
                    } else {
                        args.extend(
                            [
                                "lock",
                                "keyspaces/commerce",
                                "--",
                                "sh",
                                "-c",
                                "echo \"in $1\" >> \"$2\"; sleep 0.02; echo \"out $1\" >> \"$2\"",
                                "_",
                                &name,
                                &history.display().to_string(),
                            ]
                            .map(String::from),
                        );
                    }
                    let (ok, out) = topo(&dir, &env, &args);
                    let mut f = fleet.lock().unwrap();
                    f.busy -= 1;
                    if ok {
                        if w < 2 {
                            f.created.push(name);
                        }
                        *f.ops_per_phase.entry(phase).or_default() += 1;
                    } else {
                        f.failures.push(format!("{args:?}: {out}"));
                    }
                    f.done_in_phase[w] = phase;
                }
            })
        })
        .collect();
    fleet.lock().unwrap().done_in_phase = vec![0; workers.len()];
    let (dir, end) = run_guide(
        "live-migration-with-the-tee.md",
        &[("ETCD", etcd.endpoints()), ("ZK", zk.addrs())],
        |step: Step<'_>| {
            // The guide asks for a quiet moment where it compares the two sides.
            if step.script.contains("--compare") {
                fleet.lock().unwrap().quiet = !step.done;
                while !step.done && fleet.lock().unwrap().busy > 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let Some(flags) = step.env.get("FLEET").filter(|_| step.done) else {
                return;
            };
            let flags: Vec<String> = flags.split_whitespace().map(String::from).collect();
            let phase = {
                let mut f = fleet.lock().unwrap();
                if f.flags == flags {
                    return;
                }
                f.flags = flags;
                f.phase += 1;
                f.phase
            };
            // The rollout is complete when every process has finished an operation with
            // the new flags; the guide says to wait for that before the next step.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                {
                    let f = fleet.lock().unwrap();
                    assert!(f.failures.is_empty(), "the fleet failed: {:?}", f.failures);
                    if f.done_in_phase.iter().all(|p| *p >= phase)
                        && f.ops_per_phase.get(&phase).copied().unwrap_or(0) >= 8
                    {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "the fleet did not roll out phase {phase} ({})",
                    step.script
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let f = fleet.lock().unwrap();
    assert!(f.failures.is_empty(), "the fleet failed: {:?}", f.failures);
    // The fleet ran in the old topology alone, the two tee phases and the new one alone.
    assert_eq!(f.phase, 4, "phases: {:?}", f.ops_per_phase);
    // No write lost: every keyspace created in any phase is in ZooKeeper.
    let zk_flags = [
        "--topo-implementation",
        "zk2",
        "--topo-global-server-address",
        &zk.addrs(),
        "GetKeyspaces",
    ]
    .map(String::from);
    let (ok, keyspaces) = topo(dir.path(), &end, &zk_flags);
    assert!(ok);
    let keyspaces: Vec<serde_json::Value> = serde_json::from_str(&keyspaces).unwrap();
    let names: Vec<&str> = keyspaces
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    let lost: Vec<&String> = f
        .created
        .iter()
        .filter(|k| !names.contains(&k.as_str()))
        .collect();
    assert!(f.created.len() >= 16, "{} writes", f.created.len());
    assert!(lost.is_empty(), "writes lost: {lost:?}");
    // No lock held twice: the holders' records alternate in/out, each out matching the in.
    let history = std::fs::read_to_string(&history).unwrap();
    let mut holder: Option<&str> = None;
    let mut held = 0;
    for line in history.lines() {
        match (line.split_once(' '), holder) {
            (Some(("in", who)), None) => holder = Some(who),
            (Some(("out", who)), Some(h)) if h == who => {
                holder = None;
                held += 1;
            }
            _ => panic!("the lock was held twice at {line:?}:\n{history}"),
        }
    }
    assert!(holder.is_none() && held >= 16, "{held} holds:\n{history}");
    eprintln!(
        "live migration: {} keyspaces created, {held} lock holds, operations per phase {:?}",
        f.created.len(),
        f.ops_per_phase
    );
}

#[test]
fn recovery() {
    if !topo_testkit::require_binary("etcd", "the guide recovery") {
        return;
    }
    let mut global = Some(EtcdCluster::single().unwrap());
    let mut cell = Some(EtcdCluster::single().unwrap());
    let (new_global, new_cell) = (
        EtcdCluster::single().unwrap(),
        EtcdCluster::single().unwrap(),
    );
    run_guide(
        "recovery.md",
        &[
            ("ETCD", global.as_ref().unwrap().endpoints()),
            ("ZONE1_ETCD", cell.as_ref().unwrap().endpoints()),
            ("NEW_ZONE1_ETCD", new_cell.endpoints()),
            ("NEW_ETCD", new_global.endpoints()),
        ],
        |step: Step<'_>| {
            // The disasters the guide recovers from: the servers are gone for good.
            let lost = |what: &str| step.done && step.script.contains(what);
            if lost("# Disaster: the cell's servers are lost") {
                cell = None;
            }
            if lost("# Disaster: the global servers are lost") {
                global = None;
            }
        },
    );
    assert!(global.is_none() && cell.is_none(), "the guide lost both");
}

#[test]
fn backups_and_checks() {
    if !topo_testkit::require_binary("etcd", "the guide backups and checks") {
        return;
    }
    let etcd = EtcdCluster::single().unwrap();
    run_guide(
        "backups-and-checks.md",
        &[("ETCD", etcd.endpoints())],
        |_| {},
    );
}
