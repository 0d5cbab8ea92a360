//! `topo-chaos`: runs concurrent clients against a real cluster while a seeded nemesis
//! injects faults, records the history and checks it. `topo-chaos check FILE` re-checks a
//! saved history. See the crate's README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use topo_chaos::check::{check, Report};
use topo_chaos::history;

#[derive(Parser, Debug)]
#[command(
    name = "topo-chaos",
    about = "Jepsen-style fault campaign for Toposphere"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Re-checks a saved JSON-lines history; exits 1 on any anomaly.
    Check {
        /// The history file.
        file: PathBuf,
    },
}

fn print_report(report: &Report, events: &[history::Event]) {
    for ((f, outcome), n) in &report.counts {
        println!("  {f:<12} {outcome:<5} {n}");
    }
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => match history::load(&file) {
            Ok(events) => {
                let report = check(&events);
                print_report(&report, &events);
                if report.is_valid() {
                    println!("valid: {} events, no anomaly", events.len());
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
    }
}
