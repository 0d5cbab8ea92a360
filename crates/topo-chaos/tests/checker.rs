//! The checker on hand-made histories: each anomaly the campaign looks for is caught, and
//! the legitimate shapes around it (concurrency, unknown outcomes) are accepted.

use serde_json::{json, Value};
use topo_chaos::check::check;
use topo_chaos::history::{merge, Event, Kind, F};

/// One hand-written event: `(time, process, kind, f, key, value)`.
type Row = (u64, u64, Kind, F, &'static str, Value);

/// Builds a history from rows.
fn history(rows: &[Row]) -> Vec<Event> {
    let events = rows
        .iter()
        .map(|(t, p, kind, f, key, value)| Event {
            index: 0,
            time_ns: *t,
            process: *p,
            kind: *kind,
            f: *f,
            key: key.to_string(),
            value: value.clone(),
        })
        .collect();
    merge(events, 1_000)
}

use Kind::{Fail, Info, Invoke, Ok};
use F::{Cas, Incr, Read, Write};

fn kinds(events: &[Event]) -> Vec<&'static str> {
    check(events).anomalies.iter().map(|a| a.kind).collect()
}

#[test]
fn concurrent_reads_and_writes_linearize() {
    let h = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Write, "x", json!(2)),
        (4, 2, Invoke, Read, "x", Value::Null),
        // Concurrent with the write of 2: either value may be seen.
        (5, 2, Ok, Read, "x", json!(1)),
        (6, 1, Ok, Write, "x", Value::Null),
        (7, 2, Invoke, Cas, "x", json!([2, 3])),
        (8, 2, Ok, Cas, "x", Value::Null),
        (9, 3, Invoke, Read, "x", Value::Null),
        (10, 3, Ok, Read, "x", json!(3)),
    ]);
    let r = check(&h);
    assert!(r.is_valid(), "{r:?}");
}

#[test]
fn stale_read_is_caught() {
    let h = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Write, "x", json!(2)),
        (4, 1, Ok, Write, "x", Value::Null),
        // Begins after the write of 2 was acknowledged, yet sees 1.
        (5, 2, Invoke, Read, "x", Value::Null),
        (6, 2, Ok, Read, "x", json!(1)),
    ]);
    let r = check(&h);
    assert_eq!(kinds(&h), ["non-linearizable"], "{r:?}");
    assert_eq!(r.anomalies[0].key, "x");
    assert!(r.anomalies[0].events.contains(&5), "{r:?}");
}

#[test]
fn lost_write_is_caught() {
    let h = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Write, "x", json!(2)),
        (4, 1, Ok, Write, "x", Value::Null),
        (5, 2, Invoke, Read, "x", Value::Null),
        (6, 2, Ok, Read, "x", json!(2)),
        // Acknowledged, then never seen: the register kept 2.
        (7, 0, Invoke, Write, "x", json!(3)),
        (8, 0, Ok, Write, "x", Value::Null),
        (9, 2, Invoke, Read, "x", Value::Null),
        (10, 2, Ok, Read, "x", json!(2)),
    ]);
    assert_eq!(kinds(&h), ["non-linearizable"]);
}

#[test]
fn a_cas_that_succeeded_against_the_wrong_value_is_caught() {
    let h = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Cas, "x", json!([5, 6])),
        (4, 1, Ok, Cas, "x", Value::Null),
    ]);
    assert_eq!(kinds(&h), ["non-linearizable"]);
}

#[test]
fn unknown_outcomes_may_or_may_not_have_happened() {
    // An `info` write seen later: it happened.
    let seen = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Write, "x", json!(2)),
        (4, 1, Info, Write, "x", Value::Null),
        (9, 2, Invoke, Read, "x", Value::Null),
        (10, 2, Ok, Read, "x", json!(2)),
    ]);
    assert!(check(&seen).is_valid(), "{:?}", check(&seen));
    // An `info` write never seen: it did not happen.
    let unseen = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Write, "x", json!(2)),
        (4, 1, Info, Write, "x", Value::Null),
        (9, 2, Invoke, Read, "x", Value::Null),
        (10, 2, Ok, Read, "x", json!(1)),
    ]);
    assert!(check(&unseen).is_valid());
    // A failed write is known not to have happened: reading its value is an anomaly.
    let failed = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Write, "x", json!(2)),
        (4, 1, Fail, Write, "x", Value::Null),
        (9, 2, Invoke, Read, "x", Value::Null),
        (10, 2, Ok, Read, "x", json!(2)),
    ]);
    assert_eq!(kinds(&failed), ["non-linearizable"]);
    // An `info` write cannot take effect before it was invoked.
    let early = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 2, Invoke, Read, "x", Value::Null),
        (4, 2, Ok, Read, "x", json!(2)),
        (5, 1, Invoke, Write, "x", json!(2)),
        (6, 1, Info, Write, "x", Value::Null),
    ]);
    assert_eq!(kinds(&early), ["non-linearizable"]);
}

