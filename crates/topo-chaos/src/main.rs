//! `topo-chaos`: runs concurrent clients against a real cluster while a seeded nemesis
//! injects faults, records the history and checks it. `topo-chaos check FILE` re-checks a
//! saved history. See the crate's README.md.

mod runner;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use topo_chaos::check::{check_with, Reads, Report};
use topo_chaos::history::{self, Recorder};
use topo_chaos::workload::{Bounds, Client, Workload};
use topo_core::Conn;

use runner::{Backend, Cluster, Faults, Plan};

#[derive(Parser, Debug)]
#[command(
    name = "topo-chaos",
    about = "Jepsen-style fault campaign for Toposphere",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Re-checks a saved JSON-lines history; exits 1 on any anomaly.
    Check {
        /// The history file.
        file: PathBuf,
        /// Allow stale reads (ZooKeeper's consistency): writes must still linearize,
        /// reads must return written values, monotonically per process.
        #[arg(long)]
        stale_reads: bool,
    },
    /// One client process (started by the campaign itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// A backend choice, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Etcd2,
    Zk2,
    Local,
    All,
}

/// A workload choice, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    Register,
    Lock,
    Watch,
    Election,
    All,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The backend to test.
    #[arg(long, value_enum, default_value = "all")]
    backend: BackendArg,
    /// The workload.
    #[arg(long, value_enum, default_value = "all")]
    workload: WorkloadArg,
    /// The fault families the nemesis draws from.
    #[arg(long, value_enum, default_value = "all")]
    faults: Faults,
    /// How long clients run, per backend and workload (`60s`, `500ms`, `10m`).
    #[arg(long, value_parser = topo_core::duration::parse)]
    duration: Option<Duration>,
    /// Client processes per run.
    #[arg(long)]
    clients: Option<u64>,
    /// The nemesis's and clients' seed (printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the history. With several runs, `-<backend>-<workload>` is added
    /// before the extension.
    #[arg(long, default_value = "topo-chaos-history.jsonl")]
    history: PathBuf,
    /// CI's mode: every backend and workload, all faults, 8 s each and 4 clients unless
    /// --duration or --clients say otherwise.
    #[arg(long)]
    quick: bool,
    /// How long watchers have, after the faults are healed, to see the final value.
    #[arg(long, value_parser = topo_core::duration::parse, default_value = "5s")]
    watch_settle: Duration,
    /// Wrap the clients' connections in one that acknowledges one update in N without
    /// sending it (proves the campaign reports a lying backend).
    #[arg(long, hide = true)]
    break_writes: Option<u64>,
}

