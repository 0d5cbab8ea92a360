//! ZooKeeper over TLS against real servers that serve TLS only: the conformance suite over
//! mutual TLS, CA-only TLS, and misconfigurations that must fail at open, promptly and
//! with their cause (never plain TCP, never a hang until the timeout).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use topo_core::conformance::ConnFactory;
use topo_core::{Conn, ErrorKind, Result};
use topo_testkit::certs::TestCerts;
use topo_testkit::zk::{ServerTls, ZkCluster};
use topo_zk::{TlsFiles, ZkConn, ZkOptions};

/// A TLS-only server with its certificates (kept alive with it).
struct TlsServer {
    certs: TestCerts,
    addr: String,
    _cluster: ZkCluster,
    _dir: tempfile::TempDir,
}

/// The shared TLS-only servers: with client certificates required (`mutual`) or not.
fn server(mutual: bool) -> Option<&'static TlsServer> {
    static CA_ONLY: OnceLock<Option<TlsServer>> = OnceLock::new();
    static MUTUAL: OnceLock<Option<TlsServer>> = OnceLock::new();
    let cell = if mutual { &MUTUAL } else { &CA_ONLY };
    cell.get_or_init(|| {
        if !topo_testkit::zk::require_tls() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let certs = TestCerts::generate(dir.path()).unwrap();
        let tls = ServerTls {
            ca: certs.ca.clone(),
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_auth: mutual.then(|| (certs.client_cert.clone(), certs.client_key.clone())),
        };
        let cluster = ZkCluster::standalone_tls(&tls)
            .unwrap_or_else(|e| panic!("starting ZooKeeper over TLS: {e}"));
        Some(TlsServer {
            addr: cluster.addrs(),
            certs,
            _cluster: cluster,
            _dir: dir,
        })
    })
    .as_ref()
}

fn ca_only(certs: &TestCerts) -> TlsFiles {
    TlsFiles {
        ca: Some(certs.ca.clone()),
        ..Default::default()
    }
}

fn mutual(certs: &TestCerts) -> TlsFiles {
    TlsFiles {
        ca: Some(certs.ca.clone()),
        cert: Some(certs.client_cert.clone()),
        key: Some(certs.client_key.clone()),
    }
}

fn options(tls: TlsFiles) -> ZkOptions {
    ZkOptions {
        tls,
        ..crate::options()
    }
}

/// Opening with `tls` fails; returns the error and how long that took.
async fn open_fails(addr: &str, tls: TlsFiles) -> (topo_core::TopoError, Duration) {
    let start = Instant::now();
    let err = ZkConn::connect(addr, "/tls", options(tls))
        .await
        .expect_err("the connection must be refused");
    (err, start.elapsed())
}

/// "Promptly": well under the remote-operation timeout that a retried failure would use up.
fn assert_prompt(took: Duration, what: &str) {
    let limit = crate::options().remote_operation_timeout / 2;
    assert!(took < limit, "{what} took {took:?}, not under {limit:?}");
}

pub(crate) struct Suite;

#[async_trait]
impl ConnFactory for Suite {
    async fn open(&self, root: &str) -> Result<Arc<dyn Conn>> {
        let s = server(true).expect("checked by mutual_suite");
        Ok(Arc::new(
            ZkConn::connect(&s.addr, root, options(mutual(&s.certs))).await?,
        ))
    }
}

pub(crate) async fn mutual_suite() -> Option<Suite> {
    server(true).map(|_| Suite)
}

/// Server-authenticated TLS with the CA alone: the connection works and says it uses TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_only_tls_works() {
    let Some(s) = server(false) else { return };
    let conn = ZkConn::connect(&s.addr, "/tls_ca_only", options(ca_only(&s.certs)))
        .await
        .unwrap();
    assert!(conn.tls_in_use());
    conn.create("/keyspaces/ks/Keyspace", b"over tls")
        .await
        .unwrap();
    assert_eq!(
        conn.get("/keyspaces/ks/Keyspace").await.unwrap().0,
        b"over tls"
    );
}

/// Plain TCP to a TLS-only port fails at once, saying so (not a hang until the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_to_a_tls_port_fails_fast() {
    let Some(s) = server(false) else { return };
    let (err, took) = open_fails(&s.addr, TlsFiles::default()).await;
    assert!(err.to_string().contains("speaks TLS only"), "{err}");
    assert!(err.to_string().contains("--topo-zk-tls-ca"), "{err}");
    assert_prompt(took, "plain TCP to a TLS port");
}

/// A client whose CA did not sign the server's certificate fails at once, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_fails_with_a_clear_message() {
    let Some(s) = server(false) else { return };
    let tls = TlsFiles {
        ca: Some(s.certs.other_ca.clone()),
        ..Default::default()
    };
    let (err, took) = open_fails(&s.addr, tls).await;
    let msg = err.to_string();
    assert!(msg.contains("TLS to ZooKeeper at"), "{msg}");
    assert!(msg.contains("certificate"), "{msg}");
    assert!(msg.contains("--topo-zk-tls-ca"), "{msg}");
    assert_prompt(took, "a server certificate of another CA");
}

/// With client certificates required, a client without one is refused, at once and
/// saying so; with its certificate it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_certificate() {
    let Some(s) = server(true) else { return };
    let (err, took) = open_fails(&s.addr, ca_only(&s.certs)).await;
    let msg = err.to_string();
    assert!(msg.contains("refused this client"), "{msg}");
    assert!(msg.contains("--topo-zk-tls-cert"), "{msg}");
    assert_prompt(took, "a client without certificate");
    let conn = ZkConn::connect(&s.addr, "/tls_mutual", options(mutual(&s.certs)))
        .await
        .unwrap();
    conn.create("/probe", b"x").await.unwrap();
    // Nor does plain TCP get in.
    let (err, _) = open_fails(&s.addr, TlsFiles::default()).await;
    assert!(err.to_string().contains("speaks TLS only"), "{err}");
}

/// Unusable TLS files are an error at open naming the flag and the file, before any
/// connection is tried (the address here has no server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_files_fail_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path()).unwrap();
    let addr = format!("127.0.0.1:{}", topo_testkit::free_port().unwrap());
    let cases = [
        (
            TlsFiles {
                ca: Some(dir.path().join("missing-ca.pem")),
                ..Default::default()
            },
            "missing-ca.pem",
        ),
        (
            TlsFiles {
                ca: Some(certs.client_key.clone()),
                ..Default::default()
            },
            "no PEM certificate",
        ),
        (
            TlsFiles {
                ca: Some(certs.ca.clone()),
                cert: Some(certs.client_cert.clone()),
                ..Default::default()
            },
            "go together",
        ),
        (
            TlsFiles {
                cert: Some(certs.client_cert.clone()),
                key: Some(certs.client_key.clone()),
                ..Default::default()
            },
            "need --topo-zk-tls-ca",
        ),
        (
            TlsFiles {
                ca: Some(certs.ca.clone()),
                cert: Some(certs.client_cert.clone()),
                key: Some(certs.stray_key.clone()),
            },
            "stray-key.pem",
        ),
    ];
    for (tls, expected) in cases {
        let (err, took) = open_fails(&addr, tls.clone()).await;
        assert!(err.is(ErrorKind::InvalidArgument), "{tls:?}: {err}");
        assert!(err.to_string().contains(expected), "{tls:?}: {err}");
        assert_prompt(took, "checking TLS files");
    }
}
