//! One campaign run: a cluster, its fault proxies, worker processes as clients, the
//! nemesis, healing, the final reads, and the check of the merged history.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use topo_chaos::check::{check_with, Reads, Report};
use topo_chaos::history::{self, now_ns, Event, Recorder};
use topo_chaos::workload::{final_reads, setup, Workload};
use topo_core::{Conn, Result, TopoError};
use topo_etcd::{EtcdConn, EtcdOptions};
use topo_local::{LocalConn, LocalOptions};
use topo_testkit::etcd::EtcdCluster;
use topo_testkit::proxy::FaultProxy;
use topo_testkit::zk::ZkCluster;
use topo_zk::{ZkConn, ZkOptions};

/// Lease / lock TTL of the clients' locks, short so a paused or cut-off holder loses its
/// lock within a run.
pub const LEASE: Duration = Duration::from_secs(3);
/// ZooKeeper's session timeout (its locks live as long as the session).
const ZK_SESSION: Duration = Duration::from_secs(4);
/// Bound on each client call.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after the deadline workers may take to finish their last operation (a lock
/// wait, an increment and an unlock) before they are killed.
const WORKER_GRACE: Duration = Duration::from_secs(20);
/// Bound on the harness's setup writes and final reads.
const HARNESS_LIMIT: Duration = Duration::from_secs(30);

/// A backend of the campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// etcd, a three-member cluster.
    Etcd2,
    /// ZooKeeper, a three-server ensemble.
    Zk2,
    /// The embedded store: one file shared by several OS processes.
    Local,
}

impl Backend {
    /// The read consistency the backend promises: ZooKeeper answers reads from the
    /// server a session is connected to, which may lag the leader.
    pub fn reads(self) -> Reads {
        match self {
            Backend::Zk2 => Reads::Sequential,
            Backend::Etcd2 | Backend::Local => Reads::Linearizable,
        }
    }

    /// The implementation name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Etcd2 => "etcd2",
            Backend::Zk2 => "zk2",
            Backend::Local => "local",
        }
    }
}

/// Which fault families the nemesis draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Faults {
    /// No faults.
    None,
    /// Partitions, one-way drops, lost replies, resets and delays through the fault proxy.
    Proxy,
    /// kill -9 and restart of a server (the leader or a random one) or a client process.
    Kill,
    /// SIGSTOP/SIGCONT of a server, or of a client process past its lease.
    Pause,
    /// All of the above.
    All,
}

/// One fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    PartitionMember,
    DropRequests,
    DropReplies,
    LostReply,
    ResetAll,
    Delay,
    KillLeader,
    KillMember,
    KillClient,
    PauseMember,
    PauseClient,
    Compact,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::PartitionMember => "partition",
            Fault::DropRequests => "drop-requests",
            Fault::DropReplies => "drop-replies",
            Fault::LostReply => "lost-reply",
            Fault::ResetAll => "reset",
            Fault::Delay => "delay",
            Fault::KillLeader => "kill-leader",
            Fault::KillMember => "kill-member",
            Fault::KillClient => "kill-client",
            Fault::PauseMember => "pause-member",
            Fault::PauseClient => "pause-client",
            Fault::Compact => "compact",
        }
    }

    fn menu(faults: Faults, backend: Backend, workload: Workload) -> Vec<Fault> {
        let servers = backend != Backend::Local;
        // The proxy's drops discard bytes inside a connection that stays open, which TCP
        // never does: a watch event lost that way is never delivered again, though the
        // connection lives on (RELIABILITY.md, finding 2). Watches get the faults that
        // break connections instead.
        let proxy: &[Fault] = if workload == Workload::Watch {
            &[Fault::LostReply, Fault::ResetAll, Fault::Delay]
        } else {
            &[
                Fault::PartitionMember,
                Fault::DropRequests,
                Fault::DropReplies,
                Fault::LostReply,
                Fault::ResetAll,
                Fault::Delay,
            ]
        };
        let kill_servers = [Fault::KillLeader, Fault::KillMember];
        let mut menu = Vec::new();
        if servers && matches!(faults, Faults::Proxy | Faults::All) {
            menu.extend_from_slice(proxy);
        }
        if matches!(faults, Faults::Kill | Faults::All) {
            if servers {
                menu.extend(kill_servers);
            }
            menu.push(Fault::KillClient);
        }
        if matches!(faults, Faults::Pause | Faults::All) {
            if servers {
                menu.push(Fault::PauseMember);
            }
            menu.push(Fault::PauseClient);
        }
        // Compaction drops the history watches resume from; it is no failure, so it comes
        // with any fault family.
        if backend == Backend::Etcd2 && faults != Faults::None {
            menu.push(Fault::Compact);
        }
        menu
    }
}

