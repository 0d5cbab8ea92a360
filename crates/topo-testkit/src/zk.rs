//! Real ZooKeeper servers from the Debian package: standalone or a three-node ensemble on
//! free loopback ports, started with plain `java` and the package's jars; or a standalone
//! server that serves TLS only (Netty connection factory, `secureClientPort`, PKCS12 key
//! and trust stores made from PEM files with `openssl` and the JDK's `keytool`).

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

/// The jars ZooKeeper's Netty connection factory (needed for TLS) needs besides.
const NETTY_CLASSPATH: &[&str] = &[
    "/usr/share/java/netty-common.jar",
    "/usr/share/java/netty-buffer.jar",
    "/usr/share/java/netty-codec.jar",
    "/usr/share/java/netty-handler.jar",
    "/usr/share/java/netty-resolver.jar",
    "/usr/share/java/netty-transport.jar",
    "/usr/share/java/netty-transport-native-unix-common.jar",
    "/usr/share/java/netty-transport-native-epoll.jar",
];

/// The password of the key and trust stores made for a TLS server (test material only).
const STORE_PASSWORD: &str = "topo-test";

/// The PEM files of a TLS-only server, and whether it requires client certificates.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The CA that signed the server's certificate and that client certificates must chain to.
    pub ca: PathBuf,
    /// The server's certificate (for 127.0.0.1).
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// `Some((cert, key))`: mutual TLS (`ssl.clientAuth=need`), this client identity being
    /// the one the kit uses for its own readiness checks; `None`: `ssl.clientAuth=none`.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

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

/// Whether a test of ZooKeeper over TLS can run: as [`require`], plus the Netty jars,
/// `openssl` and `keytool`.
pub fn require_tls() -> bool {
    if !require() {
        return false;
    }
    if NETTY_CLASSPATH.iter().all(|j| Path::new(j).is_file())
        && find_binary("openssl").is_some()
        && find_binary("keytool").is_some()
    {
        return true;
    }
    if crate::strict() {
        panic!("ZooKeeper TLS tests: the Netty jars, openssl or keytool are missing and TOPO_TEST_STRICT=1 forbids skipping");
    }
    eprintln!("skipping: ZooKeeper TLS tests need the Netty jars, openssl and keytool");
    false
}

