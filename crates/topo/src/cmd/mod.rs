//! The verbs, grouped as vtctldclient groups them.

mod backups;
mod cells;
mod demo;
mod doctor;
mod keyspaces;
mod lock;
mod migrate;
mod raw;
mod serve;
mod serving;
mod tablets;
mod tee;

use std::process::ExitCode;
use std::sync::Arc;

use clap::CommandFactory;
use topo_core::{Result, TopoError};
use topo_etcd::{EtcdFactory, EtcdOptions, TlsFiles};
use topo_local::{LocalFactory, LocalOptions};
use topo_zk::{ZkFactory, ZkOptions};
use toposphere::{Registry, Server, ServerConfig};

use crate::args::{Cli, Command, GlobalArgs};

/// The backends this binary was built with, configured from the flags.
pub(crate) fn registry(g: &GlobalArgs) -> Registry {
    let mut r = Registry::with_memory();
    r.register(Arc::new(LocalFactory::new(LocalOptions {
        lock_ttl: g.local_lock_ttl,
        max_value_bytes: g.local_max_value_bytes,
        ..LocalOptions::default()
    })));
    r.register(Arc::new(EtcdFactory::new(EtcdOptions {
        lease_ttl: std::time::Duration::from_secs(g.etcd_lease_ttl.max(1)),
        remote_operation_timeout: g.remote_operation_timeout,
        tls: TlsFiles {
            ca: g.etcd_tls_ca.clone(),
            cert: g.etcd_tls_cert.clone(),
            key: g.etcd_tls_key.clone(),
        },
        max_request_bytes: g.etcd_max_request_bytes,
        ..Default::default()
    })));
    r.register(Arc::new(ZkFactory::new(ZkOptions {
        session_timeout: g.zk_base_timeout,
        remote_operation_timeout: g.remote_operation_timeout,
        auth_file: g.zk_auth_file.clone(),
        restrictive_acl: g.zk_acl,
        jute_maxbuffer: g.zk_jute_maxbuffer,
        tls: topo_zk::TlsFiles {
            ca: g.zk_tls_ca.clone(),
            cert: g.zk_tls_cert.clone(),
            key: g.zk_tls_key.clone(),
        },
        max_concurrency: g.zk_max_concurrency,
    })));
    r
}

/// Opens a topology server (`tee`: two of them, see [`tee`]).
pub(crate) async fn open(
    global: &GlobalArgs,
    implementation: &str,
    address: &str,
    root: &str,
) -> Result<Server> {
    if implementation == tee::TEE {
        return tee::open(global, address, root).await;
    }
    open_backend(global, implementation, address, root).await
}

/// The server settings from the flags, with `fence` for its writes.
pub(crate) fn server_config(global: &GlobalArgs, fence: Option<topo_core::Fence>) -> ServerConfig {
    ServerConfig {
        lock_timeout: global.lock_timeout,
        remote_operation_timeout: global.remote_operation_timeout,
        read_concurrency: global.read_concurrency,
        fence,
    }
}

/// Opens one backend's topology server.
pub(crate) async fn open_backend(
    global: &GlobalArgs,
    implementation: &str,
    address: &str,
    root: &str,
) -> Result<Server> {
    let fence = enclosing_lock_fence(global, implementation, address, root)?;
    let config = server_config(global, fence);
    Server::open(&registry(global), implementation, address, root, config)
        .await
        .map_err(|e| match e {
            TopoError::NoImplementation(m) => {
                TopoError::invalid(format!("--topo-implementation: unknown implementation {m}"))
            }
            other => other,
        })
}

/// The fence of the `topo lock` this process runs under, when it locked the topology about
/// to be opened (and `--no-fence` was not given).
fn enclosing_lock_fence(
    global: &GlobalArgs,
    implementation: &str,
    address: &str,
    root: &str,
) -> Result<Option<topo_core::Fence>> {
    if global.no_fence {
        return Ok(None);
    }
    let Some(lock) = toposphere::fencing::LockEnv::from_env()? else {
        return Ok(None);
    };
    if lock.is_in(implementation, address, root) {
        tracing::info!(dir = %lock.dir, token = lock.token, "writes are fenced by the enclosing topo lock");
        Ok(Some(lock.fence()))
    } else {
        eprintln!(
            "topo: warning: the enclosing topo lock holds {} in another topology ({} {} {}); \
             writes to {implementation} {address} {root} are not fenced by it",
            lock.dir, lock.implementation, lock.server_address, lock.root
        );
        Ok(None)
    }
}

