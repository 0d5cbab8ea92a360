//! Real etcd servers: one member or a three-member cluster on free loopback ports.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{find_binary, free_port, ProcessSlot, ServerProcess};

/// One etcd member's ports and process.
#[derive(Debug)]
pub struct EtcdMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    process: ProcessSlot,
}

impl std::ops::Deref for EtcdMember {
    type Target = ProcessSlot;
    fn deref(&self) -> &ProcessSlot {
        &self.process
    }
}

impl std::ops::DerefMut for EtcdMember {
    fn deref_mut(&mut self) -> &mut ProcessSlot {
        &mut self.process
    }
}

impl EtcdMember {
    /// `127.0.0.1:<client port>`.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Starts a killed member again with its data.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn restart(&mut self) -> io::Result<()> {
        self.process.kill();
        let etcd = find_binary("etcd").ok_or_else(|| io::Error::other("etcd not found"))?;
        let mut args = self.args.clone();
        // A restarting member joins the existing cluster.
        for a in args.iter_mut() {
            if a == "--initial-cluster-state=new" {
                *a = "--initial-cluster-state=existing".into();
            }
        }
        self.process
            .set(ServerProcess::spawn(&etcd, &args, &self.log)?);
        Ok(())
    }

    /// The member's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// A running etcd cluster (one member or three), removed when dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts one member.
    ///
    /// # Errors
    /// When etcd is missing or does not become ready.
    pub fn single() -> io::Result<Self> {
        Self::start(1, &[])
    }

    /// Starts three members with fast elections (heartbeat 50 ms, election timeout 500 ms).
    ///
    /// # Errors
    /// When etcd is missing or does not become ready.
    pub fn three() -> io::Result<Self> {
        Self::start(3, &["--heartbeat-interval=50", "--election-timeout=500"])
    }

    /// Starts one member with TLS on the client port: `cert`/`key` for the server and, when
    /// `client_ca` is given, client certificates required and checked against it.
    ///
    /// # Errors
    /// When etcd is missing or does not start.
    pub fn single_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> io::Result<Self> {
        let mut extra = vec![
            format!("--cert-file={}", cert.display()),
            format!("--key-file={}", key.display()),
        ];
        if let Some(ca) = client_ca {
            extra.push("--client-cert-auth".into());
            extra.push(format!("--trusted-ca-file={}", ca.display()));
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Self::start_with(1, &extra, "https")
    }

    fn start(n: usize, extra: &[&str]) -> io::Result<Self> {
        Self::start_with(n, extra, "http")
    }

    fn start_with(n: usize, extra: &[&str], scheme: &str) -> io::Result<Self> {
        let etcd = find_binary("etcd").ok_or_else(|| io::Error::other("etcd not found on PATH"))?;
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<io::Result<_>>()?;
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut members = Vec::new();
        for (i, (cp, pp)) in ports.iter().enumerate() {
            let data_dir = dir.path().join(format!("m{i}"));
            std::fs::create_dir_all(&data_dir)?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))?;
            }
            let mut args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={scheme}://127.0.0.1:{cp}"),
                format!("--advertise-client-urls={scheme}://127.0.0.1:{cp}"),
                format!("--listen-peer-urls=http://127.0.0.1:{pp}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{pp}"),
                format!("--initial-cluster={}", cluster.join(",")),
                "--initial-cluster-state=new".into(),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let log = dir.path().join(format!("m{i}.log"));
            let process = ServerProcess::spawn(&etcd, &args, &log)?;
            members.push(EtcdMember {
                name: format!("m{i}"),
                client_port: *cp,
                peer_port: *pp,
                data_dir,
                log,
                args,
                process: ProcessSlot::new(process),
            });
        }
        let c = EtcdCluster { members, _dir: dir };
        c.wait_ready(Duration::from_secs(20))?;
        Ok(c)
    }

    /// Waits until every member accepts client connections and the cluster has a leader
    /// (checked with `etcdctl endpoint health` when available, else by the port).
    fn wait_ready(&self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        let etcdctl = find_binary("etcdctl");
        for m in &self.members {
            loop {
                let ready = match &etcdctl {
                    Some(ctl) if !m.args.iter().any(|a| a.starts_with("--cert-file")) => {
                        std::process::Command::new(ctl)
                            .env("ETCDCTL_API", "3")
                            .args([
                                "--endpoints",
                                &m.client_addr(),
                                "--command-timeout=1s",
                                "endpoint",
                                "health",
                            ])
                            .output()
                            .map(|o| o.status.success())
                            .unwrap_or(false)
                    }
                    _ => std::net::TcpStream::connect(m.client_addr()).is_ok(),
                };
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Err(io::Error::other(format!(
                        "etcd member {} not ready; log tail:\n{tail}",
                        m.name
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// The comma-separated client endpoints.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(EtcdMember::client_addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The members.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// One member, for killing, pausing and restarting.
    pub fn member_mut(&mut self, i: usize) -> &mut EtcdMember {
        &mut self.members[i]
    }

    /// The index of the current leader, asked with `etcdctl endpoint status`.
    pub fn leader(&self) -> Option<usize> {
        let ctl = find_binary("etcdctl")?;
        let out = std::process::Command::new(ctl)
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoints(),
                "--command-timeout=2s",
                "endpoint",
                "status",
                "-w",
                "json",
            ])
            .output()
            .ok()?;
        // One status per reachable endpoint; the leader is the member whose own id is the
        // leader id it reports.
        let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let leader = statuses.as_array()?.iter().find(|s| {
            let status = &s["Status"];
            let member = status["header"]["member_id"].as_u64();
            member.is_some() && member == status["leader"].as_u64()
        })?;
        let endpoint = leader["Endpoint"].as_str()?;
        self.members
            .iter()
            .position(|m| endpoint.ends_with(&m.client_addr()))
    }

    /// The peer port of member `i` (for tests that need it).
    pub fn peer_port(&self, i: usize) -> u16 {
        self.members[i].peer_port
    }
}
