//! `topo lock <dir> -- <command>`: runs a command under a lock of the global topology, so
//! that nothing the command does outlives the lock and every write it makes through
//! Toposphere is fenced by it.
//!
//! Process layout: `topo lock` (the holder) starts a copy of itself, the supervisor, as the
//! leader of a new process group, and the supervisor starts the command in that group. The
//! supervisor asks the kernel for a signal when the holder dies (Linux's parent-death
//! signal) and then kills the whole group, so a holder killed with SIGKILL takes the command
//! with it. The holder checks the lock while the command runs; when it is lost it sends the
//! group SIGTERM, then SIGKILL after the grace period. The environment passes the lock on
//! ([`toposphere::fencing`]): a `topo` run inside fences its writes, so even a command that
//! kept running while the holder was paused cannot overwrite the next holder's work.

use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgrp, getppid, Pid};
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};
use topo_core::{ConnExt, Result, TopoError};
use toposphere::fencing::{LockEnv, FENCE_ENV, FENCING_TOKEN_ENV, LOCK_KEY_ENV};
use toposphere::Server;

use crate::args::GlobalArgs;

/// The hidden verb that runs the supervisor.
pub(crate) const SUPERVISE: &str = "__lock-supervise";

/// `topo lock`'s exit code when the lock was lost while the command ran.
pub(crate) const LOCK_LOST_EXIT: u8 = 125;

/// How often the holder checks that its lock is still held.
const CHECK_PERIOD: Duration = Duration::from_millis(500);

/// The exit code a shell gives for a process ended by `signal`.
fn signal_exit(signal: i32) -> ExitCode {
    ExitCode::from(u8::try_from(128 + signal).unwrap_or(255))
}

/// The exit code of `status`, as a shell reports it.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (None, Some(s)) => signal_exit(s),
        (None, None) => ExitCode::FAILURE,
    }
}

/// Sends `signal` to process group `group`; a group that is already gone is no error.
fn signal_group(group: Pid, signal: Signal) {
    if let Err(e) = killpg(group, signal) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(%group, ?signal, "cannot signal the command's process group: {e}");
        }
    }
}

fn listen(kind: SignalKind) -> Result<SignalStream> {
    signal(kind).map_err(|e| TopoError::invalid(format!("cannot handle signals: {e}")))
}