/// A lock round's increment and the final read, as rows.
fn incr(t: u64, p: u64, token: u64, kind: Kind, new: i64) -> [Row; 2] {
    let done = if kind == Ok {
        json!([token, new])
    } else {
        Value::Null
    };
    [
        (t, p, Invoke, Incr, "c", json!(token)),
        (t + 1, p, kind, Incr, "c", done),
    ]
}

fn final_read(t: u64, value: i64) -> [Row; 2] {
    [
        (t, 9, Invoke, Read, "c", Value::Null),
        (t + 1, 9, Ok, Read, "c", json!(value)),
    ]
}

fn rows(parts: &[&[Row]]) -> Vec<Event> {
    history(&parts.concat())
}

#[test]
fn a_correct_lock_history_passes() {
    let h = rows(&[
        &[
            (0, 8, Invoke, Write, "c", json!(0)),
            (1, 8, Ok, Write, "c", Value::Null),
        ],
        &incr(10, 0, 5, Ok, 1),
        &incr(20, 1, 7, Ok, 2),
        &incr(30, 2, 9, Info, 0),
        &incr(40, 0, 11, Ok, 3),
        &final_read(50, 4),
    ]);
    let r = check(&h);
    assert!(r.is_valid(), "{r:?}");
}

#[test]
fn double_increment_is_caught() {
    // Two holders read 1 and both wrote 2: one increment overwrote the other.
    let h = rows(&[
        &incr(10, 0, 5, Ok, 1),
        &incr(20, 1, 7, Ok, 2),
        &incr(21, 2, 9, Ok, 2),
        &final_read(50, 2),
    ]);
    let found = kinds(&h);
    assert!(found.contains(&"double-increment"), "{found:?}");
    assert!(found.contains(&"lost-increment"), "{found:?}");
}

#[test]
fn lost_increment_is_caught() {
    let h = rows(&[
        &incr(10, 0, 5, Ok, 1),
        &incr(20, 1, 7, Ok, 2),
        &final_read(50, 1),
    ]);
    assert_eq!(kinds(&h), ["lost-increment"]);
}

#[test]
fn overlapping_fenced_writes_are_caught() {
    // The counter's second value was written under an older token than its first: the
    // older holder's fenced write landed after the newer holder's.
    let h = rows(&[
        &incr(10, 0, 7, Ok, 1),
        &incr(20, 1, 5, Ok, 2),
        &final_read(50, 2),
    ]);
    assert_eq!(kinds(&h), ["fencing-order"]);
}

#[test]
fn malformed_histories_are_reported() {
    let h = history(&[(1, 0, Ok, Write, "x", Value::Null)]);
    assert!(!check(&h).malformed.is_empty());
}

/// A read served by a lagging server: stale, but of a written value and not going back in
/// time for its process.
fn stale_history(second_read: i64) -> Vec<Event> {
    history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Write, "x", json!(2)),
        (4, 1, Ok, Write, "x", Value::Null),
        (5, 2, Invoke, Read, "x", Value::Null),
        (6, 2, Ok, Read, "x", json!(1)),
        (7, 2, Invoke, Read, "x", Value::Null),
        (8, 2, Ok, Read, "x", json!(second_read)),
    ])
}

#[test]
fn sequential_reads_allow_staleness_but_not_going_back() {
    use topo_chaos::check::{check_with, Reads};
    let stale = stale_history(2);
    assert_eq!(kinds(&stale), ["non-linearizable"]);
    let r = check_with(&stale, Reads::Sequential);
    assert!(r.is_valid(), "{r:?}");
    assert_eq!(r.stale_read_keys, ["x"]);
    // Process 2 saw 2 and then 1 again: back in time.
    let back = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Write, "x", json!(2)),
        (4, 1, Ok, Write, "x", Value::Null),
        (5, 2, Invoke, Read, "x", Value::Null),
        (6, 2, Ok, Read, "x", json!(2)),
        (7, 2, Invoke, Read, "x", Value::Null),
        (8, 2, Ok, Read, "x", json!(1)),
    ]);
    let found: Vec<_> = check_with(&back, Reads::Sequential)
        .anomalies
        .iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(found, ["non-monotonic-read"]);
    // A value nobody wrote.
    let phantom = stale_history(7);
    let found: Vec<_> = check_with(&phantom, Reads::Sequential)
        .anomalies
        .iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(found, ["phantom-read"]);
    // Writes must still linearize: a lost write is caught even with stale reads allowed.
    let lost = history(&[
        (1, 0, Invoke, Write, "x", json!(1)),
        (2, 0, Ok, Write, "x", Value::Null),
        (3, 1, Invoke, Cas, "x", json!([5, 6])),
        (4, 1, Ok, Cas, "x", Value::Null),
    ]);
    assert!(!check_with(&lost, Reads::Sequential).is_valid());
}