/// The servers of one backend.
#[derive(Debug)]
pub enum Cluster {
    /// Three etcd members.
    Etcd(EtcdCluster),
    /// Three ZooKeeper servers.
    Zk(ZkCluster),
    /// The store's file, in a folder removed at the end.
    Local(tempfile::TempDir),
}

impl Cluster {
    /// Starts the servers of `backend`.
    ///
    /// # Errors
    /// When a server cannot be started (binary missing, no free port).
    pub fn start(backend: Backend) -> std::io::Result<Self> {
        Ok(match backend {
            Backend::Etcd2 => Cluster::Etcd(EtcdCluster::three()?),
            Backend::Zk2 => {
                if !topo_testkit::zk::available() {
                    return Err(std::io::Error::other(
                        "ZooKeeper is not installed (java and the zookeeper package jars)",
                    ));
                }
                Cluster::Zk(ZkCluster::ensemble()?)
            }
            Backend::Local => Cluster::Local(tempfile::tempdir()?),
        })
    }

    /// The server addresses (for local: the store file).
    fn addresses(&self) -> Vec<String> {
        match self {
            Cluster::Etcd(c) => c.members().iter().map(|m| m.client_addr()).collect(),
            Cluster::Zk(c) => c.nodes().iter().map(|n| n.addr()).collect(),
            Cluster::Local(dir) => vec![dir.path().join("chaos.db").display().to_string()],
        }
    }

    fn leader(&self) -> Option<usize> {
        match self {
            Cluster::Etcd(c) => c.leader(),
            Cluster::Zk(c) => c
                .nodes()
                .iter()
                .position(|n| n.four_letter("srvr").contains("Mode: leader")),
            Cluster::Local(_) => None,
        }
    }

    /// Compacts etcd's history up to its current revision (`etcdctl compact`).
    fn compact(&self) -> std::io::Result<()> {
        let Cluster::Etcd(c) = self else {
            return Ok(());
        };
        let ctl = topo_testkit::find_binary("etcdctl")
            .ok_or_else(|| std::io::Error::other("etcdctl not found"))?;
        let etcdctl = |args: &[&str]| {
            Command::new(&ctl)
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &c.endpoints(), "--command-timeout=2s"])
                .args(args)
                .output()
        };
        let status = etcdctl(&["endpoint", "status", "-w", "json"])?;
        let statuses: serde_json::Value = serde_json::from_slice(&status.stdout)
            .map_err(|e| std::io::Error::other(format!("etcdctl endpoint status: {e}")))?;
        let revision = statuses
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["Status"]["header"]["revision"].as_u64())
            .min()
            .ok_or_else(|| std::io::Error::other("no revision in etcdctl's answer"))?;
        let out = etcdctl(&["compact", &revision.to_string()])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "etcdctl compact {revision}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn slot(&mut self, i: usize) -> Option<&mut topo_testkit::ProcessSlot> {
        match self {
            Cluster::Etcd(c) => Some(&mut **c.member_mut(i)),
            Cluster::Zk(c) => Some(&mut **c.node_mut(i)),
            Cluster::Local(_) => None,
        }
    }

    fn restart(&mut self, i: usize) -> std::io::Result<()> {
        match self {
            Cluster::Etcd(c) => c.member_mut(i).restart(),
            Cluster::Zk(c) => c.node_mut(i).restart(),
            Cluster::Local(_) => Ok(()),
        }
    }
}

