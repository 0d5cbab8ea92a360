//! TLS to etcd: server-authenticated with a CA alone, and mutual with a client
//! certificate, using certificates made here; misconfigurations fail at connect.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use topo_core::Conn;
use topo_etcd::{EtcdConn, EtcdOptions, TlsFiles};
use topo_testkit::etcd::EtcdCluster;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn make_certs(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, sans) in [
        (
            "server",
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
        ),
        ("client", vec!["client".to_string()]),
    ] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

fn opts(tls: TlsFiles) -> EtcdOptions {
    EtcdOptions {
        tls,
        dial_timeout: Duration::from_secs(3),
        remote_operation_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

async fn works(addr: &str, tls: TlsFiles) -> bool {
    match EtcdConn::connect(addr, "/tls", opts(tls)).await {
        Ok(c) => c.update("/probe", b"x", None).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_only_and_mutual_tls() {
    if !topo_testkit::require_binary("etcd", "etcd TLS tests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let ca_only = TlsFiles {
        ca: Some(d.join("ca.pem")),
        ..Default::default()
    };
    let mutual = TlsFiles {
        ca: Some(d.join("ca.pem")),
        cert: Some(d.join("client.pem")),
        key: Some(d.join("client-key.pem")),
    };

    let server =
        EtcdCluster::single_tls(&d.join("server.pem"), &d.join("server-key.pem"), None).unwrap();
    let addr = server.endpoints();
    assert!(
        works(&addr, ca_only.clone()).await,
        "server-authenticated TLS with the CA alone"
    );
    assert!(
        !works(&addr, TlsFiles::default()).await,
        "plaintext must not reach a TLS server"
    );
    drop(server);

    let server = EtcdCluster::single_tls(
        &d.join("server.pem"),
        &d.join("server-key.pem"),
        Some(&d.join("ca.pem")),
    )
    .unwrap();
    let addr = server.endpoints();
    assert!(works(&addr, mutual.clone()).await, "mutual TLS");
    assert!(
        !works(&addr, ca_only).await,
        "a client without a certificate is refused"
    );

    // A configured file that cannot be read is an error at connect, not plaintext.
    let missing = TlsFiles {
        ca: Some(d.join("nope.pem")),
        ..Default::default()
    };
    let err = EtcdConn::connect(&addr, "/tls", opts(missing))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let half = TlsFiles {
        cert: Some(d.join("client.pem")),
        ..Default::default()
    };
    assert!(EtcdConn::connect(&addr, "/tls", opts(half)).await.is_err());
}
