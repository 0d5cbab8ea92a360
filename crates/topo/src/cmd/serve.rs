//! `serve`: the live topology browser.

use std::net::SocketAddr;
use std::path::PathBuf;

use topo_core::{Result, TopoError};
use topo_serve::access::{check_listen, tls_config, Exposure, Token};
use topo_serve::ServeOptions;
use toposphere::Server;

/// The access flags of `topo serve`.
#[derive(Debug)]
pub(crate) struct How {
    pub(crate) allow_writes: bool,
    /// Certificate and key.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) insecure: bool,
}

/// Completes on Ctrl-C or SIGTERM, so the server stops cleanly either way.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot catch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub(crate) async fn run(ts: &Server, listen: SocketAddr, how: How) -> Result<()> {
    let warning = check_listen(
        listen,
        Exposure {
            tls: how.tls.is_some(),
            token: how.token_file.is_some(),
            insecure: how.insecure,
            allow_writes: how.allow_writes,
        },
    )
    .map_err(TopoError::invalid)?;
    if let Some(w) = warning {
        eprintln!("topo: {w}");
    }
    let token = how
        .token_file
        .as_deref()
        .map(Token::from_file)
        .transpose()
        .map_err(TopoError::invalid)?;
    let tls = how
        .tls
        .as_ref()
        .map(|(cert, key)| tls_config(cert, key))
        .transpose()
        .map_err(TopoError::invalid)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| TopoError::invalid(format!("--listen {listen}: cannot listen: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| TopoError::invalid(format!("--listen {listen}: {e}")))?;
    crate::out!(
        "Serving the topology browser at {}://{addr}/ ({}{}); Ctrl-C stops it.",
        if tls.is_some() { "https" } else { "http" },
        if how.allow_writes {
            "writes allowed"
        } else {
            "read-only"
        },
        if token.is_some() {
            ", token required"
        } else {
            ""
        }
    );
    let options = ServeOptions {
        allow_writes: how.allow_writes,
        token,
        tls,
        any_host: how.insecure,
        ..ServeOptions::default()
    };
    topo_serve::serve(ts.clone(), listener, options, stop_signal())
        .await
        .map_err(|e| TopoError::invalid(format!("serving on {addr}: {e}")))
}
