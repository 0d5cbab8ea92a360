//! Who may use the browser: the rule for listening off loopback, bearer tokens compared in
//! constant time, and TLS.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use subtle::ConstantTimeEq;

/// The cookie that carries the token for a browser after it signed in at `/login`.
pub const TOKEN_COOKIE: &str = "topo_serve_token";

/// A bearer token. Its `Debug` form hides it, so it never reaches a log.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads a token from `path` (surrounding whitespace trimmed).
    ///
    /// # Errors
    /// When the file cannot be read or holds no token; the message names the file, never
    /// its contents.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: cannot read: {e}", path.display()))?;
        Token::new(text.trim())
            .ok_or_else(|| format!("--token-file {}: the file is empty", path.display()))
    }

    /// A token from its text; `None` when empty.
    pub fn new(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| Token(text.as_bytes().into()))
    }

    /// Whether `offered` is this token, in time independent of where they differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        bool::from(self.0.as_ref().ct_eq(offered))
    }
}

/// How `topo serve` is asked to listen.
#[derive(Clone, Copy, Debug, Default)]
pub struct Exposure {
    /// TLS certificate and key are given.
    pub tls: bool,
    /// A token file is given.
    pub token: bool,
    /// `--insecure`: serve off loopback without TLS and token anyway.
    pub insecure: bool,
    /// `--allow-writes`.
    pub allow_writes: bool,
}

/// Decides whether listening on `listen` as `how` is allowed. On loopback anything goes; off
/// loopback TLS and a token are required unless `insecure` (then the returned warning must be
/// printed on every start), and writes always require the token.
///
/// # Errors
/// A message naming the flags that are missing.
pub fn check_listen(listen: SocketAddr, how: Exposure) -> Result<Option<String>, String> {
    if listen.ip().is_loopback() {
        return Ok(None);
    }
    if how.allow_writes && !how.token {
        return Err(format!(
            "--allow-writes on {listen}, which is not a loopback address, requires --token-file"
        ));
    }
    if how.tls && how.token {
        return Ok(None);
    }
    if how.insecure {
        return Ok(Some(format!(
            "warning: serving the topology on {listen}, which is not a loopback address, without {} (--insecure)",
            match (how.tls, how.token) {
                (false, false) => "TLS and without a token",
                (false, true) => "TLS",
                _ => "a token",
            }
        )));
    }
    Err(format!(
        "listening on {listen}, which is not a loopback address, requires --tls-cert, --tls-key and --token-file (or --insecure to accept the risk)"
    ))
}

/// The TLS configuration from a PEM certificate chain and private key.
///
/// # Errors
/// A message naming the file that cannot be read or used.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The token a request offers: `Authorization: Bearer <token>` or the sign-in cookie.
fn offered(request: &Request) -> Option<&[u8]> {
    let headers = request.headers();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        return auth.as_bytes().strip_prefix(b"Bearer ");
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(|c| c.trim_ascii())
        .find_map(|c| c.strip_prefix(TOKEN_COOKIE.as_bytes())?.strip_prefix(b"="))
}

/// Middleware: refuses (401, no data) a request without the right token; `/login` is open.
pub async fn require_token(State(token): State<Token>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/login" || offered(&request).is_some_and(|t| token.matches(t)) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "a bearer token is required (Authorization: Bearer <token>, or sign in at /login)" })),
    )
        .into_response()
}

/// Whether `host`, a `Host` header's value, names this machine's loopback interface:
/// `localhost` (or a name under `.localhost`), an address in 127.0.0.0/8, or `[::1]`, with
/// or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Middleware for a browser without a token: refuses (403) a request whose `Host` names
/// another machine. Without it, a web page whose name its owner re-points at 127.0.0.1
/// (DNS rebinding) could read the topology through its visitor's browser. Requests without
/// a `Host` (not from a browser) pass.
pub async fn require_loopback_host(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or_default());
    if host.is_none_or(is_loopback_host) {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        Json(json!({ "error": "without a token this browser answers only requests addressed to localhost or 127.0.0.1 (give --token-file to serve other names)" })),
    )
        .into_response()
}

#[cfg(test)]
mod host_tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_names_pass_and_others_do_not() {
        for ok in [
            "localhost",
            "localhost:15000",
            "LOCALHOST.",
            "app.localhost:8080",
            "127.0.0.1",
            "127.1.2.3:15000",
            "[::1]:15000",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:15000",
            "localhost.evil.example",
            "10.0.0.1:15000",
            "[2001:db8::1]:80",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
