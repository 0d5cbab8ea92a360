//! The backends under test: each a real server started for the run (or a temporary SQLite
//! file), opened both through Toposphere and with the raw client.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use topo_core::Factory;
use topo_etcd::{EtcdFactory, EtcdOptions};
use topo_local::{LocalFactory, LocalOptions};
use topo_proto::topodata::CellInfo;
use topo_zk::{ZkFactory, ZkOptions};
use toposphere::{Server, ServerConfig};

/// The cells every backend has, on the same server as the global topology.
pub const CELLS: [&str; 3] = ["zone1", "zone2", "zone3"];

/// The raw client of a backend.
pub enum Raw {
    /// etcd's gRPC client.
    Etcd(Box<etcd_client::Client>),
    /// A ZooKeeper session.
    Zk(zookeeper_client::Client),
    /// A SQLite connection to the local store's file, set up as the backend sets up its own.
    Local(rusqlite::Connection),
}

/// What keeps a backend's server alive until the backend is dropped (a server process, a
/// temporary directory).
type Keep = Box<dyn std::any::Any + Send + Sync>;

/// One backend: its server, a Toposphere [`Server`] over it and the raw client.
pub struct Backend {
    /// `etcd`, `zk` or `local`.
    pub name: &'static str,
    /// Toposphere, global topology under `/global`, cells `zone1..3` under `/zoneN`.
    pub server: Server,
    /// The server address (etcd endpoints, ZooKeeper hosts, the SQLite file).
    pub addr: String,
    /// The raw client.
    pub raw: Raw,
    _keep: Keep,
}

/// The full key of `rel` under `root` as the raw client sees it.
pub fn key(root: &str, rel: &str) -> String {
    format!("{root}/{rel}")
}

