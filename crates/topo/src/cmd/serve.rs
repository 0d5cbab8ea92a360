//! `serve`: the live topology browser.

use std::net::SocketAddr;

use topo_core::{Result, TopoError};
use topo_serve::ServeOptions;
use toposphere::Server;

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

pub(crate) async fn run(ts: &Server, listen: SocketAddr, allow_writes: bool) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| TopoError::invalid(format!("--listen {listen}: cannot listen: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| TopoError::invalid(format!("--listen {listen}: {e}")))?;
    crate::out!(
        "Serving the topology browser at http://{addr}/ ({}); Ctrl-C stops it.",
        if allow_writes {
            "writes allowed"
        } else {
            "read-only"
        }
    );
    let options = ServeOptions {
        allow_writes,
        ..ServeOptions::default()
    };
    topo_serve::serve(ts.clone(), listener, options, stop_signal())
        .await
        .map_err(|e| TopoError::invalid(format!("serving on {addr}: {e}")))
}
