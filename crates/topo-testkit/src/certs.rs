//! Certificates made at run time for TLS tests: a CA, a server certificate for 127.0.0.1
//! and a client certificate signed by it, and a second, unrelated CA, as PEM files.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};

/// The PEM files written by [`TestCerts::generate`].
#[derive(Clone, Debug)]
pub struct TestCerts {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server's certificate (for `127.0.0.1` and `localhost`).
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate.
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
    /// Another CA, which signed nothing here.
    pub other_ca: PathBuf,
    /// A key that belongs to no certificate here.
    pub stray_key: PathBuf,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Certificate parameters for `sans`, named `name`: rcgen's default name is the same for
/// every certificate, which makes verifiers (OpenSSL's) take a CA-signed certificate for a
/// self-signed one.
fn params(name: &str, sans: Vec<String>) -> io::Result<CertificateParams> {
    let mut params = CertificateParams::new(sans).map_err(other)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    Ok(params)
}

fn new_ca(name: &str) -> io::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = params(name, Vec::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(other)?).map_err(other)
}

impl TestCerts {
    /// Makes the certificates and writes them into `dir`.
    ///
    /// # Errors
    /// When a certificate cannot be made or a file written.
    pub fn generate(dir: &Path) -> io::Result<TestCerts> {
        let ca = new_ca("Toposphere test CA")?;
        let path = |name: &str| dir.join(name);
        std::fs::write(path("ca.pem"), ca.pem())?;
        std::fs::write(
            path("other-ca.pem"),
            new_ca("Toposphere other test CA")?.pem(),
        )?;
        std::fs::write(
            path("stray-key.pem"),
            KeyPair::generate().map_err(other)?.serialize_pem(),
        )?;
        for (name, sans) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
            ),
            ("client", vec!["client".to_string()]),
        ] {
            let key = KeyPair::generate().map_err(other)?;
            let cert = params(name, sans)?.signed_by(&key, &ca).map_err(other)?;
            std::fs::write(path(&format!("{name}.pem")), cert.pem())?;
            std::fs::write(path(&format!("{name}-key.pem")), key.serialize_pem())?;
        }
        Ok(TestCerts {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server-key.pem"),
            client_cert: path("client.pem"),
            client_key: path("client-key.pem"),
            other_ca: path("other-ca.pem"),
            stray_key: path("stray-key.pem"),
        })
    }
}