impl Backend {
    /// Starts backend `name`, or returns why it cannot run here.
    pub async fn start(name: &str) -> Result<Backend, String> {
        let (name, factory, addr, raw, keep): (&'static str, Arc<dyn Factory>, _, _, Keep) =
            match name {
                "etcd" => {
                    if topo_testkit::find_binary("etcd").is_none() {
                        return Err("etcd is not installed".into());
                    }
                    let c = topo_testkit::etcd::EtcdCluster::single()
                        .map_err(|e| format!("cannot start etcd: {e}"))?;
                    let addr = c.endpoints();
                    let raw = etcd_client::Client::connect([addr.as_str()], None)
                        .await
                        .map_err(|e| format!("raw etcd client: {e}"))?;
                    let f = Arc::new(EtcdFactory::new(EtcdOptions::default()));
                    ("etcd", f, addr, Raw::Etcd(Box::new(raw)), Box::new(c))
                }
                "zk" => {
                    if !topo_testkit::zk::available() {
                        return Err("java or the zookeeper package is missing".into());
                    }
                    let c = topo_testkit::zk::ZkCluster::standalone()
                        .map_err(|e| format!("cannot start ZooKeeper: {e}"))?;
                    let addr = c.addrs();
                    // The session timeout Toposphere's ZooKeeper connections use (the
                    // client's default, 6 s, gives up on a request after 2.4 s).
                    let raw = zookeeper_client::Client::connector()
                        .with_session_timeout(ZkOptions::default().session_timeout)
                        .connect(&addr)
                        .await
                        .map_err(|e| format!("raw ZooKeeper client: {e}"))?;
                    let f = Arc::new(ZkFactory::new(ZkOptions::default()));
                    ("zk", f, addr, Raw::Zk(raw), Box::new(c))
                }
                "local" => {
                    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                    let db = dir.path().join("bench.db");
                    let addr = db.to_string_lossy().into_owned();
                    let f = Arc::new(LocalFactory::new(LocalOptions::default()));
                    // The store creates its schema on first open, before the raw client.
                    f.create("global", &addr, "/global")
                        .await
                        .map_err(|e| e.to_string())?;
                    let raw = rusqlite::Connection::open(&db).map_err(|e| e.to_string())?;
                    // The same settings the local backend's connections use.
                    raw.busy_timeout(std::time::Duration::from_secs(5))
                        .and_then(|()| raw.pragma_update(None, "journal_mode", "WAL"))
                        .and_then(|()| raw.pragma_update(None, "synchronous", "NORMAL"))
                        .map_err(|e| e.to_string())?;
                    ("local", f, addr, Raw::Local(raw), Box::new(dir))
                }
                other => return Err(format!("unknown backend {other:?}")),
            };
        let server =
            Server::open_with_factory(factory.clone(), &addr, "/global", ServerConfig::default())
                .await
                .map_err(|e| format!("open {name}: {e}"))?;
        for cell in CELLS {
            let info = CellInfo {
                server_address: addr.clone(),
                root: format!("/{cell}"),
            };
            server
                .create_cell_info(cell, &info)
                .await
                .map_err(|e| format!("create cell {cell}: {e}"))?;
        }
        Ok(Backend {
            name,
            server,
            addr,
            raw,
            _keep: keep,
        })
    }

    /// gRPC requests etcd has started so far, from its `/metrics` (None for other backends).
    pub async fn etcd_requests(&self) -> Option<f64> {
        if self.name != "etcd" {
            return None;
        }
        let host = self.addr.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
        let req = format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(
            body.lines()
                .filter(|l| l.starts_with("grpc_server_started_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

fn zk_opts() -> zookeeper_client::CreateOptions<'static> {
    zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all())
}

impl Raw {
    /// Creates the parents of `key` where the raw client needs them (ZooKeeper).
    pub async fn mkdir(&self, key: &str) {
        if let Raw::Zk(c) = self {
            match c.mkdir(key, &zk_opts()).await {
                Ok(()) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => panic!("raw mkdir {key}: {e}"),
            }
        }
    }

    /// Reads `key`.
    pub async fn get(&self, key: &str) {
        match self {
            Raw::Etcd(c) => {
                let r = c.kv_client().get(key, None).await.expect("raw get");
                assert_eq!(r.kvs().len(), 1, "raw get {key}");
            }
            Raw::Zk(c) => {
                c.get_data(key).await.expect("raw get");
            }
            Raw::Local(c) => {
                let _: (Vec<u8>, i64) = c
                    .prepare_cached("SELECT value, version FROM kv WHERE key = ?1")
                    .expect("prepare")
                    .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("raw get");
            }
        }
    }

    /// Writes `key` unconditionally (it exists on ZooKeeper; created or replaced elsewhere).
    pub async fn put(&self, key: &str, value: &[u8]) {
        match self {
            Raw::Etcd(c) => {
                c.kv_client().put(key, value, None).await.expect("raw put");
            }
            Raw::Zk(c) => {
                c.set_data(key, value, None).await.expect("raw set");
            }
            Raw::Local(c) => local_write(c, key, value, true),
        }
    }

    /// Creates `key`, which must not exist (its parent exists on ZooKeeper).
    pub async fn create(&self, key: &str, value: &[u8]) {
        match self {
            Raw::Etcd(c) => {
                use etcd_client::{Compare, CompareOp, Txn, TxnOp};
                let txn = Txn::new()
                    .when([Compare::version(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, None)]);
                let r = c.kv_client().txn(txn).await.expect("raw create");
                assert!(r.succeeded(), "raw create {key}: exists");
            }
            Raw::Zk(c) => {
                // A request the server left unanswered (a stalled JVM) is sent again, as
                // Toposphere's bulk writes do; if the first was applied, the node exists.
                for attempt in 1..=3 {
                    match c.create(key, value, &zk_opts()).await {
                        Ok(_) => return,
                        Err(zookeeper_client::Error::NodeExists) if attempt > 1 => return,
                        Err(e) if attempt == 3 => panic!("raw create {key}: {e}"),
                        Err(_) => {}
                    }
                }
            }
            Raw::Local(c) => local_write(c, key, value, false),
        }
    }

    /// Reads every key under `prefix` (ZooKeeper: the children of `prefix`, then each
    /// child's `leaf`, 32 in flight); returns their number and total size.
    pub async fn read_prefix(&self, prefix: &str, leaf: &str) -> (usize, usize) {
        use futures::StreamExt;
        match self {
            Raw::Etcd(c) => {
                let r = c
                    .kv_client()
                    .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
                    .expect("raw prefix read");
                let size = r.kvs().iter().map(|kv| kv.value().len()).sum();
                (r.kvs().len(), size)
            }
            Raw::Zk(c) => {
                let dir = prefix.trim_end_matches('/');
                let children = c.list_children(dir).await.expect("raw children");
                let sizes: Vec<usize> = futures::stream::iter(children)
                    .map(|child| async move {
                        c.get_data(&format!("{dir}/{child}/{leaf}"))
                            .await
                            .map(|(v, _)| v.len())
                            .unwrap_or(0)
                    })
                    .buffer_unordered(32)
                    .collect()
                    .await;
                (sizes.len(), sizes.iter().sum())
            }
            Raw::Local(c) => {
                let mut end = prefix.to_string();
                end.pop();
                end.push('0');
                let mut stmt = c
                    .prepare_cached("SELECT value FROM kv WHERE key >= ?1 AND key < ?2")
                    .expect("prepare");
                let rows = stmt
                    .query_map([prefix, end.as_str()], |r| r.get::<_, Vec<u8>>(0))
                    .expect("raw prefix read");
                let sizes: Vec<usize> = rows.map(|v| v.expect("row").len()).collect();
                (sizes.len(), sizes.iter().sum())
            }
        }
    }
}

/// The statements the local backend runs for an unconditional write (`upsert`) or a
/// create, in one IMMEDIATE transaction.
fn local_write(c: &rusqlite::Connection, key: &str, value: &[u8], upsert: bool) {
    let tx = rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)
        .expect("begin");
    let v: i64 = tx
        .query_row(
            "UPDATE counters SET value = value + 1 WHERE name = 'version' RETURNING value",
            [],
            |r| r.get(0),
        )
        .expect("counter");
    let sql = if upsert {
        "INSERT INTO kv (key, value, version, lease) VALUES (?1, ?2, ?3, NULL) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version"
    } else {
        "INSERT INTO kv (key, value, version, lease) VALUES (?1, ?2, ?3, NULL)"
    };
    tx.execute(sql, rusqlite::params![key, value, v])
        .expect("write");
    tx.execute(
        "INSERT INTO changes (key, version, value) VALUES (?1, ?2, ?3)",
        rusqlite::params![key, v, value],
    )
    .expect("log");
    tx.commit().expect("commit");
}
