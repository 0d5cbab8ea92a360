//! TLS to ZooKeeper (Vitess's `--topo-zk-tls-ca`, `--topo-zk-tls-cert`, `--topo-zk-tls-key`).
//!
//! The files are read and checked when a connection is opened: a missing, unreadable or
//! malformed file, or a key that does not match its certificate, is an error naming the flag
//! and the file, never a fallback to plain TCP. The client library reports a failed TLS
//! handshake only as a lost connection and would retry it until the timeout; so when it
//! cannot connect, [`diagnose`] makes one handshake of its own to each server to tell a
//! misconfiguration (a server certificate the CA did not sign, a client refused for want of
//! a certificate, plain TCP against a TLS-only port) from a server that is merely down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use topo_core::{Result, TlsFiles, TopoError};

/// Checked TLS settings: the PEM texts handed to the client library and the equivalent
/// rustls configuration used to diagnose failed connections.
#[derive(Clone, Debug)]
pub(crate) struct Tls {
    ca: String,
    identity: Option<(String, String)>,
    config: Arc<ClientConfig>,
}

/// The crypto provider of every TLS configuration made here: named explicitly because more
/// than one is compiled into the workspace (etcd's and the ZooKeeper client's).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(flag: &str, path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| TopoError::invalid(format!("{flag} {}: {e}", path.display())))
}

fn bad(flag: &str, path: &Path, why: impl std::fmt::Display) -> TopoError {
    TopoError::invalid(format!("{flag} {}: {why}", path.display()))
}

impl Tls {
    /// Reads and checks `files`; `None` when no TLS file is set.
    ///
    /// # Errors
    /// `InvalidArgument` naming the flag and file: unreadable, no certificate or key in it,
    /// a certificate without its key (or the reverse), no CA, or a key that does not belong
    /// to the certificate.
    pub(crate) fn load(files: &TlsFiles) -> Result<Option<Tls>> {
        if !files.enabled() {
            return Ok(None);
        }
        let Some(ca_path) = files.ca.as_deref() else {
            return Err(TopoError::invalid(
                "--topo-zk-tls-cert/--topo-zk-tls-key need --topo-zk-tls-ca (the CA that signed the servers' certificates)",
            ));
        };
        let ca = read("--topo-zk-tls-ca", ca_path)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            let cert = cert.map_err(|e| bad("--topo-zk-tls-ca", ca_path, e))?;
            roots
                .add(cert)
                .map_err(|e| bad("--topo-zk-tls-ca", ca_path, e))?;
        }
        if roots.is_empty() {
            return Err(bad("--topo-zk-tls-ca", ca_path, "no PEM certificate in it"));
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TopoError::invalid(format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
        let (config, identity) =
            match (files.cert.as_deref(), files.key.as_deref()) {
                (None, None) => (builder.with_no_client_auth(), None),
                (Some(cert_path), Some(key_path)) => {
                    let cert = read("--topo-zk-tls-cert", cert_path)?;
                    let key = read("--topo-zk-tls-key", key_path)?;
                    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|e| bad("--topo-zk-tls-cert", cert_path, e))?;
                    if chain.is_empty() {
                        return Err(bad(
                            "--topo-zk-tls-cert",
                            cert_path,
                            "no PEM certificate in it",
                        ));
                    }
                    let private = PrivateKeyDer::from_pem_slice(key.as_bytes())
                        .map_err(|e| bad("--topo-zk-tls-key", key_path, e))?;
                    let config = builder.with_client_auth_cert(chain, private).map_err(|e| {
                        TopoError::invalid(format!(
                            "--topo-zk-tls-cert {} and --topo-zk-tls-key {}: {e}",
                            cert_path.display(),
                            key_path.display()
                        ))
                    })?;
                    (config, Some((cert, key)))
                }
                _ => return Err(TopoError::invalid(
                    "--topo-zk-tls-cert and --topo-zk-tls-key go together (mutual TLS needs both)",
                )),
            };
        Ok(Some(Tls {
            ca,
            identity,
            config: Arc::new(config),
        }))
    }

