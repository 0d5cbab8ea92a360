//! The binary end to end on the local backend (several OS processes sharing one file):
//! an honest run under faults is valid, a run through a write-dropping connection is
//! reported with a non-zero exit, and `check` re-checks the saved history.

use std::process::Command;

fn topo_chaos(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_topo-chaos"))
        .args(args)
        .output()
        .expect("run topo-chaos");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn honest_local_run_under_client_faults_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("h.jsonl");
    let (ok, text) = topo_chaos(&[
        "--backend",
        "local",
        "--workload",
        "lock",
        "--faults",
        "kill",
        "--duration",
        "3s",
        "--clients",
        "3",
        "--seed",
        "11",
        "--history",
        history.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("| valid |"), "{text}");
    let (ok, text) = topo_chaos(&["check", history.to_str().unwrap()]);
    assert!(ok, "{text}");
}

#[test]
fn a_backend_that_drops_acknowledged_writes_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("h.jsonl");
    let (ok, text) = topo_chaos(&[
        "--backend",
        "local",
        "--workload",
        "register",
        "--faults",
        "none",
        "--duration",
        "2s",
        "--clients",
        "3",
        "--seed",
        "12",
        "--break-writes",
        "5",
        "--history",
        history.to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("ANOMALY non-linearizable"), "{text}");
    let (ok, text) = topo_chaos(&["check", history.to_str().unwrap()]);
    assert!(!ok, "{text}");
}

#[test]
fn bad_arguments_get_a_clear_error() {
    let (ok, text) = topo_chaos(&["--duration", "ten", "--backend", "local"]);
    assert!(!ok);
    assert!(text.contains("not a duration"), "{text}");
    for huge in ["99999999999999999999999h", "999999999999h"] {
        let (ok, text) = topo_chaos(&["--duration", huge, "--backend", "local"]);
        assert!(!ok);
        assert!(text.contains("too long"), "{huge}: {text}");
        assert!(!text.contains("panicked"), "{huge}: {text}");
    }
    let (ok, text) = topo_chaos(&["check", "/nonexistent/history.jsonl"]);
    assert!(!ok);
    assert!(text.contains("/nonexistent/history.jsonl"), "{text}");
}