/// Asks before a destructive step: prints `what` on stderr, then goes on with `--yes`, asks
/// `Proceed? [y/N]` on a terminal, and refuses when stdin is not a terminal.
pub(crate) fn confirm(what: &str, yes: bool) -> Result<()> {
    use std::io::IsTerminal;
    eprintln!("{what}");
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(TopoError::precondition(
            "not confirmed: stdin is not a terminal to ask on; pass --yes to go on",
        ));
    }
    eprint!("Proceed? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| TopoError::precondition(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(TopoError::precondition("cancelled: nothing was changed"))
    }
}

/// Refuses bytes for a topology path that names a record type (`…/Keyspace`, `…/Shard`…)
/// when they do not decode as that record, unless `raw`.
pub(crate) fn check_record_bytes(path: &str, bytes: &[u8], source: &str, raw: bool) -> Result<()> {
    if raw {
        return Ok(());
    }
    let Some(type_name) = topo_proto::json::message_type_for_path(path) else {
        return Ok(());
    };
    topo_proto::json::to_json(bytes, type_name, topo_proto::json::JsonForm::Pretty)
        .map(|_| ())
        .map_err(|e| {
            TopoError::invalid(format!(
                "refusing to write {path}: {source} does not hold a {type_name} record ({e}); \
                 --raw writes the bytes anyway"
            ))
        })
}

/// Reads a file the user named, with its path in the error.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| TopoError::invalid(format!("cannot read {}: {e}", path.display())))
}

/// Writes a file the user named, with its path in the error.
pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| TopoError::invalid(format!("cannot write {}: {e}", path.display())))
}