/// Connects a client of `backend` to `address` under `root`, with the campaign's short
/// leases and call bounds.
///
/// # Errors
/// When the connection cannot be made.
pub async fn connect(backend: Backend, address: &str, root: &str) -> Result<Arc<dyn Conn>> {
    Ok(match backend {
        Backend::Etcd2 => {
            let options = EtcdOptions {
                lease_ttl: LEASE,
                remote_operation_timeout: OP_TIMEOUT,
                dial_timeout: Duration::from_secs(2),
                ..EtcdOptions::default()
            };
            Arc::new(EtcdConn::connect(address, root, options).await?)
        }
        Backend::Zk2 => {
            let options = ZkOptions {
                session_timeout: ZK_SESSION,
                remote_operation_timeout: OP_TIMEOUT,
                ..ZkOptions::default()
            };
            Arc::new(ZkConn::connect(address, root, options).await?)
        }
        Backend::Local => {
            let options = LocalOptions {
                lock_ttl: LEASE,
                ..LocalOptions::default()
            };
            Arc::new(LocalConn::open(Path::new(address), root, options)?)
        }
    })
}

/// [`connect`], retried with a pause until `limit` passes (servers just started or
/// restarted, a proxy cut off).
///
/// # Errors
/// The last error once `limit` has passed.
pub async fn connect_retrying(
    backend: Backend,
    address: &str,
    root: &str,
    limit: Duration,
) -> Result<Arc<dyn Conn>> {
    let start = Instant::now();
    loop {
        let attempt = tokio::time::timeout(OP_TIMEOUT * 2, connect(backend, address, root)).await;
        let err = match attempt {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) => TopoError::Timeout(format!("connect to {address}")),
        };
        if start.elapsed() > limit {
            return Err(err);
        }
        tracing::debug!("connect to {address}: {err}; retrying");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What one run is asked to do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The backend.
    pub backend: Backend,
    /// The workload.
    pub workload: Workload,
    /// The fault families.
    pub faults: Faults,
    /// How long clients invoke operations.
    pub duration: Duration,
    /// How many client processes run at once.
    pub clients: u64,
    /// The nemesis's seed.
    pub seed: u64,
    /// Where the merged history goes.
    pub history: PathBuf,
    /// Wrap clients in a connection that drops one update in N (proves the checks fail).
    pub break_writes: Option<u64>,
    /// How long watchers have after healing to see the final value.
    pub watch_settle: Duration,
}

/// What one run found.
#[derive(Debug)]
pub struct Outcome {
    /// The checker's report.
    pub report: Report,
    /// The merged history.
    pub events: Vec<Event>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A client worker process and its history file.
#[derive(Debug)]
struct Worker {
    child: Child,
    serial: u64,
}

impl Worker {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, signal: Signal) {
        if let Err(e) = kill(self.pid(), signal) {
            tracing::warn!("cannot send {signal} to worker {}: {e}", self.serial);
        }
    }
}

/// Everything the nemesis acts on.
struct Stage<'a> {
    plan: &'a Plan,
    cluster: &'a mut Cluster,
    proxies: &'a [FaultProxy],
    workers: Vec<Worker>,
    next_serial: u64,
    client_address: String,
    root: String,
    dir: PathBuf,
    deadline: Instant,
}

