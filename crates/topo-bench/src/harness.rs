//! Measuring and reporting: per-call latencies and per-round rates, summaries over the
//! samples of every round, and one Markdown table per scenario.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Instant;

use futures::StreamExt;

/// How a run is sized.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// Every scenario small: the whole run in under a minute, for CI.
    pub quick: bool,
    /// Interleaved rounds (Toposphere, raw, Toposphere, raw, …) per measurement.
    pub rounds: usize,
}

impl Ctx {
    /// `full` in a full run, `quick` with `--quick`.
    pub fn size(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Latency of each of `n` calls of `op` (in µs), `in_flight` at a time.
pub async fn latencies<F, Fut>(n: usize, in_flight: usize, op: F) -> Vec<f64>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    futures::stream::iter(0..n)
        .map(|i| {
            let call = op(i);
            async move {
                let start = Instant::now();
                call.await;
                start.elapsed().as_secs_f64() * 1e6
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await
}

/// Calls per second of `n` calls of `op`, `in_flight` at a time.
pub async fn rate<F, Fut>(n: usize, in_flight: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(op)
        .buffer_unordered(in_flight.max(1))
        .collect::<Vec<()>>()
        .await;
    n as f64 / start.elapsed().as_secs_f64()
}

/// What the numbers of a row are, and which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds (lower is better).
    Micros,
    /// Milliseconds (lower is better).
    Millis,
    /// Operations per second (higher is better; the tail column is the slowest 1 %).
    PerSec,
    /// A count (lower is better).
    Count,
    /// Mebibytes (lower is better).
    MiB,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::PerSec => "ops/s",
            Unit::Count => "calls",
            Unit::MiB => "MiB",
        }
    }
}

/// The median and the 99th percentile (for rates: the slowest 1 %) of some samples.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// The median.
    pub p50: f64,
    /// The tail.
    pub p99: f64,
}

/// Summarizes `samples` (none gives NaN).
pub fn summarize(samples: &[f64], unit: Unit) -> Summary {
    let mut s: Vec<f64> = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if s.is_empty() {
            f64::NAN
        } else {
            s[((s.len() - 1) as f64 * q).round() as usize]
        }
    };
    let tail = if unit == Unit::PerSec { 0.01 } else { 0.99 };
    Summary {
        p50: at(0.5),
        p99: at(tail),
    }
}

/// A scenario's goal for one row.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// None: informational.
    None,
    /// Toposphere's median at most this many times the raw client's (times, counts).
    RatioAtMost(f64),
    /// Toposphere's median at least this many times the raw client's (rates).
    RatioAtLeast(f64),
    /// Toposphere's median at most this value, in the row's unit.
    AtMost(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::None => "-".into(),
            Goal::RatioAtMost(g) => format!("≤ {g}×"),
            Goal::RatioAtLeast(g) => format!("≥ {g}×"),
            Goal::AtMost(v) => format!("≤ {v}"),
        }
    }

    fn met(self, topo: f64, ratio: Option<f64>) -> &'static str {
        let ok = match (self, ratio) {
            (Goal::None, _) => return "",
            (Goal::RatioAtMost(g), Some(r)) => r <= g,
            (Goal::RatioAtLeast(g), Some(r)) => r >= g,
            (Goal::AtMost(v), _) => topo <= v,
            (_, None) => return "",
        };
        if ok {
            "yes"
        } else {
            "**no**"
        }
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One scenario's Markdown table.
#[derive(Debug)]
pub struct Table {
    head: String,
    rows: String,
    notes: Vec<String>,
}

impl Table {
    /// A table for scenario `id` (`S1`) titled `title`, whose goal is `goal`.
    pub fn new(id: &str, title: &str, goal: &str) -> Self {
        Table {
            head: format!("### {id}: {title}\n\nGoal: {goal}\n"),
            rows: String::new(),
            notes: Vec::new(),
        }
    }

    /// A row comparing Toposphere's samples with the raw client's (`raw` may be empty:
    /// no raw equivalent).
    pub fn row(
        &mut self,
        backend: &str,
        what: &str,
        unit: Unit,
        topo: &[f64],
        raw: &[f64],
        goal: Goal,
    ) {
        let t = summarize(topo, unit);
        let r = summarize(raw, unit);
        let ratio = (!raw.is_empty()).then(|| t.p50 / r.p50);
        let _ = writeln!(
            self.rows,
            "| {backend} | {what} | {} | {} | {} | {} | {} | {} | {} | {} |",
            unit.label(),
            num(t.p50),
            num(t.p99),
            num(r.p50),
            num(r.p99),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            goal.text(),
            goal.met(t.p50, ratio),
        );
    }

    /// A line under the table.
    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// The table as Markdown.
    pub fn render(&self) -> String {
        let mut out = self.head.clone();
        out.push_str(
            "\n| backend | measurement | unit | Toposphere p50 | Toposphere p99 | raw p50 | raw p99 | ratio | goal | met |\n\
             |---|---|---|---:|---:|---:|---:|---:|---|---|\n",
        );
        out.push_str(&self.rows);
        for n in &self.notes {
            let _ = write!(out, "\n- {n}");
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latencies: median and 99th percentile; rates: median and the slowest 1 %.
    #[test]
    fn summaries_take_the_tail_on_the_bad_side() {
        let samples: Vec<f64> = (1..=101).map(f64::from).collect();
        let lat = summarize(&samples, Unit::Micros);
        assert_eq!((lat.p50, lat.p99), (51.0, 100.0));
        let rate = summarize(&samples, Unit::PerSec);
        assert_eq!((rate.p50, rate.p99), (51.0, 2.0));
        assert!(summarize(&[], Unit::Micros).p50.is_nan());
    }

    /// A row states its ratio and whether the goal is met, in the goal's direction.
    #[test]
    fn rows_judge_goals() {
        let mut t = Table::new("S0", "test", "none");
        t.row(
            "etcd",
            "slow",
            Unit::Micros,
            &[12.0],
            &[10.0],
            Goal::RatioAtMost(1.05),
        );
        t.row(
            "etcd",
            "fast",
            Unit::PerSec,
            &[9.0],
            &[10.0],
            Goal::RatioAtLeast(0.8),
        );
        t.row("etcd", "cap", Unit::Micros, &[0.5], &[], Goal::AtMost(1.0));
        let text = t.render();
        assert!(
            text.contains(
                "| etcd | slow | µs | 12.00 | 12.00 | 10.00 | 10.00 | 1.20 | ≤ 1.05× | **no** |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| etcd | fast | ops/s | 9.00 | 9.00 | 10.00 | 10.00 | 0.90 | ≥ 0.8× | yes |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| etcd | cap | µs | 0.500 | 0.500 | - | - | - | ≤ 1 | yes |"),
            "{text}"
        );
    }
}
