//! Access off loopback: the listening rule, bearer tokens, and TLS (all on 127.0.0.1; the
//! token is required there by option, as `--token-file` does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use topo_core::memory::MemoryFactory;
use topo_proto::topodata::Keyspace;
use topo_serve::access::{check_listen, tls_config, Exposure, Token};
use topo_serve::ServeOptions;
use toposphere::{Server, ServerConfig};

#[test]
fn off_loopback_needs_tls_and_token_or_insecure() {
    let lo: SocketAddr = "127.0.0.1:15000".parse().unwrap();
    let lo6: SocketAddr = "[::1]:15000".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:15000".parse().unwrap();
    let public: SocketAddr = "192.0.2.10:15000".parse().unwrap();
    let how = |tls, token, insecure, allow_writes| Exposure {
        tls,
        token,
        insecure,
        allow_writes,
    };
    // Loopback: anything goes, even writes without a token.
    assert_eq!(check_listen(lo, how(false, false, false, true)), Ok(None));
    assert_eq!(check_listen(lo6, how(false, false, false, false)), Ok(None));
    for addr in [any, public] {
        let e = check_listen(addr, how(false, false, false, false)).unwrap_err();
        assert!(e.contains("--tls-cert, --tls-key and --token-file"), "{e}");
        let e = check_listen(addr, how(true, false, false, false)).unwrap_err();
        assert!(e.contains("--token-file"), "{e}");
        assert!(check_listen(addr, how(false, true, false, false)).is_err());
        assert_eq!(check_listen(addr, how(true, true, false, true)), Ok(None));
        let warning = check_listen(addr, how(false, false, true, false))
            .unwrap()
            .expect("a warning");
        assert!(
            warning.contains("--insecure") && warning.contains("without TLS"),
            "{warning}"
        );
        // Writes off loopback need the token, even with --insecure and TLS.
        let e = check_listen(addr, how(true, false, true, true)).unwrap_err();
        assert!(
            e.contains("--allow-writes") && e.contains("--token-file"),
            "{e}"
        );
        assert!(check_listen(addr, how(false, true, true, true))
            .unwrap()
            .is_some());
    }
}

#[test]
fn tokens_compare_whole_and_never_print() {
    let t = Token::new("s3cret-token").unwrap();
    assert!(t.matches(b"s3cret-token"));
    assert!(!t.matches(b"s3cret-tokem"));
    assert!(!t.matches(b"s3cret"));
    assert!(!t.matches(b"s3cret-token2"));
    assert!(!t.matches(b""));
    assert!(!format!("{t:?}").contains("s3cret"));
    assert!(Token::new("").is_none());
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let e = Token::from_file(&empty).unwrap_err();
    assert!(e.contains("is empty") && e.contains("empty"), "{e}");
    let missing = Token::from_file(&dir.path().join("nope")).unwrap_err();
    assert!(
        missing.contains("--token-file") && missing.contains("nope"),
        "{missing}"
    );
}

async fn demo_server() -> Server {
    let ts = Server::open_with_factory(
        Arc::new(MemoryFactory::default()),
        "mem",
        "/vitess/global",
        ServerConfig::default(),
    )
    .await
    .unwrap();
    ts.create_keyspace("commerce", &Keyspace::default())
        .await
        .unwrap();
    ts
}

/// Serves on 127.0.0.1 with `options`; returns the address.
async fn start(ts: Server, options: ServeOptions) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(topo_serve::serve(
        ts,
        listener,
        options,
        std::future::pending(),
    ));
    addr
}

/// Sends one HTTP/1.1 GET over `stream` and returns the whole response (or what came before
/// the connection failed).
async fn get(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
    auth: Option<&str>,
) -> String {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    get_from(&mut stream, path, "localhost", &auth).await
}