/// The holder: takes the lock on `dir`, runs `command` under the supervisor, and releases
/// the lock after the command exits.
pub(crate) async fn run(
    ts: &Server,
    g: &GlobalArgs,
    dir: &str,
    command: &[String],
    kill_grace: Duration,
) -> Result<ExitCode> {
    if command.is_empty() {
        return Err(TopoError::invalid("lock: no command given after --"));
    }
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let mut hangup = listen(SignalKind::hangup())?;
    let contents =
        toposphere::locks::lock_descriptor(&format!("topo lock -- {}", command.join(" ")));
    let guard = ts
        .global()
        .lock_timeout(dir, &contents, ts.config().lock_timeout)
        .await?;
    let fence = guard.fence();
    let env = LockEnv::new(&g.implementation, &g.server_address, &g.root, &fence);
    let exe = std::env::current_exe()
        .map_err(|e| TopoError::invalid(format!("cannot find the topo binary: {e}")))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(SUPERVISE)
        .arg(std::process::id().to_string())
        .arg("--")
        .args(command)
        .env(FENCE_ENV, env.to_env_value())
        .env(FENCING_TOKEN_ENV, fence.token().to_string())
        .env(LOCK_KEY_ENV, fence.key())
        .process_group(0);
    if g.implementation == "etcd2" {
        // The names `etcdctl lock` exports, so etcd tools can fence on the key themselves.
        cmd.env("ETCD_LOCK_KEY", fence.key())
            .env("ETCD_LOCK_REV", fence.token().to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.unlock().await;
            return Err(TopoError::invalid(format!("cannot start the command: {e}")));
        }
    };
    // The supervisor leads the group; its id is known until it has been waited for.
    let Some(group) = child
        .id()
        .and_then(|i| i32::try_from(i).ok())
        .map(Pid::from_raw)
    else {
        let _ = guard.unlock().await;
        return Err(TopoError::invalid(
            "the command's supervisor exited at once",
        ));
    };
    // While the command runs: check the lock every period, without ever holding up signal
    // forwarding or the command's exit behind a slow check.
    let mut next_check = tokio::time::Instant::now() + CHECK_PERIOD;
    let mut checking = None;
    let mut lost = false;
    let mut kill_at = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = interrupt.recv() => signal_group(group, Signal::SIGINT),
            _ = terminate.recv() => signal_group(group, Signal::SIGTERM),
            _ = hangup.recv() => signal_group(group, Signal::SIGHUP),
            _ = tokio::time::sleep_until(next_check), if checking.is_none() && !lost => {
                checking = Some(Box::pin(guard.check()));
            }
            result = async {
                match checking.as_mut() {
                    Some(check) => check.await,
                    None => std::future::pending().await,
                }
            }, if checking.is_some() => {
                checking = None;
                next_check = tokio::time::Instant::now() + CHECK_PERIOD;
                if let Err(e) = result {
                    if e.is(topo_core::ErrorKind::LockLost) {
                        eprintln!(
                            "topo: the lock on {dir} was lost ({e}); stopping the command \
                             (SIGTERM, SIGKILL after {kill_grace:?})"
                        );
                        signal_group(group, Signal::SIGTERM);
                        lost = true;
                        kill_at = Some(tokio::time::Instant::now() + kill_grace);
                    }
                }
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                signal_group(group, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    drop(checking);
    // Whatever the command left running in its group must not outlive the lock either.
    signal_group(group, Signal::SIGKILL);
    let held = if lost {
        Err(TopoError::LockLost(dir.to_string()))
    } else {
        guard.check().await
    };
    let unlocked = guard.unlock().await;
    let status = status.map_err(|e| TopoError::invalid(format!("waiting for the command: {e}")))?;
    if let Err(e) = held.and(unlocked) {
        if !lost {
            eprintln!("topo: the lock on {dir} was lost while the command ran: {e}");
        }
        return Ok(ExitCode::from(LOCK_LOST_EXIT));
    }
    Ok(exit_code(status))
}

/// The supervisor: leader of the command's process group, child of the holder `parent`.
/// Runs `command` and exits with its code; kills the group when the holder dies.
pub(crate) async fn supervise(parent: i32, command: &[String]) -> Result<ExitCode> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| TopoError::invalid("lock: no command given"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|e| TopoError::invalid(format!("cannot bind the command to topo lock: {e}")))?;
    let mut streams = [
        listen(SignalKind::terminate())?,
        listen(SignalKind::interrupt())?,
        listen(SignalKind::hangup())?,
    ];
    let orphaned = || getppid() != Pid::from_raw(parent);
    // The holder may have died before the parent-death signal was armed.
    if orphaned() {
        return Ok(ExitCode::from(LOCK_LOST_EXIT));
    }
    let mut child = match tokio::process::Command::new(program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("topo: cannot run {program}: {e}");
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(ExitCode::from(code));
        }
    };
    loop {
        let [a, b, c] = &mut streams;
        tokio::select! {
            status = child.wait() => {
                let status = status
                    .map_err(|e| TopoError::invalid(format!("waiting for {program}: {e}")))?;
                return Ok(exit_code(status));
            }
            _ = a.recv() => {}
            _ = b.recv() => {}
            _ = c.recv() => {}
        }
        // A signal while the holder lives was sent to the whole group: the command has its
        // own copy. After the holder's death nothing protects the lock any more.
        if orphaned() {
            signal_group(getpgrp(), Signal::SIGKILL);
        }
    }
}