#[derive(Args, Debug)]
struct WorkerArgs {
    #[arg(long, value_enum)]
    backend: Backend,
    #[arg(long)]
    address: String,
    #[arg(long)]
    root: String,
    #[arg(long, value_enum)]
    workload: Workload,
    /// Process ids of this worker start at serial × 100 000.
    #[arg(long)]
    serial: u64,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    run_ms: u64,
    #[arg(long)]
    settle_ms: u64,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    break_writes: Option<u64>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOPO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn print_report(report: &Report, events: &[history::Event]) {
    for a in &report.anomalies {
        println!("ANOMALY {} on {}: {}", a.kind, a.key, a.message);
        for i in &a.events {
            if let Some(e) = events.get(*i as usize) {
                println!("    {}", serde_json::to_string(e).unwrap_or_default());
            }
        }
    }
    for key in &report.undecided {
        println!("UNDECIDED {key}: the search reached its step bound");
    }
    for m in &report.malformed {
        println!("MALFORMED {m}");
    }
    for key in &report.stale_read_keys {
        println!("note: stale reads of {key} (allowed: writes linearize, reads monotonic)");
    }
    if report.leader_overlap_ns > 0 {
        println!(
            "note: claimed leaderships overlapped for up to {:.1} ms (fenced writes did not)",
            report.leader_overlap_ns as f64 / 1e6
        );
    }
}

fn count(report: &Report, outcome: &str) -> u64 {
    report
        .counts
        .iter()
        .filter(|((_, o), _)| o == outcome)
        .map(|(_, n)| n)
        .sum()
}

fn history_path(base: &Path, backend: Backend, workload: Workload, several: bool) -> PathBuf {
    if !several {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("history");
    let ext = base.extension().and_then(|s| s.to_str()).unwrap_or("jsonl");
    base.with_file_name(format!(
        "{stem}-{}-{}.{ext}",
        backend.name(),
        runner::workload_name(workload)
    ))
}

async fn campaign(args: RunArgs) -> ExitCode {
    let backends = match (args.quick, args.backend) {
        (true, _) | (_, BackendArg::All) => vec![Backend::Etcd2, Backend::Zk2, Backend::Local],
        (_, BackendArg::Etcd2) => vec![Backend::Etcd2],
        (_, BackendArg::Zk2) => vec![Backend::Zk2],
        (_, BackendArg::Local) => vec![Backend::Local],
    };
    let workloads = match (args.quick, args.workload) {
        (true, _) | (_, WorkloadArg::All) => {
            vec![
                Workload::Register,
                Workload::Lock,
                Workload::Election,
                Workload::Watch,
            ]
        }
        (_, WorkloadArg::Register) => vec![Workload::Register],
        (_, WorkloadArg::Lock) => vec![Workload::Lock],
        (_, WorkloadArg::Watch) => vec![Workload::Watch],
        (_, WorkloadArg::Election) => vec![Workload::Election],
    };
    let faults = if args.quick { Faults::All } else { args.faults };
    let duration = args.duration.unwrap_or(if args.quick {
        Duration::from_secs(8)
    } else {
        Duration::from_secs(60)
    });
    let clients = args
        .clients
        .unwrap_or(if args.quick { 4 } else { 8 })
        .max(1);
    let seed = args.seed.unwrap_or_else(|| history::now_ns() % 1_000_000);
    let several = backends.len() * workloads.len() > 1;
    println!(
        "topo-chaos: seed {seed}, {clients} clients, {:?} per run, faults {faults:?}",
        duration
    );
    let mut rows = Vec::new();
    let mut failed = false;
    for backend in backends {
        let mut cluster = match tokio::task::block_in_place(|| Cluster::start(backend)) {
            Ok(c) => c,
            Err(e) => {
                println!("{}: cannot start the servers: {e}", backend.name());
                failed = true;
                continue;
            }
        };
        for &workload in &workloads {
            let plan = Plan {
                backend,
                workload,
                faults,
                duration,
                clients,
                seed,
                history: history_path(&args.history, backend, workload, several),
                break_writes: args.break_writes,
                watch_settle: args.watch_settle,
            };
            let name = format!("{} {}", backend.name(), runner::workload_name(workload));
            println!("{name}: running");
            match runner::run(&plan, &mut cluster).await {
                Ok(out) => {
                    print_report(&out.report, &out.events);
                    let faults: Vec<String> =
                        out.faults.iter().map(|(k, n)| format!("{k}×{n}")).collect();
                    let anomalies = out.report.anomalies.len()
                        + out.report.undecided.len()
                        + out.report.malformed.len();
                    failed |= anomalies > 0;
                    let stale = out.report.stale_read_keys.len();
                    rows.push(format!(
                        "| {:<6} | {:<8} | {:>5.1} | {:>6} | {:>5} | {:>5} | {} | {} | {} | {} | {} |",
                        backend.name(),
                        runner::workload_name(workload),
                        out.elapsed.as_secs_f64(),
                        count(&out.report, "ok"),
                        count(&out.report, "fail"),
                        count(&out.report, "info"),
                        if faults.is_empty() { "none".to_string() } else { faults.join(" ") },
                        anomalies,
                        if anomalies == 0 { "valid" } else { "ANOMALY" },
                        stale,
                        plan.history.display(),
                    ));
                }
                Err(e) => {
                    println!("{name}: the run could not complete: {e}");
                    failed = true;
                    rows.push(format!(
                        "| {} | {} | - | - | - | - | - | - | ERROR | - | {e} |",
                        backend.name(),
                        runner::workload_name(workload)
                    ));
                }
            }
        }
        tokio::task::block_in_place(|| drop(cluster));
    }
    println!("\n| backend | workload | secs | ok | fail | info | faults injected | anomalies | verdict | stale-read keys | history |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn worker(args: WorkerArgs) -> ExitCode {
    let deadline = Instant::now() + Duration::from_millis(args.run_ms);
    let rec = match Recorder::with_file(&args.out) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("topo-chaos worker: {e}");
            return ExitCode::from(2);
        }
    };
    let conn = match runner::connect_retrying(
        args.backend,
        &args.address,
        &args.root,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("topo-chaos worker {}: cannot connect: {e}", args.serial);
            return ExitCode::from(2);
        }
    };
    let conn: Arc<dyn Conn> = match args.break_writes {
        Some(n) => Arc::new(topo_chaos::broken::DropWrites::new(conn, n)),
        None => conn,
    };
    let bounds = Bounds {
        deadline,
        op_timeout: runner::OP_TIMEOUT,
        max_ops: 50_000,
        settle: Duration::from_millis(args.settle_ms),
    };
    // In the watch workload one worker in three writes; the others watch.
    let client = Client::new(
        conn.clone(),
        args.serial * 100_000,
        1,
        args.seed,
        rec,
        bounds,
    );
    client
        .watcher(args.serial % 3 != 0)
        .run(args.workload)
        .await;
    let _ = tokio::time::timeout(runner::OP_TIMEOUT, conn.close()).await;
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("topo-chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Check { file, stale_reads }) => match history::load(&file) {
            Ok(events) => {
                let reads = if stale_reads {
                    Reads::Sequential
                } else {
                    Reads::Linearizable
                };
                let report = check_with(&events, reads);
                print_report(&report, &events);
                let valid = report.is_valid();
                println!(
                    "{}: {} events, {} ok, {} fail, {} info, {}",
                    file.display(),
                    events.len(),
                    count(&report, "ok"),
                    count(&report, "fail"),
                    count(&report, "info"),
                    if valid { "valid" } else { "ANOMALY" }
                );
                if valid {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("topo-chaos: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Worker(args)) => runtime.block_on(worker(args)),
        None => runtime.block_on(campaign(cli.run)),
    }
}