/// As [`get`], addressed to `host`, with `headers` (each ending in CRLF) added.
async fn get_from(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
    host: &str,
    headers: &str,
) -> String {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn token_required_on_plain_http() {
    let options = ServeOptions {
        token: Token::new("right-token"),
        ..ServeOptions::default()
    };
    let addr = start(demo_server().await, options).await;
    let plain = || async { tokio::net::TcpStream::connect(addr).await.unwrap() };
    for (path, auth) in [
        ("/api/keyspaces", None),
        ("/api/keyspaces", Some("wrong-token")),
        ("/", None),
        ("/metrics", Some("right-tokenX")),
    ] {
        let r = get(plain().await, path, auth).await;
        assert!(r.starts_with("HTTP/1.1 401"), "{path} {auth:?}: {r}");
        assert!(
            !r.contains("commerce") && !r.contains("toposphere_topo"),
            "no data: {r}"
        );
    }
    let r = get(plain().await, "/api/keyspaces", Some("right-token")).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("commerce"),
        "{r}"
    );
    // The sign-in form is open, and holds no secret.
    let r = get(plain().await, "/login", None).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && !r.contains("right-token"),
        "{r}"
    );
}

/// A self-signed certificate for `localhost` in `dir`: the server's TLS configuration and
/// a client connector that trusts it.
fn tls_pair(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (
        tls_config(&cert_path, &key_path).unwrap(),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn tls_with_token() {
    let dir = tempfile::tempdir().unwrap();
    let (config, connector) = tls_pair(dir.path());
    let options = ServeOptions {
        token: Token::new("right-token"),
        tls: Some(config),
        ..ServeOptions::default()
    };
    let addr = start(demo_server().await, options).await;
    let tls = || tls_connect(&connector, addr);
    let r = get(tls().await, "/api/keyspaces", None).await;
    assert!(
        r.starts_with("HTTP/1.1 401") && !r.contains("commerce"),
        "{r}"
    );
    let r = get(tls().await, "/api/keyspaces", Some("wrong-token")).await;
    assert!(
        r.starts_with("HTTP/1.1 401") && !r.contains("commerce"),
        "{r}"
    );
    let r = get(tls().await, "/api/keyspaces", Some("right-token")).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("commerce"),
        "{r}"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let r = get(plain, "/api/keyspaces", Some("right-token")).await;
    assert!(!r.contains("HTTP/1.1") && !r.contains("commerce"), "{r:?}");

    let key_path = dir.path().join("key.pem");
    let e = tls_config(&key_path, &key_path).unwrap_err();
    assert!(e.contains("--tls-cert") && e.contains("key.pem"), "{e}");
}

/// Once `serve` has returned, a TLS connection kept alive no longer gets answers (as on
/// plain HTTP): its connection was shut down with the server.
#[tokio::test]
async fn tls_connections_end_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (config, connector) = tls_pair(dir.path());
    let options = ServeOptions {
        tls: Some(config),
        ..ServeOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(topo_serve::serve(
        demo_server().await,
        listener,
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut conn = tls_connect(&connector, addr).await;
    let request = b"GET /api/keyspaces HTTP/1.1\r\nHost: localhost\r\n\r\n";
    conn.write_all(request).await.unwrap();
    let mut first = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    let _ = conn.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        !out.contains("HTTP/1.1 200"),
        "answered after shutdown: {out}"
    );
}

/// Without a token, only requests addressed to a loopback name are answered: a web page
/// that re-points its own name at 127.0.0.1 (DNS rebinding) gets 403 and no data, unless
/// `--insecure` (`any_host`) says to answer every name.
#[tokio::test]
async fn without_a_token_only_loopback_names_are_answered() {
    let ts = demo_server().await;
    let addr = start(ts.clone(), ServeOptions::default()).await;
    let connect = || async { tokio::net::TcpStream::connect(addr).await.unwrap() };
    let r = get_from(connect().await, "/api/keyspaces", "evil.example:15000", "").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(!r.contains("commerce"), "no data: {r}");
    for host in ["localhost", &addr.to_string()] {
        let r = get_from(connect().await, "/api/keyspaces", host, "").await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("commerce"),
            "{host}: {r}"
        );
    }
    let open = start(
        ts,
        ServeOptions {
            any_host: true,
            ..ServeOptions::default()
        },
    )
    .await;
    let stream = tokio::net::TcpStream::connect(open).await.unwrap();
    let r = get_from(stream, "/api/keyspaces", "evil.example:15000", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}
