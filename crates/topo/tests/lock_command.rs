//! `topo lock <dir> -- <command>` through the binary, on local, etcd and ZooKeeper: the
//! command dies with its holder, a command whose lock is gone cannot write, a lost lock
//! stops the command, and writes made under a held lock go through.
//!
//! Each scenario is the one a crashed or paused operator tool produces: the first holder's
//! command wants to write `A` late; a second holder takes the lock once the first one's
//! lease or session is gone, writes `B`, waits, and reads its own value back.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use topo_testkit::etcd::EtcdCluster;
use topo_testkit::zk::ZkCluster;

/// A topology for `topo` (through the environment, so commands run inside `topo lock`
/// reach it too), a work folder, and the flags that make lock TTLs two seconds.
struct Topo {
    dir: tempfile::TempDir,
    implementation: &'static str,
    address: String,
    ttl_flags: Vec<&'static str>,
    _servers: Option<Box<dyn std::any::Any>>,
}

impl Topo {
    fn local() -> Self {
        Self::new(
            "local",
            "toposphere.db".into(),
            vec!["--topo-local-lock-ttl", "2s"],
            None,
        )
    }

    fn etcd() -> Option<Self> {
        if !topo_testkit::require_binary("etcd", "topo lock on etcd") {
            return None;
        }
        let etcd = EtcdCluster::single().unwrap();
        let address = etcd.endpoints();
        Some(Self::new(
            "etcd2",
            address,
            vec!["--topo-etcd-lease-ttl", "2"],
            Some(Box::new(etcd)),
        ))
    }

    fn zk() -> Option<Self> {
        if !topo_testkit::zk::require() {
            return None;
        }
        // Sessions as short as one second are allowed with 500 ms ticks.
        let zk = ZkCluster::standalone_with_tick(500).unwrap();
        let address = zk.addrs();
        Some(Self::new(
            "zk2",
            address,
            vec!["--topo-zk-base-timeout", "2s"],
            Some(Box::new(zk)),
        ))
    }

