//! Prometheus text exposition of a server's statistics.

use std::fmt::Write;

use topo_core::wrap::{OpStats, TopoStats};

/// Reads one counter of an operation's statistics.
type CounterOf = fn(&OpStats) -> String;

/// Counts that a program embedding Toposphere keeps besides the per-operation statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtraCounts {
    /// Watches (or polls) open now.
    pub open_watches: u64,
    /// Changes the watches delivered.
    pub watch_events: u64,
    /// Watches that ended with an error (and were restarted).
    pub watch_errors: u64,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders `stats` (per cell and operation: calls, errors, time) and `extra` in the
/// Prometheus text format, version 0.0.4. Any program that embeds Toposphere can serve it.
///
/// The statistics wrapper keeps a count and a total time per operation, not buckets, so
/// latency is a summary (`_count` and `_sum`) rather than a histogram.
pub fn render(stats: &TopoStats, extra: &ExtraCounts) -> String {
    let snapshot = stats.snapshot();
    let mut out = String::new();
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    let labelled: Vec<(String, &OpStats)> = snapshot
        .iter()
        .map(|((cell, op), s)| {
            (
                format!("cell=\"{}\",operation=\"{}\"", escape(cell), op.name()),
                s,
            )
        })
        .collect();
    let counters: [(&str, &str, CounterOf); 3] = [
        (
            "toposphere_topo_operations_total",
            "Topology operations by cell and operation.",
            |s| s.calls.to_string(),
        ),
        (
            "toposphere_topo_errors_total",
            "Topology operations that failed, by cell and operation.",
            |s| s.errors.to_string(),
        ),
        (
            "toposphere_topo_read_wait_seconds_total",
            "Time spent waiting for the per-cell read-concurrency limit.",
            |s| s.read_wait.as_secs_f64().to_string(),
        ),
    ];
    for (name, help, value) in counters {
        header(&mut out, name, "counter", help);
        for (labels, s) in &labelled {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(s));
        }
    }
    let name = "toposphere_topo_operation_seconds";
    header(
        &mut out,
        name,
        "summary",
        "Time spent in topology operations, by cell and operation.",
    );
    for (labels, s) in &labelled {
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.total.as_secs_f64());
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.calls);
    }
    let watches = [
        (
            "toposphere_serve_watches_open",
            "gauge",
            "Watches (or polls, where the backend has no recursive watch) the browser holds open.",
            extra.open_watches,
        ),
        (
            "toposphere_serve_watch_events_total",
            "counter",
            "Changes delivered by the browser's watches.",
            extra.watch_events,
        ),
        (
            "toposphere_serve_watch_errors_total",
            "counter",
            "Browser watches that ended with an error and were restarted.",
            extra.watch_errors,
        ),
    ];
    for (name, kind, help, v) in watches {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    out
}