/// A watch history: the initial write, writes of 1 and 2, the final read of 2, and one
/// watcher (process 5) seeing `seen` as `(version, value)` pairs, then its end marker.
fn watch_history(seen: &[(i64, i64)]) -> Vec<Event> {
    let mut rows: Vec<Row> = vec![
        (0, 8, Invoke, Write, "w", json!(0)),
        (1, 8, Ok, Write, "w", Value::Null),
        (10, 0, Invoke, Write, "w", json!(1)),
        (11, 0, Ok, Write, "w", Value::Null),
        (20, 0, Invoke, Write, "w", json!(2)),
        (21, 0, Ok, Write, "w", Value::Null),
    ];
    let mut t = 30;
    for &(version, value) in seen {
        rows.push((t, 5, Invoke, F::WatchEvent, "w", Value::Null));
        rows.push((t + 1, 5, Ok, F::WatchEvent, "w", json!([version, value])));
        t += 2;
    }
    rows.push((t, 5, Invoke, F::WatchEvent, "w", Value::Null));
    rows.push((t + 1, 5, Ok, F::WatchEvent, "w", Value::Null));
    rows.push((t + 2, 8, Invoke, Read, "w", Value::Null));
    rows.push((t + 3, 8, Ok, Read, "w", json!(2)));
    history(&rows)
}

#[test]
fn watch_sequences_are_checked() {
    // Coalesced (1 skipped) and repeated values are allowed.
    let r = check(&watch_history(&[(1, 0), (3, 2), (3, 2)]));
    assert!(r.is_valid(), "{r:?}");
    assert_eq!(
        kinds(&watch_history(&[(1, 0), (3, 2), (2, 1)])),
        ["watch-out-of-order", "watch-not-converged"]
    );
    assert_eq!(
        kinds(&watch_history(&[(1, 0), (2, 1)])),
        ["watch-not-converged"]
    );
    assert_eq!(
        kinds(&watch_history(&[(1, 0), (2, 7), (3, 2)])),
        ["watch-phantom"]
    );
    assert_eq!(
        kinds(&watch_history(&[(1, 0), (3, 2), (3, 1)])),
        [
            "watch-version-conflict",
            "watch-out-of-order",
            "watch-not-converged"
        ]
    );
}

/// A term of the election workload: `lead` by `p` under `token` at `t`, resigned at `end`.
fn term(t: u64, end: u64, p: u64, token: u64) -> [Row; 4] {
    [
        (t, p, Invoke, F::Lead, "chaos", Value::Null),
        (t + 1, p, Ok, F::Lead, "chaos", json!(token)),
        (end, p, Invoke, F::Resign, "chaos", json!(token)),
        (end + 1, p, Ok, F::Resign, "chaos", json!(false)),
    ]
}

#[test]
fn leaders_incrementing_under_one_token_each_pass() {
    let h = rows(&[
        &term(5, 28, 0, 5),
        &incr(10, 0, 5, Ok, 1),
        &incr(20, 0, 5, Ok, 2),
        &term(30, 58, 1, 7),
        &incr(40, 1, 7, Ok, 3),
        &incr(50, 1, 7, Ok, 4),
        &final_read(60, 4),
    ]);
    let r = check(&h);
    assert!(r.is_valid(), "{r:?}");
    assert_eq!(r.leader_overlap_ns, 0);
}

#[test]
fn interleaved_fenced_writes_of_two_leaders_are_caught() {
    // The old leader (token 5) writes again after its successor (token 7) did: the
    // counter goes 5, 7, 5 in token order.
    let h = rows(&[
        &term(5, 70, 0, 5),
        &term(15, 80, 1, 7),
        &incr(10, 0, 5, Ok, 1),
        &incr(20, 1, 7, Ok, 2),
        &incr(30, 0, 5, Ok, 3),
        &final_read(90, 3),
    ]);
    let r = check(&h);
    assert_eq!(kinds(&h), ["fencing-order"], "{r:?}");
    // Both claimed to lead from 16 (the second lead's completion) to 70.
    assert_eq!(r.leader_overlap_ns, 54);
}
