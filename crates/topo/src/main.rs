//! `topo`: the Toposphere command line.
//!
//! vtctldclient's topology verbs with the same names, arguments, output texts and JSON;
//! raw access (TopoCat, TopoLs, TopoCp, TopoRm and zk-style verbs); topo2topo; backup,
//! restore and diff-backups; doctor; a tee over two topologies; and a demo. With no topology flags it uses the embedded `local` store
//! at `./toposphere.db`.

mod args;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::Cli;

/// Command names match case-insensitively (`getkeyspace` is `GetKeyspace`), as in vtctl:
/// the first argument that names a command in any case is rewritten to its real name.
fn normalize_command_name(mut argv: Vec<String>) -> Vec<String> {
    let command = Cli::command();
    let names: Vec<String> = command
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(String::from))
        })
        .collect();
    for arg in argv.iter_mut().skip(1) {
        if arg.starts_with('-') {
            continue;
        }
        if let Some(real) = names.iter().find(|n| n.eq_ignore_ascii_case(arg)) {
            *arg = real.clone();
            break;
        }
    }
    argv
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOPO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let mut cli = Cli::parse_from(normalize_command_name(std::env::args().collect()));
    if let Err(message) = cli.resolve() {
        eprintln!("topo: {message}");
        return ExitCode::from(2);
    }
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("topo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("topo: {e}");
            ExitCode::FAILURE
        }
    }
}