    /// The client library's options for these files.
    ///
    /// # Errors
    /// `InvalidArgument` if the library refuses what [`Tls::load`] accepted.
    pub(crate) fn options(&self) -> Result<zookeeper_client::TlsOptions> {
        // The library builds its configuration with the process-wide provider; with two
        // compiled in, none is picked by itself. An already installed one is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut options = zookeeper_client::TlsOptions::new()
            .with_pem_ca(&self.ca)
            .map_err(|e| TopoError::invalid(format!("--topo-zk-tls-ca: {e}")))?;
        if let Some((cert, key)) = &self.identity {
            options = options
                .with_pem_identity(cert, key)
                .map_err(|e| TopoError::invalid(format!("--topo-zk-tls-cert/-key: {e}")))?;
        }
        Ok(options)
    }
}

/// Bound on each step (connect, handshake, answer) of a diagnosing handshake.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why connections to `addr` (`host:port,…`) cannot work, when a handshake of our own
/// shows a misconfiguration that retrying cannot fix; `None` when the servers look merely
/// unavailable (refused, closed, silent). `tls` is what the connection uses, `None` for
/// plain TCP (then a server answering a TLS handshake is TLS-only).
pub(crate) async fn diagnose(addr: &str, tls: Option<&Tls>) -> Option<TopoError> {
    let config = tls.map(|t| t.config.clone());
    let addr = addr.to_string();
    let probe = tokio::task::spawn_blocking(move || {
        addr.split(',')
            .filter(|s| !s.trim().is_empty())
            .find_map(|server| probe(server.trim(), config.clone()))
    });
    // Each server's probe is bounded by its socket timeouts; this bounds them all.
    match tokio::time::timeout(PROBE_TIMEOUT * 8, probe).await {
        Ok(Ok(found)) => found,
        _ => None,
    }
}

/// One server's handshake: `Some` with the reason when it shows a misconfiguration.
fn probe(server: &str, config: Option<Arc<ClientConfig>>) -> Option<TopoError> {
    let (host, _) = server.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).ok()?;
    let socket: SocketAddr = server.to_socket_addrs().ok()?.next()?;
    let secure = config.is_some();
    // Without TLS settings, a handshake trusting no CA still shows whether the server
    // speaks TLS: it answers with its certificate (which then fails to verify).
    let config = match config {
        Some(config) => config,
        None => Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        ),
    };
    let mut tcp = TcpStream::connect_timeout(&socket, PROBE_TIMEOUT).ok()?;
    tcp.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    tcp.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let mut conn = ClientConnection::new(config, name).ok()?;
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    // `srvr` is the four-letter word ZooKeeper allows by default; reading its answer also
    // receives a refusal the server sends only after the handshake (TLS 1.3 client
    // certificates).
    let mut answer = [0u8; 1];
    let err = match stream
        .write_all(b"srvr")
        .and_then(|()| stream.flush())
        .and_then(|()| stream.read(&mut answer))
    {
        Ok(_) => return None,
        Err(e) => e,
    };
    let tls_err = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    tracing::debug!(server, error = %tls_err, "diagnosing handshake failed");
    let answered_tls = matches!(
        tls_err,
        rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_)
    );
    if !secure && !answered_tls {
        return None;
    }
    Some(TopoError::invalid(if !secure {
        format!(
            "ZooKeeper at {server} speaks TLS only: plain TCP is refused; set --topo-zk-tls-ca (and --topo-zk-tls-cert/--topo-zk-tls-key if it requires client certificates)"
        )
    } else {
        let hint = match tls_err {
            rustls::Error::InvalidCertificate(_) => {
                " (is --topo-zk-tls-ca the CA that signed the server's certificate, for this host name?)"
            }
            rustls::Error::AlertReceived(_) => {
                " (the server refused this client: does it require a client certificate, --topo-zk-tls-cert/--topo-zk-tls-key, signed by a CA it trusts?)"
            }
            _ => "",
        };
        format!("TLS to ZooKeeper at {server} failed: {tls_err}{hint}")
    }))
}