impl Stage<'_> {
    fn spawn_worker(&mut self) -> std::io::Result<()> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let left = self.deadline.saturating_duration_since(Instant::now());
        let exe = std::env::current_exe()?;
        let log = std::fs::File::create(self.dir.join(format!("worker-{serial}.log")))?;
        let mut cmd = Command::new(exe);
        cmd.arg("worker")
            .arg("--backend")
            .arg(self.plan.backend.name())
            .arg("--address")
            .arg(&self.client_address)
            .arg("--root")
            .arg(&self.root)
            .arg("--workload")
            .arg(workload_name(self.plan.workload))
            .arg("--serial")
            .arg(serial.to_string())
            .arg("--seed")
            .arg(self.plan.seed.to_string())
            .arg("--settle-ms")
            .arg(self.plan.watch_settle.as_millis().to_string())
            .arg("--run-ms")
            .arg(left.as_millis().to_string())
            .arg("--out")
            .arg(self.dir.join(format!("worker-{serial}.jsonl")));
        if let Some(n) = self.plan.break_writes {
            cmd.arg("--break-writes").arg(n.to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.workers.push(Worker { child, serial });
        Ok(())
    }

    /// Waits for every worker to exit, killing those still running after `limit`.
    fn reap(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        for w in &mut self.workers {
            // A worker paused by a fault that was cut short must be able to finish.
            let _ = kill(Pid::from_raw(w.child.id() as i32), Signal::SIGCONT);
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        tracing::warn!("worker {} did not stop in time; killing it", w.serial);
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                }
            }
        }
    }

    /// Injects `fault`, holds it (never past the deadline), heals it.
    async fn inject(&mut self, fault: Fault, rng: &mut StdRng) -> std::io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let hold = Duration::from_millis(rng.random_range(500..2000)).min(left);
        let member = if self.proxies.is_empty() {
            0
        } else {
            rng.random_range(0..self.proxies.len())
        };
        match fault {
            Fault::PartitionMember | Fault::DropRequests | Fault::DropReplies | Fault::Delay => {
                let p = &self.proxies[member];
                match fault {
                    Fault::PartitionMember => p.blackhole(),
                    Fault::DropRequests => p.blackhole_client_to_server(true),
                    Fault::DropReplies => p.blackhole_server_to_client(true),
                    _ => p.set_delay(Duration::from_millis(rng.random_range(50..400))),
                }
                tokio::time::sleep(hold).await;
                p.heal();
            }
            Fault::LostReply => {
                for p in self.proxies {
                    p.reset_after_next_chunk();
                }
                tokio::time::sleep(hold).await;
            }
            Fault::ResetAll => {
                for p in self.proxies {
                    p.reset_all();
                }
            }
            Fault::KillLeader | Fault::KillMember => {
                let i = match fault {
                    Fault::KillLeader => self.cluster.leader().unwrap_or(member),
                    _ => member,
                };
                if let Some(slot) = self.cluster.slot(i) {
                    slot.kill();
                }
                tokio::time::sleep(hold).await;
                self.cluster.restart(i)?;
            }
            Fault::Compact => self.cluster.compact()?,
            Fault::PauseMember => {
                if let Some(slot) = self.cluster.slot(member) {
                    slot.pause()?;
                    tokio::time::sleep(hold).await;
                    slot.resume()?;
                }
            }
            Fault::KillClient => {
                if !self.workers.is_empty() {
                    let i = rng.random_range(0..self.workers.len());
                    let mut w = self.workers.swap_remove(i);
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    self.spawn_worker()?;
                }
            }
            Fault::PauseClient => {
                if !self.workers.is_empty() {
                    // The classic paused lock holder: stopped past its lease or session.
                    let i = rng.random_range(0..self.workers.len());
                    let pause = (ZK_SESSION + Duration::from_millis(1500)).min(left);
                    self.workers[i].signal(Signal::SIGSTOP);
                    tokio::time::sleep(pause).await;
                    self.workers[i].signal(Signal::SIGCONT);
                }
            }
        }
        Ok(())
    }

    /// Heals everything: proxies, paused and killed servers.
    fn heal_all(&mut self, servers: usize) {
        for p in self.proxies {
            p.heal();
        }
        for i in 0..servers {
            if let Some(slot) = self.cluster.slot(i) {
                if slot.resume().is_err() {
                    // Not running: it was killed; start it again.
                    if let Err(e) = self.cluster.restart(i) {
                        tracing::warn!("cannot restart server {i}: {e}");
                    }
                }
            }
        }
    }
}

