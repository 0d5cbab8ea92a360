//! Real ZooKeeper servers from the Debian package: standalone or a three-node ensemble on
//! free loopback ports, started with plain `java` and the package's jars.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{find_binary, free_port, ProcessSlot, ServerProcess};

/// The jars ZooKeeper 3.8 needs, as Debian installs them.
const CLASSPATH: &[&str] = &[
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
];

/// True when Java and the ZooKeeper jars are installed.
pub fn available() -> bool {
    find_binary("java").is_some() && CLASSPATH.iter().all(|j| Path::new(j).is_file())
}

/// Whether a test that needs ZooKeeper can run: like [`crate::require_binary`], for the
/// java runtime and the package's jars.
pub fn require() -> bool {
    if available() {
        return true;
    }
    if crate::strict() {
        panic!("ZooKeeper tests: java or the zookeeper package jars are missing and TOPO_TEST_STRICT=1 forbids skipping");
    }
    eprintln!("skipping: ZooKeeper tests need java and the Debian zookeeper package (see .ci/run)");
    false
}

/// One ZooKeeper server.
#[derive(Debug)]
pub struct ZkNode {
    client_port: u16,
    conf_dir: PathBuf,
    log: PathBuf,
    process: ProcessSlot,
}

impl std::ops::Deref for ZkNode {
    type Target = ProcessSlot;
    fn deref(&self) -> &ProcessSlot {
        &self.process
    }
}

impl std::ops::DerefMut for ZkNode {
    fn deref_mut(&mut self) -> &mut ProcessSlot {
        &mut self.process
    }
}

impl ZkNode {
    /// `127.0.0.1:<client port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Starts a killed server again with its data.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn restart(&mut self) -> io::Result<()> {
        self.process.set(start_java(&self.conf_dir, &self.log)?);
        Ok(())
    }

    /// The answer to a four-letter command (`srvr`, `ruok`, ...), or an empty string.
    pub fn four_letter(&self, cmd: &str) -> String {
        let Ok(mut s) = TcpStream::connect_timeout(
            &self.addr().parse().expect("loopback address"),
            Duration::from_millis(500),
        ) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = s.write_all(cmd.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}

fn start_java(conf_dir: &Path, log: &Path) -> io::Result<ServerProcess> {
    let java = find_binary("java").ok_or_else(|| io::Error::other("java not found"))?;
    let mut cp = vec![conf_dir.display().to_string()];
    cp.extend(CLASSPATH.iter().map(|s| s.to_string()));
    let args = vec![
        "-Xmx64m".to_string(),
        "-XX:+UseSerialGC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-Dzookeeper.forceSync=no".into(),
        "-cp".into(),
        cp.join(":"),
        "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
        conf_dir.join("zoo.cfg").display().to_string(),
    ];
    ServerProcess::spawn(&java, &args, log)
}

/// A running ZooKeeper deployment, removed when dropped.
#[derive(Debug)]
pub struct ZkCluster {
    nodes: Vec<ZkNode>,
    _dir: tempfile::TempDir,
}

impl ZkCluster {
    /// One standalone server.
    ///
    /// # Errors
    /// When Java or the jars are missing, or the server does not become ready.
    pub fn standalone() -> io::Result<Self> {
        Self::start(1, 2000, 0)
    }

    /// A three-node ensemble (tickTime 500 ms).
    ///
    /// # Errors
    /// As [`ZkCluster::standalone`].
    pub fn ensemble() -> io::Result<Self> {
        Self::start(3, 500, 0)
    }

    /// A three-node ensemble whose third node is an observer (`peerType=observer`): it
    /// serves reads and forwards writes but does not vote, as the servers after `|` in a
    /// Vitess `zk2` address. The two voters are both needed for a quorum.
    ///
    /// # Errors
    /// As [`ZkCluster::standalone`].
    pub fn ensemble_with_observer() -> io::Result<Self> {
        Self::start(3, 500, 1)
    }

    /// A standalone server with a tick of `tick_ms`: sessions may be as short as two ticks
    /// (for expiry tests).
    ///
    /// # Errors
    /// As [`ZkCluster::standalone`].
    pub fn standalone_with_tick(tick_ms: u32) -> io::Result<Self> {
        Self::start(1, tick_ms, 0)
    }

    /// `n` servers, the last `observers` of them observers.
    fn start(n: usize, tick_ms: u32, observers: usize) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<io::Result<_>>()?;
        let mut nodes = Vec::new();
        for (i, (cp, _, _)) in ports.iter().enumerate() {
            let conf_dir = dir.path().join(format!("n{i}"));
            let data_dir = conf_dir.join("data");
            std::fs::create_dir_all(&data_dir)?;
            let mut cfg = format!(
                "tickTime={tick_ms}\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={cp}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\nminSessionTimeout={}\n",
                data_dir.display(),
                tick_ms * 2
            );
            if n > 1 {
                let observer = |j: usize| j >= n - observers;
                if observer(i) {
                    cfg.push_str("peerType=observer\n");
                }
                for (j, (_, qp, ep)) in ports.iter().enumerate() {
                    let role = if observer(j) { ":observer" } else { "" };
                    cfg.push_str(&format!("server.{}=127.0.0.1:{qp}:{ep}{role}\n", j + 1));
                }
                std::fs::write(data_dir.join("myid"), format!("{}\n", i + 1))?;
            }
            std::fs::write(conf_dir.join("zoo.cfg"), cfg)?;
            std::fs::write(
                conf_dir.join("log4j.properties"),
                "log4j.rootLogger=INFO, CONSOLE\nlog4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\nlog4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\nlog4j.appender.CONSOLE.layout.ConversionPattern=%d %-5p %m%n\n",
            )?;
            let log = conf_dir.join("server.log");
            let process = start_java(&conf_dir, &log)?;
            nodes.push(ZkNode {
                client_port: *cp,
                conf_dir,
                log,
                process: ProcessSlot::new(process),
            });
        }
        let c = ZkCluster { nodes, _dir: dir };
        c.wait_ready(Duration::from_secs(30))?;
        Ok(c)
    }

    /// Waits until every node answers `srvr` with a `Mode:` line.
    pub fn wait_ready(&self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        for node in &self.nodes {
            while !node.four_letter("srvr").contains("Mode:") {
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    return Err(io::Error::other(format!(
                        "ZooKeeper at {} not ready; log tail:\n{}",
                        node.addr(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Every node's address, comma-separated.
    pub fn addrs(&self) -> String {
        self.nodes
            .iter()
            .map(ZkNode::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes.
    pub fn nodes(&self) -> &[ZkNode] {
        &self.nodes
    }

    /// One node, for killing, pausing and restarting.
    pub fn node_mut(&mut self, i: usize) -> &mut ZkNode {
        &mut self.nodes[i]
    }
}
