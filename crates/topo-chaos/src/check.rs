//! Checks of a history: linearizability of every register key (Wing–Gong search with
//! Lowe's memoisation, as Porcupine does), and the lock workload's counter invariants.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::history::{Event, Kind, F};

/// Bound on the search steps per key, so a pathological history cannot hang the checker;
/// a key that reaches it is reported as undecided, not as valid.
const MAX_STEPS: u64 = 20_000_000;

/// One operation: an invocation paired with its completion.
#[derive(Clone, Debug)]
pub struct Op {
    /// The client process.
    pub process: u64,
    /// The operation.
    pub f: F,
    /// The key.
    pub key: String,
    /// How it ended (`Info` for an unknown outcome).
    pub outcome: Kind,
    /// The invocation's argument.
    pub arg: Value,
    /// The completion's result.
    pub result: Value,
    /// Invocation time.
    pub call_ns: u64,
    /// Completion time.
    pub ret_ns: u64,
    /// History indices of the invocation and completion.
    pub indices: (u64, u64),
}

/// Something the history shows that a correct system cannot do.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// `non-linearizable`, `lost-increment`, `double-increment`, `fencing-order`, ...
    pub kind: &'static str,
    /// The key concerned.
    pub key: String,
    /// What was found.
    pub message: String,
    /// History indices of the events that show it.
    pub events: Vec<u64>,
}

/// The checker's result.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Operations by (f, outcome).
    pub counts: BTreeMap<(String, String), u64>,
    /// Anomalies found (a correct system has none).
    pub anomalies: Vec<Anomaly>,
    /// Keys whose search hit the step bound.
    pub undecided: Vec<String>,
    /// Invocations left without a completion or completions without an invocation.
    pub malformed: Vec<String>,
    /// Keys whose reads were stale (not linearizable) while writes and compare-and-sets
    /// were, and every read was of a written value and monotonic per process; reported
    /// only when [`Reads::Sequential`] allows it.
    pub stale_read_keys: Vec<String>,
    /// The election workload: the longest time two leaderships both held (from `lead`'s
    /// completion to the invocation of its `resign`, or the end of the history). Claimed
    /// leadership may overlap (a paused leader learns of its loss late); fenced writes
    /// must not, which the counter checks see.
    pub leader_overlap_ns: u64,
}

/// The consistency expected of reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reads {
    /// Every read is linearizable (etcd, local).
    #[default]
    Linearizable,
    /// Reads may be stale, as a ZooKeeper server answers them from its own, possibly
    /// lagging, copy: writes and compare-and-sets must still linearize, each read must
    /// return a value that was written, and no process may see a value older than one it
    /// saw before.
    Sequential,
}

impl Report {
    /// True when nothing is wrong or undecided.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty() && self.undecided.is_empty() && self.malformed.is_empty()
    }
}

/// Pairs every invocation with the next event of the same process. Events must be in
/// time order (as [`crate::history::merge`] leaves them).
pub fn pair(events: &[Event], malformed: &mut Vec<String>) -> Vec<Op> {
    let mut open: BTreeMap<u64, &Event> = BTreeMap::new();
    let mut ops = Vec::new();
    for e in events {
        if e.kind == Kind::Invoke {
            if let Some(prev) = open.insert(e.process, e) {
                malformed.push(format!(
                    "event {}: process {} invoked again before event {} completed",
                    e.index, e.process, prev.index
                ));
            }
            continue;
        }
        let Some(inv) = open.remove(&e.process) else {
            malformed.push(format!(
                "event {}: completion without an invocation",
                e.index
            ));
            continue;
        };
        if inv.f != e.f {
            malformed.push(format!(
                "event {}: completes {:?} but event {} invoked {:?}",
                e.index, e.f, inv.index, inv.f
            ));
            continue;
        }
        ops.push(Op {
            process: e.process,
            f: e.f,
            key: inv.key.clone(),
            outcome: e.kind,
            arg: inv.value.clone(),
            result: e.value.clone(),
            call_ns: inv.time_ns,
            ret_ns: e.time_ns,
            indices: (inv.index, e.index),
        });
    }
    for inv in open.values() {
        malformed.push(format!("event {}: invocation never completed", inv.index));
    }
    ops
}