/// Runs the command line.
pub(crate) async fn run(cli: Cli) -> Result<ExitCode> {
    let compact = cli.compact;
    let g = cli.global.clone();
    if let Command::Completion { shell } = &cli.command {
        // Generated into memory first: clap_complete panics when stdout closes early.
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "topo", &mut script);
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), &script);
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::LockSupervise { parent, command } = &cli.command {
        return lock::supervise(*parent, command).await;
    }
    tee::refuse_unused_flags(&g)?;
    // Verbs that need no topology: none is opened (or created).
    match &cli.command {
        Command::VerifyBackup { file } => {
            migrate::verify_backup(file)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::DiffBackups {
            ignore_cell_addresses,
            a,
            b,
        } => return backups::diff(a, b, *ignore_cell_addresses),
        Command::GenerateShardRanges { num_shards } => {
            serving::generate_shard_ranges(num_shards)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let created = check_default_store(&g, &cli.command)?;
    let ts = open(&g, &g.implementation, &g.server_address, &g.root).await?;
    if let Some(path) = created {
        eprintln!(
            "topo: created {} (the embedded default store: no --topo-global-server-address was given)",
            path.display()
        );
    }
    let result = if cli.command.is_long_running() {
        dispatch(&ts, &g, cli.command, compact).await
    } else {
        let timeout = cli.action_timeout;
        tokio::time::timeout(timeout, dispatch(&ts, &g, cli.command, compact))
            .await
            .unwrap_or_else(|_| {
                Err(TopoError::Timeout(format!(
                    "the command did not finish within --action-timeout ({timeout:?})"
                )))
            })
    };
    ts.close().await;
    result
}

/// With no topology flags, `local` works on `./toposphere.db`. A read-only verb refuses to
/// create it; any other verb may, and the path it created is returned to be reported.
fn check_default_store(g: &GlobalArgs, command: &Command) -> Result<Option<std::path::PathBuf>> {
    if !g.default_store || g.implementation != "local" {
        return Ok(None);
    }
    let path = std::path::Path::new(&g.server_address);
    if path.exists() {
        return Ok(None);
    }
    let shown = std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    if command.is_read_only() {
        return Err(TopoError::FailedPrecondition(format!(
            "no topology here: the embedded default store {} does not exist (topo demo builds \
             one; --topo-implementation, --topo-global-server-address and --topo-global-root \
             point topo at another topology)",
            shown.display()
        )));
    }
    Ok(Some(shown))
}

async fn dispatch(
    ts: &Server,
    g: &GlobalArgs,
    command: Command,
    compact: bool,
) -> Result<ExitCode> {
    use Command as C;
    match command {
        C::AddCellInfo { .. }
        | C::UpdateCellInfo { .. }
        | C::DeleteCellInfo { .. }
        | C::GetCellInfo { .. }
        | C::GetCellInfoNames
        | C::AddCellsAlias { .. }
        | C::UpdateCellsAlias { .. }
        | C::DeleteCellsAlias { .. }
        | C::GetCellsAliases => cells::run(ts, command, compact).await?,
        C::CreateKeyspace(_)
        | C::GetKeyspace { .. }
        | C::GetKeyspaces
        | C::DeleteKeyspace { .. }
        | C::FindAllShardsInKeyspace { .. }
        | C::SetKeyspaceDurabilityPolicy { .. }
        | C::RemoveKeyspaceCell { .. }
        | C::CreateShard { .. }
        | C::GetShard { .. }
        | C::DeleteShards { .. }
        | C::RemoveShardCell { .. }
        | C::SetShardIsPrimaryServing { .. }
        | C::SetShardTabletControl { .. }
        | C::SourceShardAdd { .. }
        | C::SourceShardDelete { .. } => keyspaces::run(ts, command, compact).await?,
        C::GetTablet { .. }
        | C::GetTablets(_)
        | C::DeleteTablets { .. }
        | C::AddTablet(_)
        | C::InitTablet(_)
        | C::GetShardReplication { .. }
        | C::ShardReplicationAdd { .. }
        | C::ShardReplicationRemove { .. }
        | C::ShardReplicationFix { .. } => return tablets::run(ts, command, compact).await,
        C::RebuildKeyspaceGraph { .. }
        | C::RebuildVSchemaGraph { .. }
        | C::GetSrvKeyspaceNames { .. }
        | C::GetSrvKeyspaces { .. }
        | C::GetSrvVSchema { .. }
        | C::GetSrvVSchemas { .. }
        | C::DeleteSrvVSchema { .. }
        | C::ApplyVSchema { .. }
        | C::GetVSchema { .. }
        | C::ApplyRoutingRules(_)
        | C::GetRoutingRules
        | C::ApplyShardRoutingRules(_)
        | C::GetShardRoutingRules
        | C::ApplyKeyspaceRoutingRules(_)
        | C::GetKeyspaceRoutingRules
        | C::GetMirrorRules
        | C::GetTopologyPath { .. }
        | C::WriteTopologyPath { .. }
        | C::Validate { .. }
        | C::ValidateKeyspace { .. }
        | C::ValidateShard { .. }
        | C::UpdateThrottlerConfig(_) => return serving::run(ts, command, compact).await,
        C::TopoCat { .. }
        | C::TopoLs { .. }
        | C::TopoCp { .. }
        | C::TopoRm { .. }
        | C::Cat { .. }
        | C::Stat { .. }
        | C::Touch { .. }
        | C::Watch { .. }
        | C::Wait { .. } => return raw::run(ts, command).await,
        C::Lock {
            kill_grace,
            dir,
            command,
        } => return lock::run(ts, g, &dir, &command, kill_grace).await,
        C::Topo2Topo(args) => migrate::topo2topo(ts, g, args).await?,
        C::Backup { keep: None, file } => migrate::backup(ts, &file).await?,
        C::Backup {
            keep: Some(keep),
            file,
        } => backups::backup_rotated(ts, &file, keep).await?,
        C::Restore {
            force,
            yes,
            keep_cell_addresses,
            skip_too_large,
            concurrency,
            file,
        } => {
            let how = migrate::RestoreOptions {
                force,
                yes,
                keep_cell_addresses,
                skip_too_large,
                concurrency,
            };
            migrate::restore(ts, g, &file, how).await?
        }
        C::Doctor(args) => return doctor::run(ts, g, args).await,
        C::Demo { force } => demo::run(ts, g, force).await?,
        C::Serve {
            listen,
            allow_writes,
            tls_cert,
            tls_key,
            token_file,
            insecure,
        } => {
            let how = serve::How {
                allow_writes,
                tls: tls_cert.zip(tls_key),
                token_file,
                insecure,
            };
            serve::run(ts, listen, how).await?
        }
        C::Completion { .. }
        | C::LockSupervise { .. }
        | C::VerifyBackup { .. }
        | C::DiffBackups { .. }
        | C::GenerateShardRanges { .. } => {
            unreachable!("handled before opening the topology")
        }
    }
    Ok(ExitCode::SUCCESS)
}
