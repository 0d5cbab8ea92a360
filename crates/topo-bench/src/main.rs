//! `topo-bench`: Toposphere next to the raw client of each backend (etcd-client,
//! zookeeper-client, rusqlite) doing the same work against the same server in the same run,
//! interleaved (Toposphere, raw, Toposphere, raw, …) so that machine drift hits both alike.
//! Each scenario of issue 14 (S1–S9) prints one Markdown table with medians, tails, the
//! ratio and its goal.
//!
//! ```text
//! topo-bench [--quick] [--only S3,S5] [--backends etcd,zk,local] [--rounds N]
//! ```
//!
//! It starts its own etcd and ZooKeeper on loopback ports (a backend whose server is not
//! installed is skipped with a printed line) and uses a temporary SQLite file for `local`.
//! `--quick` runs every scenario small (the whole run in under a minute, for CI); it asserts
//! correctness (every tablet read, every change delivered) but no timing.

mod backend;
mod harness;
mod scenarios;

use std::time::Instant;

use backend::Backend;
use harness::Ctx;

/// The command line.
struct Args {
    quick: bool,
    only: Vec<String>,
    backends: Vec<String>,
    rounds: Option<usize>,
}

fn list(v: Option<String>, what: &str) -> Vec<String> {
    v.unwrap_or_else(|| panic!("{what} needs a value"))
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_args() -> Args {
    let mut a = Args {
        quick: false,
        only: scenarios::ALL.iter().map(|s| s.to_string()).collect(),
        backends: vec!["etcd".into(), "zk".into(), "local".into()],
        rounds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--only" => a.only = list(it.next(), "--only"),
            "--backends" => a.backends = list(it.next(), "--backends"),
            "--rounds" => {
                a.rounds = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--rounds needs a number"),
                )
            }
            "-h" | "--help" => {
                println!(
                    "topo-bench [--quick] [--only S1,S2,…] [--backends etcd,zk,local] [--rounds N]"
                );
                std::process::exit(0);
            }
            other => {
                eprintln!("topo-bench: unknown argument {other:?} (see --help)");
                std::process::exit(2);
            }
        }
    }
    for s in &mut a.only {
        *s = s.to_uppercase();
        if !scenarios::ALL.contains(&s.as_str()) {
            eprintln!("topo-bench: unknown scenario {s:?} (S1 to S9)");
            std::process::exit(2);
        }
    }
    a
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let started = Instant::now();
    let ctx = Ctx {
        quick: args.quick,
        rounds: args.rounds.unwrap_or(if args.quick { 2 } else { 5 }),
    };
    println!(
        "# topo-bench{}\n\n{} rounds per measurement, Toposphere and the raw client interleaved; \
         ratio = Toposphere p50 / raw p50; {} CPU(s).",
        if ctx.quick { " --quick" } else { "" },
        ctx.rounds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut backends = Vec::new();
    for name in &args.backends {
        match Backend::start(name).await {
            Ok(b) => backends.push(b),
            Err(why) => println!("\n{name}: skipped ({why})"),
        }
    }
    for id in scenarios::ALL
        .iter()
        .filter(|s| args.only.iter().any(|o| o == *s))
    {
        let t = Instant::now();
        let table = scenarios::run(id, &ctx, &backends).await;
        println!(
            "\n{}\n({id} took {:.1} s)",
            table.render(),
            t.elapsed().as_secs_f64()
        );
    }
    println!("\ntotal: {:.1} s", started.elapsed().as_secs_f64());
}