/// Checks a whole history, expecting linearizable reads.
pub fn check(events: &[Event]) -> Report {
    check_with(events, Reads::Linearizable)
}

/// Checks a whole history with the given read consistency.
pub fn check_with(events: &[Event], reads: Reads) -> Report {
    let mut report = Report::default();
    let ops = pair(events, &mut report.malformed);
    for op in &ops {
        let key = (
            format!("{:?}", op.f).to_lowercase(),
            format!("{:?}", op.outcome).to_lowercase(),
        );
        *report.counts.entry(key).or_default() += 1;
    }
    // Counter keys are checked by their own rules: their increments are not register ops.
    let counters: HashSet<&str> = ops
        .iter()
        .filter(|o| o.f == F::Incr)
        .map(|o| o.key.as_str())
        .collect();
    let mut registers: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &ops {
        if matches!(op.f, F::Read | F::Write | F::Cas) && !counters.contains(op.key.as_str()) {
            registers.entry(op.key.as_str()).or_default().push(op);
        }
    }
    for (key, all_ops) in registers {
        let mut key_ops = all_ops;
        let mut verdict = linearizable(&key_ops);
        if reads == Reads::Sequential && matches!(verdict, Verdict::Violation(_)) {
            let before = report.anomalies.len();
            check_sequential_reads(key, &key_ops, &mut report.anomalies);
            if report.anomalies.len() == before {
                report.stale_read_keys.push(key.to_string());
            }
            key_ops.retain(|o| o.f != F::Read);
            verdict = linearizable(&key_ops);
        }
        match verdict {
            Verdict::Ok => {}
            Verdict::Undecided => report.undecided.push(key.to_string()),
            Verdict::Violation(stuck) => {
                let op = key_ops[stuck];
                // The stuck operation, everything concurrent with it, and the last few
                // operations that completed before it began.
                let before: Vec<&&Op> = key_ops
                    .iter()
                    .filter(|o| o.ret_ns < op.call_ns && o.outcome != Kind::Fail)
                    .collect();
                let recent = before.len().saturating_sub(6);
                let mut shown: Vec<u64> = key_ops
                    .iter()
                    .filter(|o| o.call_ns <= op.ret_ns && o.ret_ns >= op.call_ns)
                    .chain(before[recent..].iter().copied())
                    .flat_map(|o| [o.indices.0, o.indices.1])
                    .collect();
                shown.sort_unstable();
                shown.dedup();
                shown.truncate(60);
                report.anomalies.push(Anomaly {
                    kind: "non-linearizable",
                    key: key.to_string(),
                    message: format!(
                        "no linearization of key {key} places {:?} by process {} (events {} and {}) consistently with the operations before it",
                        op.f, op.process, op.indices.0, op.indices.1
                    ),
                    events: shown,
                });
            }
        }
    }
    check_counters(&ops, &mut report.anomalies);
    check_watches(&ops, &mut report.anomalies);
    report.leader_overlap_ns = leader_overlap(&ops);
    report
}

