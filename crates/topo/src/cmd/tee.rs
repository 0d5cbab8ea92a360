//! `--topo-implementation tee`: every write goes to two topologies (live migration).
//!
//! The primary is the topology the global flags name (`--topo-global-server-address`,
//! `--topo-global-root`) with `--topo-tee-primary-implementation`; the secondary is named by
//! `--topo-tee-secondary-*`. See `docs/guides/live-migration-with-the-tee.md`.

use std::sync::Arc;

use topo_core::{Result, TopoError};
use toposphere::tee::TeeFactory;
use toposphere::Server;

use crate::args::{GlobalArgs, TeeLockOrder};
use crate::cmd::{open_backend, registry, server_config};

/// The implementation name that selects the tee.
pub(crate) const TEE: &str = "tee";

/// A flag the tee cannot do without.
fn required<'a>(value: &'a Option<String>, flag: &str) -> Result<&'a str> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(TopoError::invalid(format!(
            "--topo-implementation tee needs {flag}"
        ))),
    }
}

/// Refuses `--topo-tee-*` flags given without `--topo-implementation tee` (they would be
/// ignored, and the writes go to one topology only).
pub(crate) fn refuse_unused_flags(g: &GlobalArgs) -> Result<()> {
    if g.implementation == TEE {
        return Ok(());
    }
    let given = [
        (
            "--topo-tee-primary-implementation",
            &g.tee_primary_implementation,
        ),
        (
            "--topo-tee-secondary-implementation",
            &g.tee_secondary_implementation,
        ),
        (
            "--topo-tee-secondary-server-address",
            &g.tee_secondary_server_address,
        ),
    ];
    match given.iter().find(|(_, v)| v.is_some()) {
        Some((flag, _)) => Err(TopoError::invalid(format!(
            "{flag} needs --topo-implementation tee (it is {})",
            g.implementation
        ))),
        None => Ok(()),
    }
}

/// Opens a tee over the primary at `address` under `root` and the secondary the
/// `--topo-tee-secondary-*` flags name.
pub(crate) async fn open(g: &GlobalArgs, address: &str, root: &str) -> Result<Server> {
    let primary_impl = required(
        &g.tee_primary_implementation,
        "--topo-tee-primary-implementation",
    )?;
    let secondary_impl = required(
        &g.tee_secondary_implementation,
        "--topo-tee-secondary-implementation",
    )?;
    let secondary_address = required(
        &g.tee_secondary_server_address,
        "--topo-tee-secondary-server-address",
    )?;
    let secondary_root = g.tee_secondary_root.as_str();
    let registry = registry(g);
    let known = registry.names();
    for (flag, name) in [
        ("--topo-tee-primary-implementation", primary_impl),
        ("--topo-tee-secondary-implementation", secondary_impl),
    ] {
        if !known.contains(&name) {
            return Err(TopoError::invalid(format!(
                "{flag}: unknown implementation {name}; a tee writes to two of: {}",
                known.join(", ")
            )));
        }
    }
    if (primary_impl, address, root) == (secondary_impl, secondary_address, secondary_root) {
        return Err(TopoError::invalid(format!(
            "--topo-tee-secondary-*: the secondary is the primary ({primary_impl} {address} {root}); \
             name another topology"
        )));
    }
    let primary = open_backend(g, primary_impl, address, root).await?;
    let secondary = match open_backend(g, secondary_impl, secondary_address, secondary_root).await {
        Ok(s) => s,
        Err(e) => {
            primary.close().await;
            return Err(e);
        }
    };
    tracing::info!(
        primary = %format!("{primary_impl} {address} {root}"),
        secondary = %format!("{secondary_impl} {secondary_address} {secondary_root}"),
        lock_order = ?g.tee_lock_order,
        "tee: writing to both topologies"
    );
    let factory = TeeFactory::new(
        primary,
        secondary,
        g.tee_lock_order == TeeLockOrder::SecondaryFirst,
    );
    Server::open_with_factory(Arc::new(factory), address, root, server_config(g, None)).await
}