    fn new(
        implementation: &'static str,
        address: String,
        ttl_flags: Vec<&'static str>,
        servers: Option<Box<dyn std::any::Any>>,
    ) -> Self {
        let t = Topo {
            dir: tempfile::tempdir().unwrap(),
            implementation,
            address,
            ttl_flags,
            _servers: servers,
        };
        std::fs::write(t.path().join("A.txt"), "A").unwrap();
        std::fs::write(t.path().join("B.txt"), "B").unwrap();
        t.ok(&["CreateKeyspace", "ks"]);
        t
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_topo"));
        c.current_dir(self.path())
            .env("TOPO_IMPLEMENTATION", self.implementation)
            .env("TOPO_GLOBAL_SERVER_ADDRESS", &self.address)
            .env_remove("TOPO_GLOBAL_ROOT")
            .env_remove("TOPO_LOCK_FENCE")
            .env_remove("TOPO_LOG");
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "topo {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// `topo lock keyspaces/ks -- sh -c <script>`, with `$topo` in the script naming this
    /// binary.
    fn lock(&self, script: &str) -> Command {
        let mut c = self.cmd();
        c.env("topo", env!("CARGO_BIN_EXE_topo"))
            .args(&self.ttl_flags)
            .args([
                "--lock-timeout",
                "30s",
                "lock",
                "keyspaces/ks",
                "--",
                "sh",
                "-c",
            ])
            .arg(script);
        c
    }

    /// Starts the first holder, whose command runs `script` after signalling that it holds
    /// the lock; returns once it does.
    fn start_first_holder(&self, script: &str) -> Child {
        let mut child = self
            .lock(&format!("touch started; {script}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = self.path().join("started");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !started.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the first holder exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the first holder never got the lock"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// The second holder: waits for the lock, writes `B`, waits past the moment the first
    /// holder's command wanted to write, then prints what the file holds.
    fn second_holder(&self) -> Output {
        self.lock("$topo TopoCp --to_topo B.txt /keyspaces/ks/owner && sleep 5 && $topo TopoCat /keyspaces/ks/owner")
            .output()
            .unwrap()
    }

    fn owner(&self) -> String {
        self.ok(&["TopoCat", "/keyspaces/ks/owner"])
            .trim()
            .to_string()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig}");
}

/// SIGKILL of `topo lock` kills its command: the orphan never writes `A` over the second
/// holder's `B`.
fn killed_holder_takes_its_command_along(t: &Topo) {
    let mut first = t.start_first_holder(
        "sleep 3; $topo TopoCp --to_topo A.txt /keyspaces/ks/owner; echo wrote > orphan-ran",
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let second = t.second_holder();
    assert!(
        second.status.success(),
        "second holder: {}",
        text(&second.stderr)
    );
    assert_eq!(text(&second.stdout).trim(), "B", "{}", t.implementation);
    assert_eq!(t.owner(), "B");
    assert!(
        !t.path().join("orphan-ran").exists(),
        "{}: the command outlived its killed topo lock",
        t.implementation
    );
}

/// A `topo lock` paused past its TTL loses the lock: the command, still running, has its
/// write refused by the fence; once resumed, `topo lock` stops the command and exits 125.
fn paused_holder_is_fenced_then_stopped(t: &Topo) {
    let first = t.start_first_holder(
        "sleep 4; $topo TopoCp --to_topo A.txt /keyspaces/ks/owner; echo $? > orphan-rc; sleep 60",
    );
    signal(&first, "-STOP");
    let second = t.second_holder();
    assert!(
        second.status.success(),
        "second holder: {}",
        text(&second.stderr)
    );
    assert_eq!(text(&second.stdout).trim(), "B", "{}", t.implementation);
    let rc = std::fs::read_to_string(t.path().join("orphan-rc")).expect("the command ran on");
    assert_ne!(
        rc.trim(),
        "0",
        "{}: the orphan's write was accepted",
        t.implementation
    );
    assert_eq!(t.owner(), "B");

    let resumed = Instant::now();
    signal(&first, "-CONT");
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        resumed.elapsed() < Duration::from_secs(30),
        "the command (sleep 60) was not stopped"
    );
    assert!(
        text(&out.stderr).contains("was lost"),
        "{}",
        text(&out.stderr)
    );
}

/// Exit codes and the environment a command gets.
fn command_sees_the_lock_and_its_exit_code_passes(t: &Topo) {
    let out = t
        .lock("echo \"$TOPO_LOCK_FENCING_TOKEN $TOPO_LOCK_KEY\"; exit 7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let line = text(&out.stdout);
    let (token, key) = line.trim().split_once(' ').expect("token and key");
    assert!(token.parse::<u64>().unwrap() > 0, "{line}");
    assert!(key.contains("keyspaces/ks"), "{line}");
    // Killed by a signal: 128 + its number, as a shell says.
    let out = t.lock("kill -9 $$").output().unwrap();
    assert_eq!(out.status.code(), Some(137));
    // A command that does not exist.
    let mut c = t.cmd();
    let out = c
        .args(["lock", "keyspaces/ks", "--", "no-such-command-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    // Writes under the lock go through, fenced.
    let out = t
        .lock(
            "$topo TopoCp --to_topo A.txt /keyspaces/ks/owner && $topo TopoCat /keyspaces/ks/owner",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "A");
}

fn all(t: &Topo) {
    command_sees_the_lock_and_its_exit_code_passes(t);
    killed_holder_takes_its_command_along(t);
    std::fs::remove_file(t.path().join("started")).unwrap();
    paused_holder_is_fenced_then_stopped(t);
}

#[test]
fn local() {
    all(&Topo::local());
}

#[test]
fn etcd() {
    if let Some(t) = Topo::etcd() {
        all(&t);
    }
}

#[test]
fn zk() {
    if let Some(t) = Topo::zk() {
        all(&t);
    }
}

/// `--no-fence` writes as if no lock were around; a lock of another topology does not fence.
#[test]
fn no_fence_and_foreign_locks_do_not_fence() {
    let t = Topo::local();
    // A fence whose lock does not exist (any more): writes fenced by it are refused.
    let gone = r#"{"implementation":"local","server_address":"toposphere.db","root":"/vitess/global","dir":"/keyspaces/ks","key":"/vitess/global/keyspaces/ks/locks/999","token":999}"#;
    let out = t
        .cmd()
        .env("TOPO_LOCK_FENCE", gone)
        .args(["TopoCp", "--to_topo", "A.txt", "/keyspaces/ks/owner"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/keyspaces/ks/owner"),
        "{}",
        text(&out.stderr)
    );
    let out = t
        .cmd()
        .env("TOPO_LOCK_FENCE", gone)
        .args([
            "--no-fence",
            "TopoCp",
            "--to_topo",
            "A.txt",
            "/keyspaces/ks/owner",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let foreign = gone.replace("toposphere.db", "other.db");
    let out = t
        .cmd()
        .env("TOPO_LOCK_FENCE", &foreign)
        .args(["TopoCp", "--to_topo", "B.txt", "/keyspaces/ks/owner"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not fenced"),
        "{}",
        text(&out.stderr)
    );
    let out = t
        .cmd()
        .env("TOPO_LOCK_FENCE", "garbage")
        .args(["GetKeyspaces"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("TOPO_LOCK_FENCE"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(t.owner(), "B");
}