/// The longest overlap of two leaderships (see [`Report::leader_overlap_ns`]), matched to
/// their resignations by fencing token (a process id may change within a term).
fn leader_overlap(ops: &[Op]) -> u64 {
    let end_of_history = ops.iter().map(|o| o.ret_ns).max().unwrap_or(0);
    let resigned: BTreeMap<u64, u64> = ops
        .iter()
        .filter(|o| o.f == F::Resign)
        .filter_map(|o| Some((o.arg.as_u64()?, o.call_ns)))
        .collect();
    let mut terms: Vec<(u64, u64)> = ops
        .iter()
        .filter(|o| o.f == F::Lead && o.outcome == Kind::Ok)
        .filter_map(|o| {
            let token = o.result.as_u64()?;
            Some((o.ret_ns, *resigned.get(&token).unwrap_or(&end_of_history)))
        })
        .collect();
    terms.sort_unstable();
    let mut longest = 0;
    for (i, &(_, end)) in terms.iter().enumerate() {
        for &(later_start, later_end) in &terms[i + 1..] {
            if later_start >= end {
                break;
            }
            longest = longest.max(end.min(later_end).saturating_sub(later_start));
        }
    }
    longest
}

/// With stale reads allowed, each read must still return a value some write or
/// compare-and-set (acknowledged or not) put there, invoked before the read returned; and a
/// process must never read a value whose write completed before the write of a value it
/// had already seen (read or written) was invoked.
fn check_sequential_reads(key: &str, ops: &[&Op], anomalies: &mut Vec<Anomaly>) {
    let writers = writers(ops.iter().copied());
    // process -> latest invocation time among writes of values it has seen.
    let mut newest: BTreeMap<u64, (u64, &Op)> = BTreeMap::new();
    let mut ordered: Vec<&&Op> = ops.iter().filter(|o| o.outcome == Kind::Ok).collect();
    ordered.sort_by_key(|o| o.ret_ns);
    for op in ordered {
        let seen = match reg_op(op) {
            Some(RegOp::Read(Some(v))) => v,
            Some(RegOp::Write(v)) | Some(RegOp::Cas(_, v)) => v,
            _ => continue,
        };
        let Some(&(w_call, w_ret)) = writers.get(&seen) else {
            anomalies.push(Anomaly {
                kind: "phantom-read",
                key: key.to_string(),
                message: format!(
                    "process {} read {seen}, which no write of {key} wrote",
                    op.process
                ),
                events: vec![op.indices.0, op.indices.1],
            });
            continue;
        };
        if w_call > op.ret_ns {
            anomalies.push(Anomaly {
                kind: "phantom-read",
                key: key.to_string(),
                message: format!(
                    "process {} read {seen} before its write was invoked",
                    op.process
                ),
                events: vec![op.indices.0, op.indices.1],
            });
            continue;
        }
        if let Some(&(prev_call, prev)) = newest.get(&op.process) {
            if w_ret < prev_call {
                anomalies.push(Anomaly {
                    kind: "non-monotonic-read",
                    key: key.to_string(),
                    message: format!(
                        "process {} read {seen} after it had seen a value written later",
                        op.process
                    ),
                    events: vec![prev.indices.0, prev.indices.1, op.indices.0, op.indices.1],
                });
            }
        }
        let entry = newest.entry(op.process).or_insert((w_call, op));
        if w_call >= entry.0 {
            *entry = (w_call, op);
        }
    }
}

/// Value -> (invocation, completion) of the write or compare-and-set that wrote it, among
/// `ops` not known to have failed; the completion is `u64::MAX` when the outcome is unknown.
fn writers<'a>(ops: impl IntoIterator<Item = &'a Op>) -> BTreeMap<i64, (u64, u64)> {
    let mut writers = BTreeMap::new();
    for op in ops.into_iter().filter(|o| o.outcome != Kind::Fail) {
        if let Some(RegOp::Write(v) | RegOp::Cas(_, v)) = reg_op(op) {
            let ret = if op.outcome == Kind::Ok {
                op.ret_ns
            } else {
                u64::MAX
            };
            writers.insert(v, (op.call_ns, ret));
        }
    }
    writers
}

/// A register operation of the model.
#[derive(Clone, Copy, Debug)]
enum RegOp {
    Read(Option<i64>),
    Write(i64),
    Cas(i64, i64),
}