/// One ZooKeeper server.
#[derive(Debug)]
pub struct ZkNode {
    client_port: u16,
    conf_dir: PathBuf,
    log: PathBuf,
    /// The JVM's extra `-D` settings (TLS), kept for restarts.
    props: Vec<String>,
    /// For a TLS-only server: how the kit itself talks to it.
    tls: Option<ServerTls>,
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
        self.process
            .set(start_java(&self.conf_dir, &self.log, &self.props)?);
        Ok(())
    }

    /// The answer to a four-letter command (`srvr`, `ruok`, ...), or an empty string; over
    /// TLS (with `openssl s_client`) on a TLS-only server.
    pub fn four_letter(&self, cmd: &str) -> String {
        if let Some(tls) = &self.tls {
            return four_letter_tls(&self.addr(), tls, cmd);
        }
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

/// `cmd` sent over TLS to `addr`, the answer or an empty string.
fn four_letter_tls(addr: &str, tls: &ServerTls, cmd: &str) -> String {
    let Some(openssl) = find_binary("openssl") else {
        return String::new();
    };
    let mut c = std::process::Command::new(openssl);
    c.args([
        "s_client",
        "-quiet",
        "-verify_return_error",
        "-connect",
        addr,
    ])
    .arg("-CAfile")
    .arg(&tls.ca);
    if let Some((cert, key)) = &tls.client_auth {
        c.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let Ok(mut child) = c.spawn() else {
        return String::new();
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(cmd.as_bytes());
    }
    // The server closes after answering; a server not yet up makes openssl fail at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Runs `program` with `args`, failing with its output when it fails.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> io::Result<()> {
    let path =
        find_binary(program).ok_or_else(|| io::Error::other(format!("{program} not found")))?;
    let out = std::process::Command::new(path).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Makes the PKCS12 key store (server certificate and key) and trust store (the CA) of a
/// TLS server in `dir`; returns the JVM settings that make ZooKeeper serve TLS with them.
fn tls_props(dir: &Path, tls: &ServerTls) -> io::Result<Vec<String>> {
    let keystore = dir.join("keystore.p12");
    let truststore = dir.join("truststore.p12");
    let pass = format!("pass:{STORE_PASSWORD}");
    run(
        "openssl",
        &[
            "pkcs12".as_ref(),
            "-export".as_ref(),
            "-in".as_ref(),
            tls.cert.as_os_str(),
            "-inkey".as_ref(),
            tls.key.as_os_str(),
            "-out".as_ref(),
            keystore.as_os_str(),
            "-passout".as_ref(),
            pass.as_ref(),
        ],
    )?;
    run(
        "keytool",
        &[
            "-importcert".as_ref(),
            "-noprompt".as_ref(),
            "-storetype".as_ref(),
            "PKCS12".as_ref(),
            "-alias".as_ref(),
            "ca".as_ref(),
            "-file".as_ref(),
            tls.ca.as_os_str(),
            "-keystore".as_ref(),
            truststore.as_os_str(),
            "-storepass".as_ref(),
            STORE_PASSWORD.as_ref(),
        ],
    )?;
    let client_auth = if tls.client_auth.is_some() {
        "need"
    } else {
        "none"
    };
    Ok(vec![
        "-Dzookeeper.serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory".into(),
        format!("-Dzookeeper.ssl.keyStore.location={}", keystore.display()),
        format!("-Dzookeeper.ssl.keyStore.password={STORE_PASSWORD}"),
        format!(
            "-Dzookeeper.ssl.trustStore.location={}",
            truststore.display()
        ),
        format!("-Dzookeeper.ssl.trustStore.password={STORE_PASSWORD}"),
        format!("-Dzookeeper.ssl.clientAuth={client_auth}"),
    ])
}

fn start_java(conf_dir: &Path, log: &Path, props: &[String]) -> io::Result<ServerProcess> {
    let java = find_binary("java").ok_or_else(|| io::Error::other("java not found"))?;
    let mut cp = vec![conf_dir.display().to_string()];
    cp.extend(CLASSPATH.iter().map(|s| s.to_string()));
    if !props.is_empty() {
        cp.extend(NETTY_CLASSPATH.iter().map(|s| s.to_string()));
    }
    let mut args = vec![
        "-Xmx64m".to_string(),
        "-XX:+UseSerialGC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-Dzookeeper.forceSync=no".into(),
    ];
    args.extend(props.iter().cloned());
    args.extend([
        "-cp".into(),
        cp.join(":"),
        "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
        conf_dir.join("zoo.cfg").display().to_string(),
    ]);
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
        Self::start(1, 2000, 0, None)
    }

    /// One standalone server that serves TLS only, with `tls`'s certificate (its address
    /// is a `secureClientPort`; there is no plain port).
    ///
    /// # Errors
    /// As [`ZkCluster::standalone`], or when the key and trust stores cannot be made.
    pub fn standalone_tls(tls: &ServerTls) -> io::Result<Self> {
        Self::start(1, 2000, 0, Some(tls))
    }

    /// A three-node ensemble (tickTime 500 ms).
    ///
    /// # Errors
    /// As [`ZkCluster::standalone`].
    pub fn ensemble() -> io::Result<Self> {
        Self::start(3, 500, 0, None)
    }

    /// A three-node ensemble whose third node is an observer (`peerType=observer`): it
    /// serves reads and forwards writes but does not vote, as the servers after `|` in a
    /// Vitess `zk2` address. The two voters are both needed for a quorum. Its tickTime is
    /// 2 s (a follower may lag 10 s): with a shorter one, a loaded machine's pause drops the
    /// follower and with it the quorum, and clients see lost connections mid-test.
    ///
    /// # Errors
    /// As [`ZkCluster::standalone`].
    pub fn ensemble_with_observer() -> io::Result<Self> {
        Self::start(3, 2000, 1, None)
    }

    /// A standalone server with a tick of `tick_ms`: sessions may be as short as two ticks
    /// (for expiry tests).
    ///
    /// # Errors
    /// As [`ZkCluster::standalone`].
    pub fn standalone_with_tick(tick_ms: u32) -> io::Result<Self> {
        Self::start(1, tick_ms, 0, None)
    }

    /// `n` servers, the last `observers` of them observers; TLS-only with `tls`.
    fn start(
        n: usize,
        tick_ms: u32,
        observers: usize,
        tls: Option<&ServerTls>,
    ) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<io::Result<_>>()?;
        let mut nodes = Vec::new();
        for (i, (cp, _, _)) in ports.iter().enumerate() {
            let conf_dir = dir.path().join(format!("n{i}"));
            let data_dir = conf_dir.join("data");
            std::fs::create_dir_all(&data_dir)?;
            let port = if tls.is_some() {
                "secureClientPort"
            } else {
                "clientPort"
            };
            let mut cfg = format!(
                "tickTime={tick_ms}\ninitLimit=10\nsyncLimit=5\ndataDir={}\n{port}={cp}\n{port}Address=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\nminSessionTimeout={}\n",
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
            let props = match tls {
                Some(tls) => tls_props(&conf_dir, tls)?,
                None => Vec::new(),
            };
            let process = start_java(&conf_dir, &log, &props)?;
            nodes.push(ZkNode {
                client_port: *cp,
                conf_dir,
                log,
                props,
                tls: tls.cloned(),
                process: ProcessSlot::new(process),
            });
        }
        let c = ZkCluster { nodes, _dir: dir };
        c.wait_ready(Duration::from_secs(60))?;
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
