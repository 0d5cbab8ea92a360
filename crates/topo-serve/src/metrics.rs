//! Prometheus text exposition of a server's statistics.

use std::fmt::Write;

use topo_core::wrap::{OpStats, TopoStats, LATENCY_BUCKETS};
use toposphere::srv_cache::SrvCacheStats;

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
    /// The counters of the program's serving-graph cache, when it has one.
    pub srv_cache: Option<SrvCacheStats>,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders `stats` (per cell and operation: calls, errors, a latency histogram) and `extra`
/// in the Prometheus text format, version 0.0.4. Any program that embeds Toposphere can
/// serve it.
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
        "histogram",
        "Time spent in topology operations, by cell and operation.",
    );
    for (labels, s) in &labelled {
        for (le, n) in LATENCY_BUCKETS.iter().zip(s.cumulative_latency()) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", s.calls);
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
    let cache = extra.srv_cache.map(|c| {
        [
            (
                "toposphere_srv_cache_hits_total",
                "counter",
                "Serving-graph cache reads answered from memory.",
                c.hits,
            ),
            (
                "toposphere_srv_cache_misses_total",
                "counter",
                "Serving-graph cache reads that waited for the topology.",
                c.misses,
            ),
            (
                "toposphere_srv_cache_errors_total",
                "counter",
                "Serving-graph cache reads that returned an error.",
                c.errors,
            ),
            (
                "toposphere_srv_cache_stale_reads_total",
                "counter",
                "Serving-graph cache reads answered with a last good value while its watch failed.",
                c.stale_reads,
            ),
            (
                "toposphere_srv_cache_stale_records",
                "gauge",
                "Serving-graph cache records holding a last good value while their watch fails.",
                c.stale_records,
            ),
        ]
    });
    for (name, kind, help, v) in watches.into_iter().chain(cache.into_iter().flatten()) {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    out
}