fn reg_op(op: &Op) -> Option<RegOp> {
    match op.f {
        F::Read => Some(RegOp::Read(op.result.as_i64())),
        F::Write => op.arg.as_i64().map(RegOp::Write),
        F::Cas => match op.arg.as_array().map(|a| a.as_slice()) {
            Some([e, n]) => Some(RegOp::Cas(e.as_i64()?, n.as_i64()?)),
            _ => None,
        },
        _ => None,
    }
}

fn step(state: Option<i64>, op: RegOp) -> Option<Option<i64>> {
    match op {
        RegOp::Read(v) => (v == state).then_some(state),
        RegOp::Write(v) => Some(Some(v)),
        RegOp::Cas(e, n) => (state == Some(e)).then_some(Some(n)),
    }
}

enum Verdict {
    Ok,
    Undecided,
    /// The index (in the key's operations) of the operation the deepest search could not
    /// place.
    Violation(usize),
}

/// Wing–Gong search over one key's operations, starting from an absent register.
///
/// `fail` operations are left out (they did not happen); `info` operations may be placed
/// anywhere after their invocation or not at all (Jepsen's treatment); `info` reads are
/// left out (they constrain nothing).
fn linearizable(all: &[&Op]) -> Verdict {
    // (original index, model op, definite?)
    let mut ops: Vec<(usize, RegOp, bool)> = Vec::new();
    let mut times: Vec<(u64, u64)> = Vec::new();
    for (i, op) in all.iter().enumerate() {
        let definite = match op.outcome {
            Kind::Ok => true,
            Kind::Info if op.f != F::Read => false,
            _ => continue,
        };
        if let Some(m) = reg_op(op) {
            ops.push((i, m, definite));
            times.push((op.call_ns, op.ret_ns));
        }
    }
    let n = ops.len();
    // Entries: calls and the returns of definite operations, in time order; a call sorts
    // before a return at the same instant (treated as concurrent).
    let mut entries: Vec<(u64, bool, usize)> = Vec::new(); // (time, is_return, op)
    for (i, &(_, _, definite)) in ops.iter().enumerate() {
        entries.push((times[i].0, false, i));
        if definite {
            entries.push((times[i].1, true, i));
        }
    }
    entries.sort_by_key(|&(t, r, _)| (t, r));
    let m = entries.len();
    const NIL: usize = usize::MAX;
    let head = m;
    let mut next = vec![NIL; m + 1];
    let mut prev = vec![NIL; m + 1];
    let mut call_of = vec![NIL; n];
    let mut ret_of = vec![NIL; n];
    let mut last = head;
    for (k, &(_, is_ret, op)) in entries.iter().enumerate() {
        next[last] = k;
        prev[k] = last;
        last = k;
        if is_ret {
            ret_of[op] = k;
        } else {
            call_of[op] = k;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        next[prev[k]] = next[k];
        if next[k] != NIL {
            prev[next[k]] = prev[k];
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        next[prev[k]] = k;
        if next[k] != NIL {
            prev[next[k]] = k;
        }
    };
    let mut remaining = ops.iter().filter(|o| o.2).count();
    let mut state: Option<i64> = None;
    let mut bits = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
    let mut deepest = (0usize, NIL);
    let mut cur = next[head];
    let mut steps = 0u64;
    while remaining > 0 {
        steps += 1;
        if steps > MAX_STEPS {
            return Verdict::Undecided;
        }
        let stuck_at_return = cur == NIL || entries[cur].1;
        if !stuck_at_return {
            let op = entries[cur].2;
            if let Some(new_state) = step(state, ops[op].1) {
                bits[op / 64] |= 1 << (op % 64);
                if cache.insert((bits.clone(), new_state)) {
                    stack.push((op, state));
                    state = new_state;
                    unlink(&mut next, &mut prev, call_of[op]);
                    if ret_of[op] != NIL {
                        unlink(&mut next, &mut prev, ret_of[op]);
                        remaining -= 1;
                    }
                    cur = next[head];
                    continue;
                }
                bits[op / 64] &= !(1 << (op % 64));
            }
            cur = next[cur];
            continue;
        }
        // A definite operation returned before it could be placed: undo the last choice.
        if cur != NIL && stack.len() >= deepest.0 {
            deepest = (stack.len(), entries[cur].2);
        }
        let Some((op, old)) = stack.pop() else {
            let stuck = if deepest.1 == NIL { 0 } else { deepest.1 };
            return Verdict::Violation(ops[stuck].0);
        };
        bits[op / 64] &= !(1 << (op % 64));
        state = old;
        if ret_of[op] != NIL {
            relink(&mut next, &mut prev, ret_of[op]);
            remaining += 1;
        }
        relink(&mut next, &mut prev, call_of[op]);
        cur = next[call_of[op]];
    }
    Verdict::Ok
}

/// The invariants of the lock and election workloads' counters: the final read counts every
/// acknowledged increment and no more than the unknown ones besides; no two acknowledged
/// increments wrote the same value; fencing tokens never fall as the counter rises (a
/// leader makes several increments under one token; a lock holder makes one).
fn check_counters(ops: &[Op], anomalies: &mut Vec<Anomaly>) {
    let mut keys: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.f == F::Incr) {
        keys.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, incrs) in keys {
        let acked: Vec<(u64, i64, &Op)> = incrs
            .iter()
            .filter(|o| o.outcome == Kind::Ok)
            .filter_map(|o| match o.result.as_array().map(|a| a.as_slice()) {
                Some([t, v]) => Some((t.as_u64()?, v.as_i64()?, *o)),
                _ => None,
            })
            .collect();
        let unknown = incrs.iter().filter(|o| o.outcome == Kind::Info).count() as i64;
        let mut by_value: BTreeMap<i64, Vec<&Op>> = BTreeMap::new();
        for &(_, v, o) in &acked {
            by_value.entry(v).or_default().push(o);
        }
        for (v, same) in &by_value {
            if same.len() > 1 {
                anomalies.push(Anomaly {
                    kind: "double-increment",
                    key: key.to_string(),
                    message: format!(
                        "{} acknowledged increments of {key} all wrote {v}: one increment was applied over another",
                        same.len()
                    ),
                    events: same.iter().map(|o| o.indices.1).collect(),
                });
            }
        }
        let mut ordered = acked.clone();
        ordered.sort_by_key(|&(t, v, _)| (v, t));
        for w in ordered.windows(2) {
            let ((t1, v1, o1), (t2, v2, o2)) = (w[0], w[1]);
            if v1 < v2 && t1 > t2 {
                anomalies.push(Anomaly {
                    kind: "fencing-order",
                    key: key.to_string(),
                    message: format!(
                        "fenced write of {key} = {v2} under token {t2} committed after the write of {v1} under token {t1}: the fenced writes of two holders interleaved"
                    ),
                    events: vec![o1.indices.1, o2.indices.1],
                });
            }
        }
        // The final value: the last ok read of the key that started after every increment
        // completed.
        let last_incr = incrs.iter().map(|o| o.ret_ns).max().unwrap_or(0);
        let final_read = ops
            .iter()
            .filter(|o| o.f == F::Read && o.key == key && o.outcome == Kind::Ok)
            .filter(|o| o.call_ns > last_incr)
            .max_by_key(|o| o.ret_ns);
        let Some(read) = final_read else { continue };
        let final_value = read.result.as_i64().unwrap_or(0);
        let n = acked.len() as i64;
        if final_value < n || final_value > n + unknown {
            anomalies.push(Anomaly {
                kind: if final_value < n {
                    "lost-increment"
                } else {
                    "phantom-increment"
                },
                key: key.to_string(),
                message: format!(
                    "{key} ends at {final_value} after {n} acknowledged and {unknown} unknown increments"
                ),
                events: vec![read.indices.0, read.indices.1],
            });
        }
    }
}

/// The watch workload's invariants, per key: every delivered value was written (by a write
/// invoked before it arrived); versions never go down along a watcher's sequence and one
/// version always carries one value; a watcher never goes back to a value whose write
/// completed before the write of a value it had already seen was invoked; and a watcher
/// that ran to its end (the null end marker) ended at the key's final value.
fn check_watches(ops: &[Op], anomalies: &mut Vec<Anomaly>) {
    let mut keys: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops
        .iter()
        .filter(|o| o.f == F::WatchEvent && o.outcome == Kind::Ok)
    {
        keys.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, events) in keys {
        let writers = writers(ops.iter().filter(|o| o.key == key));
        let writes_done = writers
            .values()
            .map(|w| w.1)
            .filter(|&r| r != u64::MAX)
            .max();
        let final_value = ops
            .iter()
            .filter(|o| o.f == F::Read && o.key == key && o.outcome == Kind::Ok)
            .filter(|o| writes_done.is_none_or(|d| o.call_ns > d))
            .max_by_key(|o| o.ret_ns)
            .and_then(|o| o.result.as_i64());
        let mut version_values: BTreeMap<i64, (i64, &Op)> = BTreeMap::new();
        let mut by_watcher: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
        for e in events {
            by_watcher.entry(e.process).or_default().push(e);
        }
        let mut bad = |kind: &'static str, message: String, events: Vec<u64>| {
            anomalies.push(Anomaly {
                kind,
                key: key.to_string(),
                message,
                events,
            })
        };
        for (watcher, mut seen) in by_watcher {
            seen.sort_by_key(|o| o.ret_ns);
            let mut last: Option<(i64, i64, &Op)> = None; // (version, value, event)
            let mut newest_call = 0u64;
            for e in seen {
                let Some([version, value]) = e.result.as_array().map(|a| a.as_slice()) else {
                    // The end marker: the watcher ran to its end.
                    match (last, final_value) {
                        (Some((_, v, _)), Some(f)) if v != f => bad(
                            "watch-not-converged",
                            format!(
                                "watcher {watcher} of {key} ended at {v}, not the final value {f}"
                            ),
                            vec![e.indices.1],
                        ),
                        (None, Some(f)) => bad(
                            "watch-not-converged",
                            format!(
                                "watcher {watcher} of {key} saw nothing; the final value is {f}"
                            ),
                            vec![e.indices.1],
                        ),
                        _ => {}
                    }
                    continue;
                };
                let (Some(version), Some(value)) = (version.as_i64(), value.as_i64()) else {
                    bad(
                        "watch-phantom",
                        format!("watcher {watcher} of {key} got {}", e.result),
                        vec![e.indices.1],
                    );
                    continue;
                };
                let Some(&(w_call, w_ret)) = writers.get(&value).filter(|w| w.0 <= e.ret_ns) else {
                    bad(
                        "watch-phantom",
                        format!("watcher {watcher} of {key} got {value}, which no write had been invoked to write"),
                        vec![e.indices.1],
                    );
                    continue;
                };
                match version_values.get(&version) {
                    Some(&(other, first)) if other != value => bad(
                        "watch-version-conflict",
                        format!("version {version} of {key} carried {other} and {value}"),
                        vec![first.indices.1, e.indices.1],
                    ),
                    None => {
                        version_values.insert(version, (value, e));
                    }
                    _ => {}
                }
                if let Some((pv, pval, prev)) = last {
                    if version < pv || (version == pv && value != pval) || w_ret < newest_call {
                        bad(
                            "watch-out-of-order",
                            format!(
                                "watcher {watcher} of {key} got {value} (version {version}) after {pval} (version {pv})"
                            ),
                            vec![prev.indices.1, e.indices.1],
                        );
                    }
                }
                newest_call = newest_call.max(w_call);
                last = Some((version, value, e));
            }
        }
    }
}