/// The workload's name on the command line.
pub fn workload_name(w: Workload) -> &'static str {
    match w {
        Workload::Register => "register",
        Workload::Lock => "lock",
        Workload::Watch => "watch",
        Workload::Election => "election",
    }
}

/// Events of a worker's file; a last line cut short by SIGKILL is skipped.
fn read_worker_history(path: &Path) -> Vec<Event> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Runs one backend × workload on `cluster`.
///
/// # Errors
/// When the harness itself cannot do its part (spawn workers, set up, read back).
pub async fn run(plan: &Plan, cluster: &mut Cluster) -> std::result::Result<Outcome, String> {
    let started = Instant::now();
    let addresses = cluster.addresses();
    let mut proxies = Vec::new();
    if plan.backend != Backend::Local {
        for a in &addresses {
            proxies.push(
                FaultProxy::start(a)
                    .await
                    .map_err(|e| format!("fault proxy for {a}: {e}"))?,
            );
        }
    }
    let client_address = if proxies.is_empty() {
        addresses.join(",")
    } else {
        proxies
            .iter()
            .map(|p| p.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let root = format!("/toposphere-chaos/{}", workload_name(plan.workload));
    let direct = connect_retrying(plan.backend, &addresses.join(","), &root, HARNESS_LIMIT)
        .await
        .map_err(|e| format!("harness connection: {e}"))?;
    let rec = Recorder::new();
    setup(direct.as_ref(), plan.workload, &rec, HARNESS_LIMIT)
        .await
        .map_err(|e| format!("setup: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let deadline = Instant::now() + plan.duration;
    let mut stage = Stage {
        plan,
        cluster,
        proxies: &proxies,
        workers: Vec::new(),
        next_serial: 0,
        client_address,
        root: root.clone(),
        dir: dir.path().to_path_buf(),
        deadline,
    };
    for _ in 0..plan.clients {
        stage
            .spawn_worker()
            .map_err(|e| format!("worker process: {e}"))?;
    }
    let menu = Fault::menu(plan.faults, plan.backend, plan.workload);
    // Each workload gets its own schedule from the one seed.
    let mut rng =
        StdRng::seed_from_u64(plan.seed ^ (plan.workload as u64 + 1).wrapping_mul(0x9e37_79b9));
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    // Let the clients start before the first fault.
    tokio::time::sleep(Duration::from_millis(500).min(plan.duration)).await;
    while !menu.is_empty() && Instant::now() < deadline {
        let fault = menu[rng.random_range(0..menu.len())];
        tracing::info!("nemesis: {}", fault.name());
        if let Err(e) = stage.inject(fault, &mut rng).await {
            tracing::warn!("nemesis {}: {e}", fault.name());
        } else {
            *faults.entry(fault.name()).or_default() += 1;
        }
        let pause = Duration::from_millis(rng.random_range(200..800));
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    if Instant::now() < deadline {
        tokio::time::sleep(deadline - Instant::now()).await;
    }
    stage.heal_all(addresses.len());
    tokio::task::block_in_place(|| stage.reap(WORKER_GRACE + plan.watch_settle));
    // Quiescence: every client has stopped; read back the final values.
    final_reads(direct.as_ref(), plan.workload, &rec, HARNESS_LIMIT)
        .await
        .map_err(|e| format!("final reads after healing: {e}"))?;
    let _ = tokio::time::timeout(OP_TIMEOUT, direct.close()).await;
    let mut events = rec.events();
    for serial in 0..stage.next_serial {
        events.extend(read_worker_history(
            &dir.path().join(format!("worker-{serial}.jsonl")),
        ));
    }
    let events = history::merge(events, now_ns());
    history::save(&plan.history, &events)
        .map_err(|e| format!("history {}: {e}", plan.history.display()))?;
    let report = check_with(&events, plan.backend.reads());
    Ok(Outcome {
        report,
        events,
        faults,
        elapsed: started.elapsed(),
    })
}
