//! # topo-testkit
//!
//! Starts real topology servers for tests: each on free 127.0.0.1 ports, in a temporary
//! directory, stopped when its handle is dropped, and killed even when the test process dies
//! without running destructors (see [`ServerProcess`]).
//!
//! A test that needs a server calls [`require_binary`] first: when the binary is missing it
//! prints that the test is skipped and returns `false`, unless `TOPO_TEST_STRICT=1` is set
//! (as CI sets it), in which case it panics so that a missing install cannot pass as green.
//!
//! [`proxy::FaultProxy`] sits between a client and one server to inject network faults
//! (latency, blackholes, refused connections, resets, lost replies).

pub mod certs;
pub mod etcd;
pub mod proxy;
pub mod zk;

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The environment variables through which `topo` takes its topology and an enclosing
/// lock; a test running the binary removes them so that the caller's shell cannot change
/// what it tests.
pub const TOPO_ENV: [&str; 5] = [
    "TOPO_IMPLEMENTATION",
    "TOPO_GLOBAL_SERVER_ADDRESS",
    "TOPO_GLOBAL_ROOT",
    "TOPO_LOCK_FENCE",
    "TOPO_LOG",
];

/// Removes [`TOPO_ENV`] from `cmd`'s environment.
pub fn without_topo_env(cmd: &mut Command) -> &mut Command {
    for v in TOPO_ENV {
        cmd.env_remove(v);
    }
    cmd
}

/// True when `TOPO_TEST_STRICT=1`: missing server binaries fail tests instead of skipping.
pub fn strict() -> bool {
    std::env::var("TOPO_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// Finds `binary` on `PATH` (or as given, when it contains a `/`).
pub fn find_binary(binary: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        let p = PathBuf::from(binary);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

/// Whether a test that needs `binary` (for `what`, e.g. "etcd") can run.
///
/// Returns `false` after printing a skip line when the binary is missing; panics instead
/// when [`strict`] mode is on.
pub fn require_binary(binary: &str, what: &str) -> bool {
    if find_binary(binary).is_some() {
        return true;
    }
    if strict() {
        panic!("{what}: `{binary}` not found on PATH and TOPO_TEST_STRICT=1 forbids skipping");
    }
    eprintln!("skipping: {what} needs `{binary}` on PATH (install it, or see .ci/run)");
    false
}

/// A free TCP port on 127.0.0.1 (bound and released; the OS will not hand it out again at
/// once).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child server process that cannot outlive the test process.
///
/// The server is started through `sh`, which runs it in the background and then waits for
/// end-of-file on its standard input, a pipe held by this handle. When the handle is
/// dropped, or the test process dies in any way (so statics that are never dropped are
/// covered too), the pipe closes and the shell kills the server with SIGKILL.
#[derive(Debug)]
pub struct ServerProcess {
    shell: Child,
    pid: u32,
}

impl ServerProcess {
    /// Starts `program args…` with its stdout and stderr appended to `log`.
    pub fn spawn(program: &Path, args: &[String], log: &Path) -> io::Result<Self> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        // `$0` is the program; `"$@"` its arguments. The shell prints the server's pid, then
        // blocks on stdin; on end-of-file it kills the server.
        let script = r#""$0" "$@" & p=$!; echo "$p"; cat >/dev/null; kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null"#;
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file.try_clone()?)
            .spawn()?;
        let mut pid_line = String::new();
        {
            use std::io::BufRead;
            let out = shell
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("no stdout"))?;
            let mut reader = io::BufReader::new(out);
            reader.read_line(&mut pid_line)?;
            // The server's own output goes to the log; keep draining the pipe so it never
            // blocks (nothing else is printed on it).
            std::thread::spawn(move || io::copy(&mut reader, &mut io::sink()));
        }
        let pid = pid_line
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("bad pid line {pid_line:?}")))?;
        drop(log_file);
        Ok(ServerProcess { shell, pid })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` (e.g. `"STOP"`, `"CONT"`, `"KILL"`) to the server.
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -{signal} {} failed",
                self.pid
            )))
        }
    }

    /// Kills the server and waits for the shell to finish.
    pub fn kill(&mut self) {
        // Closing stdin makes the shell kill the server and exit.
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server's process slot: running, paused or killed. Server handles deref to it, so
/// `member.kill()`, `member.pause()` and `member.resume()` work on any of them.
#[derive(Debug, Default)]
pub struct ProcessSlot(Option<ServerProcess>);

impl ProcessSlot {
    /// A slot holding a running process.
    pub fn new(process: ServerProcess) -> Self {
        ProcessSlot(Some(process))
    }

    /// Kills the server (SIGKILL); a killed slot stays empty until [`ProcessSlot::set`].
    pub fn kill(&mut self) {
        if let Some(mut p) = self.0.take() {
            p.kill();
        }
    }

    /// Pauses the server (SIGSTOP).
    ///
    /// # Errors
    /// When it is not running or the signal fails.
    pub fn pause(&self) -> io::Result<()> {
        self.running()?.signal("STOP")
    }

    /// Resumes a paused server (SIGCONT).
    ///
    /// # Errors
    /// When it is not running or the signal fails.
    pub fn resume(&self) -> io::Result<()> {
        self.running()?.signal("CONT")
    }

    /// Puts a (re)started process in the slot, killing any previous one.
    pub fn set(&mut self, process: ServerProcess) {
        self.kill();
        self.0 = Some(process);
    }

    fn running(&self) -> io::Result<&ServerProcess> {
        self.0
            .as_ref()
            .ok_or_else(|| io::Error::other("the server is not running"))
    }
}
