//! Command-line arguments: global flags with Vitess's names (both spellings) and every verb.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

use topo_core::duration::parse as parse_duration;

/// The exit statuses, shown at the end of `topo --help` (the README lists the same).
const EXIT_CODES: &str = "Exit status:
  0  success
  1  an error (named on stderr), Validate* found problems, or a confirmation was refused
  2  a usage error: unknown verb or flag, bad flag value, --server other than internal
  3  GetTablets printed partial results: some cells could not be read
  125, 126, 127, 128+N  topo lock: the lock was lost, the command could not be run, or it
     was killed by signal N (otherwise the command's own status)";

/// The Toposphere command line: Vitess topology administration.
///
/// Without topology flags it works on the embedded store at ./toposphere.db (implementation
/// `local`, global root /vitess/global). Point it elsewhere with --topo-implementation,
/// --topo-global-server-address and --topo-global-root (or TOPO_IMPLEMENTATION,
/// TOPO_GLOBAL_SERVER_ADDRESS, TOPO_GLOBAL_ROOT). Command names match case-insensitively.
#[derive(Debug, Parser)]
#[command(name = "topo", version, max_term_width = 100, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// More logging on stderr: -v info, -vv debug, -vvv trace (or TOPO_LOG=<filter>).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Vitess's spelling of the log level: --v=1 is -v, --v=2 is -vv, --v=3 is -vvv.
    #[arg(long = "v", value_name = "N", global = true)]
    pub(crate) v_level: Option<u8>,
    /// vtctldclient's --server: only `internal` (talk to the topology directly, as topo
    /// always does) is accepted; topo does not talk to a vtctld.
    #[arg(long, value_name = "internal", global = true)]
    pub(crate) server: Option<String>,
    /// Overall deadline of the command, as vtctldclient's --action_timeout (long-running
    /// verbs: serve, watch, wait, lock have none).
    #[arg(long = "action-timeout", alias = "action_timeout", default_value = "1h", value_parser = parse_duration, global = true)]
    pub(crate) action_timeout: Duration,
    /// Leave unpopulated fields out of protojson output, as vtctldclient's --compact (Go
    /// encoding/json output, for plain maps and slices, is unchanged).
    #[arg(long, global = true)]
    pub(crate) compact: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Checks what clap cannot (`--server`) and fills the derived fields. The error is a
    /// usage error (exit status 2).
    pub(crate) fn resolve(&mut self) -> Result<(), String> {
        match self.server.as_deref() {
            None | Some("internal") => {}
            Some(other) => {
                return Err(format!(
                    "--server {other:?}: topo does not talk to a vtctld; it talks to the topology \
                     directly, as vtctldclient --server=internal does. Use --server internal (or \
                     leave it out) with --topo-implementation, --topo-global-server-address and \
                     --topo-global-root"
                ))
            }
        }
        if let Some(v) = self.v_level {
            self.verbose = self.verbose.max(v);
        }
        let g = &mut self.global;
        g.default_store = g.server_addresses.is_empty();
        g.server_address = if g.default_store {
            topo_local::DEFAULT_PATH.to_string()
        } else {
            g.server_addresses.join(",")
        };
        Ok(())
    }
}

/// Where the topology is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// Topology implementation: local, memory, etcd2 or zk2 (those compiled in), or tee
    /// (writes to two topologies; see --topo-tee-*).
    #[arg(
        id = "g_implementation",
        long = "topo-implementation",
        alias = "topo_implementation",
        env = "TOPO_IMPLEMENTATION",
        default_value = "local",
        global = true
    )]
    pub(crate) implementation: String,
    /// Global topology server address (local: the database file; default ./toposphere.db).
    /// Repeatable and comma-separated, as in Vitess: the addresses are joined with commas.
    #[arg(id = "g_server_address", long = "topo-global-server-address", alias = "topo_global_server_address", env = "TOPO_GLOBAL_SERVER_ADDRESS", action = clap::ArgAction::Append, global = true)]
    pub(crate) server_addresses: Vec<String>,
    /// The global server address: `server_addresses` joined, or the embedded default.
    #[arg(skip)]
    pub(crate) server_address: String,
    /// True when no address was given and `local` runs on the embedded default file.
    #[arg(skip)]
    pub(crate) default_store: bool,
    /// Root of the global topology.
    #[arg(
        id = "g_root",
        long = "topo-global-root",
        alias = "topo_global_root",
        env = "TOPO_GLOBAL_ROOT",
        default_value = "/vitess/global",
        global = true
    )]
    pub(crate) root: String,
    /// How long to wait for a keyspace, shard or named lock.
    #[arg(id = "g_lock_timeout", long = "lock-timeout", alias = "lock_timeout", default_value = "45s", value_parser = parse_duration, global = true)]
    pub(crate) lock_timeout: Duration,
    /// Bound on single remote operations (unlock, watch start).
    #[arg(id = "g_remote_operation_timeout", long = "remote-operation-timeout", alias = "remote_operation_timeout", default_value = "15s", value_parser = parse_duration, global = true)]
    pub(crate) remote_operation_timeout: Duration,
    /// Concurrent reads per cell.
    #[arg(
        id = "g_read_concurrency",
        long = "topo-read-concurrency",
        alias = "topo_read_concurrency",
        default_value_t = 32,
        global = true
    )]
    pub(crate) read_concurrency: usize,
    /// etcd: lease TTL of locks and elections, in seconds.
    #[arg(
        id = "g_etcd_lease_ttl",
        long = "topo-etcd-lease-ttl",
        alias = "topo_etcd_lease_ttl",
        default_value_t = 30,
        global = true
    )]
    pub(crate) etcd_lease_ttl: u64,
    /// local: lease TTL of locks (renewed while held; a holder that stops renewing loses the
    /// lock after this long).
    #[arg(id = "g_local_lock_ttl", long = "topo-local-lock-ttl", alias = "topo_local_lock_ttl", default_value = "30s", value_parser = parse_duration, global = true)]
    pub(crate) local_lock_ttl: Duration,
    /// etcd: the servers' --max-request-bytes; larger values are refused before sending.
    #[arg(id = "g_etcd_max_request_bytes", long = "topo-etcd-max-request-bytes", alias = "topo_etcd_max_request_bytes", default_value_t = topo_core::limit::ETCD_DEFAULT_MAX_REQUEST_BYTES, global = true)]
    pub(crate) etcd_max_request_bytes: usize,
    /// ZooKeeper: the servers' jute.maxbuffer; larger values are refused before sending.
    #[arg(id = "g_zk_jute_maxbuffer", long = "topo-zk-jute-maxbuffer", alias = "topo_zk_jute_maxbuffer", default_value_t = topo_core::limit::ZK_DEFAULT_JUTE_MAXBUFFER, global = true)]
    pub(crate) zk_jute_maxbuffer: usize,
    /// local: the largest value stored (default: what fits etcd and ZooKeeper by default).
    #[arg(id = "g_local_max_value_bytes", long = "topo-local-max-value-bytes", alias = "topo_local_max_value_bytes", default_value_t = topo_core::ValueLimit::smallest_default("").max, global = true)]
    pub(crate) local_max_value_bytes: usize,
    /// Do not fence writes by the lock of an enclosing `topo lock` (TOPO_LOCK_FENCE).
    #[arg(
        id = "g_no_fence",
        long = "no-fence",
        alias = "no_fence",
        global = true
    )]
    pub(crate) no_fence: bool,
    /// etcd: CA certificate to verify the server (alone: server-authenticated TLS).
    #[arg(
        id = "g_etcd_tls_ca",
        long = "topo-etcd-tls-ca",
        alias = "topo_etcd_tls_ca",
        global = true
    )]
    pub(crate) etcd_tls_ca: Option<PathBuf>,
    /// etcd: client certificate for mutual TLS (with --topo-etcd-tls-key).
    #[arg(
        id = "g_etcd_tls_cert",
        long = "topo-etcd-tls-cert",
        alias = "topo_etcd_tls_cert",
        global = true
    )]
    pub(crate) etcd_tls_cert: Option<PathBuf>,
    /// etcd: client key for mutual TLS (with --topo-etcd-tls-cert).
    #[arg(
        id = "g_etcd_tls_key",
        long = "topo-etcd-tls-key",
        alias = "topo_etcd_tls_key",
        global = true
    )]
    pub(crate) etcd_tls_key: Option<PathBuf>,
    /// ZooKeeper: session timeout.
    #[arg(id = "g_zk_base_timeout", long = "topo-zk-base-timeout", alias = "topo_zk_base_timeout", default_value = "30s", value_parser = parse_duration, global = true)]
    pub(crate) zk_base_timeout: Duration,
    /// ZooKeeper: file holding `<scheme>:<auth>` (e.g. `digest:user:password`).
    #[arg(
        id = "g_zk_auth_file",
        long = "topo-zk-auth-file",
        alias = "topo_zk_auth_file",
        global = true
    )]
    pub(crate) zk_auth_file: Option<PathBuf>,
    /// ZooKeeper: create nodes readable only with the auth file's credentials.
    #[arg(
        id = "g_zk_acl",
        long = "topo-zk-acl",
        alias = "topo_zk_acl",
        global = true
    )]
    pub(crate) zk_acl: bool,
    /// ZooKeeper: CA certificate to verify the servers (alone: server-authenticated TLS).
    #[arg(
        id = "g_zk_tls_ca",
        long = "topo-zk-tls-ca",
        alias = "topo_zk_tls_ca",
        global = true
    )]
    pub(crate) zk_tls_ca: Option<PathBuf>,
    /// ZooKeeper: client certificate for mutual TLS (with --topo-zk-tls-key and -ca).
    #[arg(
        id = "g_zk_tls_cert",
        long = "topo-zk-tls-cert",
        alias = "topo_zk_tls_cert",
        global = true
    )]
    pub(crate) zk_tls_cert: Option<PathBuf>,
    /// ZooKeeper: client key for mutual TLS (with --topo-zk-tls-cert).
    #[arg(
        id = "g_zk_tls_key",
        long = "topo-zk-tls-key",
        alias = "topo_zk_tls_key",
        global = true
    )]
    pub(crate) zk_tls_key: Option<PathBuf>,
    /// tee: the primary's implementation (it is at --topo-global-server-address under
    /// --topo-global-root; reads, watches and elections use it).
    #[arg(
        id = "g_tee_primary_implementation",
        long = "topo-tee-primary-implementation",
        alias = "topo_tee_primary_implementation",
        global = true
    )]
    pub(crate) tee_primary_implementation: Option<String>,
    /// tee: the secondary's implementation (every write is repeated there).
    #[arg(
        id = "g_tee_secondary_implementation",
        long = "topo-tee-secondary-implementation",
        alias = "topo_tee_secondary_implementation",
        global = true
    )]
    pub(crate) tee_secondary_implementation: Option<String>,
    /// tee: the secondary's global server address.
    #[arg(
        id = "g_tee_secondary_server_address",
        long = "topo-tee-secondary-server-address",
        alias = "topo_tee_secondary_server_address",
        global = true
    )]
    pub(crate) tee_secondary_server_address: Option<String>,
    /// tee: the secondary's global root.
    #[arg(
        id = "g_tee_secondary_root",
        long = "topo-tee-secondary-root",
        alias = "topo_tee_secondary_root",
        default_value = "/vitess/global",
        global = true
    )]
    pub(crate) tee_secondary_root: String,
    /// tee: which side's lock is taken first; every process of a migration must take them
    /// in the same order (so swap it when swapping primary and secondary).
    #[arg(
        id = "g_tee_lock_order",
        long = "topo-tee-lock-order",
        alias = "topo_tee_lock_order",
        value_enum,
        default_value_t = TeeLockOrder::PrimaryFirst,
        global = true
    )]
    pub(crate) tee_lock_order: TeeLockOrder,
    /// ZooKeeper: the most calls a connection has in flight at once.
    #[arg(id = "g_zk_max_concurrency", long = "topo-zk-max-concurrency", alias = "topo_zk_max_concurrency", default_value_t = topo_zk::DEFAULT_MAX_CONCURRENCY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..), global = true)]
    pub(crate) zk_max_concurrency: usize,
}

/// The order in which a tee takes its two locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TeeLockOrder {
    /// The primary's lock, then the secondary's.
    PrimaryFirst,
    /// The secondary's lock, then the primary's.
    SecondaryFirst,
}

/// A keyspace/shard argument.
pub(crate) fn parse_keyspace_shard(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ks, shard)) if !ks.is_empty() && !shard.is_empty() && !shard.contains('/') => {
            Ok((ks.to_string(), shard.to_string()))
        }
        _ => Err(format!(
            "invalid keyspace/shard {text:?}: expected <keyspace>/<shard>"
        )),
    }
}

/// Every verb.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Register a cell. Example: topo AddCellInfo --root /vitess/zone1 --server-address toposphere.db zone1
    #[command(name = "AddCellInfo")]
    AddCellInfo {
        /// Root of the cell's topology (required).
        #[arg(long, short = 'r')]
        root: String,
        /// Address of the cell's topology server.
        #[arg(
            long = "server-address",
            short = 'a',
            alias = "server_address",
            default_value = ""
        )]
        server_address: String,
        /// The cell.
        cell: String,
    },
    /// Change a cell's address or root (creates it when absent). Example: topo UpdateCellInfo --root /r zone1
    #[command(name = "UpdateCellInfo")]
    UpdateCellInfo {
        /// New root.
        #[arg(long, short = 'r', default_value = "")]
        root: String,
        /// New server address.
        #[arg(
            long = "server-address",
            short = 'a',
            alias = "server_address",
            default_value = ""
        )]
        server_address: String,
        /// The cell.
        cell: String,
    },
    /// Delete a cell's record. Example: topo DeleteCellInfo --force zone2
    #[command(name = "DeleteCellInfo", alias = "RemoveCellInfo")]
    DeleteCellInfo {
        /// Delete even if the cell serves keyspaces or cannot be reached.
        #[arg(long, short = 'f')]
        force: bool,
        /// The cell.
        cell: String,
    },
    /// Print a cell's record. Example: topo GetCellInfo zone1
    #[command(name = "GetCellInfo")]
    GetCellInfo {
        /// The cell.
        cell: String,
    },
    /// List the cells. Example: topo GetCellInfoNames
    #[command(name = "GetCellInfoNames")]
    GetCellInfoNames,
    /// Create a cells alias. Example: topo AddCellsAlias --cells zone1,zone2 region1
    #[command(name = "AddCellsAlias")]
    AddCellsAlias {
        /// The cells of the alias (comma-separated or repeated).
        #[arg(long, short = 'c', value_delimiter = ',', required = true)]
        cells: Vec<String>,
        /// The alias.
        alias: String,
    },
    /// Replace a cells alias's cells (creates it when absent). Example: topo UpdateCellsAlias --cells zone1 region1
    #[command(name = "UpdateCellsAlias")]
    UpdateCellsAlias {
        /// The new cells.
        #[arg(long, short = 'c', value_delimiter = ',')]
        cells: Vec<String>,
        /// The alias.
        alias: String,
    },
    /// Delete a cells alias. Example: topo DeleteCellsAlias region1
    #[command(name = "DeleteCellsAlias")]
    DeleteCellsAlias {
        /// The alias.
        alias: String,
    },
    /// Print every cells alias. Example: topo GetCellsAliases
    #[command(name = "GetCellsAliases")]
    GetCellsAliases,
    /// Create a keyspace. Example: topo CreateKeyspace --durability-policy semi_sync commerce
    #[command(name = "CreateKeyspace")]
    CreateKeyspace(CreateKeyspaceArgs),
    /// Print a keyspace. Example: topo GetKeyspace commerce
    #[command(name = "GetKeyspace")]
    GetKeyspace {
        /// The keyspace.
        keyspace: String,
    },
    /// Print every keyspace. Example: topo GetKeyspaces
    #[command(name = "GetKeyspaces")]
    GetKeyspaces,
    /// Delete a keyspace. Example: topo DeleteKeyspace --recursive customer
    #[command(name = "DeleteKeyspace")]
    DeleteKeyspace {
        /// Delete its shards and tablets too.
        #[arg(long, short)]
        recursive: bool,
        /// Go on without the keyspace lock.
        #[arg(long, short)]
        force: bool,
        /// The keyspace.
        keyspace: String,
    },
    /// Print every shard of a keyspace. Example: topo FindAllShardsInKeyspace customer
    #[command(name = "FindAllShardsInKeyspace")]
    FindAllShardsInKeyspace {
        /// The keyspace.
        keyspace: String,
    },
    /// Set a keyspace's durability policy. Example: topo SetKeyspaceDurabilityPolicy --durability-policy semi_sync commerce
    #[command(name = "SetKeyspaceDurabilityPolicy")]
    SetKeyspaceDurabilityPolicy {
        /// none, semi_sync, cross_cell, ...
        #[arg(
            long = "durability-policy",
            alias = "durability_policy",
            default_value = "none"
        )]
        durability_policy: String,
        /// The keyspace.
        keyspace: String,
    },
    /// Remove a keyspace from a cell. Example: topo RemoveKeyspaceCell --recursive customer zone2
    #[command(name = "RemoveKeyspaceCell")]
    RemoveKeyspaceCell {
        /// Go on when the cell cannot be read.
        #[arg(long, short)]
        force: bool,
        /// Delete the cell's tablets of the keyspace too.
        #[arg(long, short)]
        recursive: bool,
        /// The keyspace.
        keyspace: String,
        /// The cell.
        cell: String,
    },
    /// Create a shard. Example: topo CreateShard customer/-80
    #[command(name = "CreateShard")]
    CreateShard {
        /// Succeed when the shard exists.
        #[arg(long, short = 'f')]
        force: bool,
        /// Create the keyspace when it does not exist.
        #[arg(long = "include-parent", short = 'p', alias = "include_parent")]
        include_parent: bool,
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
    },
    /// Print a shard. Example: topo GetShard customer/-80
    #[command(name = "GetShard")]
    GetShard {
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
    },
    /// Delete shards. Example: topo DeleteShards --recursive customer/-80
    #[command(name = "DeleteShards")]
    DeleteShards {
        /// Delete their tablets too.
        #[arg(long, short)]
        recursive: bool,
        /// Delete even while serving.
        #[arg(long = "even-if-serving", alias = "even_if_serving")]
        even_if_serving: bool,
        /// Go on without the shard lock.
        #[arg(long, short)]
        force: bool,
        /// <keyspace>/<shard>...
        #[arg(value_parser = parse_keyspace_shard, required = true)]
        shards: Vec<(String, String)>,
    },
    /// Remove a shard from a cell. Example: topo RemoveShardCell --recursive customer/-80 zone2
    #[command(name = "RemoveShardCell")]
    RemoveShardCell {
        /// Go on when the cell cannot be read.
        #[arg(long, short)]
        force: bool,
        /// Delete the cell's tablets of the shard too.
        #[arg(long, short)]
        recursive: bool,
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
        /// The cell.
        cell: String,
    },
    /// Print a shard's replication graph per cell. Example: topo GetShardReplication customer/-80 zone1
    #[command(name = "GetShardReplication")]
    GetShardReplication {
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
        /// Cells (default: all).
        cells: Vec<String>,
    },
    /// Add a tablet to its shard's replication graph. Example: topo ShardReplicationAdd customer/-80 zone1-100
    #[command(name = "ShardReplicationAdd")]
    ShardReplicationAdd {
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
        /// Tablet alias.
        alias: String,
    },
    /// Remove a tablet from its shard's replication graph. Example: topo ShardReplicationRemove customer/-80 zone1-100
    #[command(name = "ShardReplicationRemove")]
    ShardReplicationRemove {
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
        /// Tablet alias.
        alias: String,
    },
    /// Fix one problem of a shard's replication graph in a cell. Example: topo ShardReplicationFix zone1 customer/-80
    #[command(name = "ShardReplicationFix")]
    ShardReplicationFix {
        /// The cell.
        cell: String,
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
    },
    /// Set whether a shard's primary serves. Example: topo SetShardIsPrimaryServing customer/-80 true
    #[command(name = "SetShardIsPrimaryServing")]
    SetShardIsPrimaryServing {
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
        /// true or false
        #[arg(action = clap::ArgAction::Set)]
        serving: bool,
    },
    /// Add or remove denied tables of a tablet type. Example: topo SetShardTabletControl --denied-tables t1 customer/-80 rdonly
    #[command(name = "SetShardTabletControl")]
    SetShardTabletControl {
        /// Cells the control applies to.
        #[arg(long, short = 'c', value_delimiter = ',')]
        cells: Vec<String>,
        /// Tables to deny.
        #[arg(long = "denied-tables", alias = "denied_tables", value_delimiter = ',')]
        denied_tables: Vec<String>,
        /// Remove the tables instead.
        #[arg(long, short = 'r')]
        remove: bool,
        /// Without --denied-tables and --remove: set (or with =false clear) the shard's
        /// DisableQueryService in the cells' SrvKeyspace.
        #[arg(long = "disable-query-service", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
        disable_query_service: bool,
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
        /// Tablet type.
        tablet_type: String,
    },
    /// Add a source shard. Example: topo SourceShardAdd --tables t1 customer/-80 1 commerce/0
    #[command(name = "SourceShardAdd")]
    SourceShardAdd {
        /// Key range (hex, `start-end`).
        #[arg(long = "key-range", alias = "key_range", allow_hyphen_values = true)]
        key_range: Option<String>,
        /// Tables.
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
        /// Source uid.
        uid: i32,
        /// Source <keyspace>/<shard>.
        #[arg(value_parser = parse_keyspace_shard)]
        source: (String, String),
    },
    /// Delete a source shard. Example: topo SourceShardDelete customer/-80 1
    #[command(name = "SourceShardDelete")]
    SourceShardDelete {
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
        /// Source uid.
        uid: i32,
    },
    /// Print a tablet. Example: topo GetTablet zone1-100
    #[command(name = "GetTablet")]
    GetTablet {
        /// Tablet alias.
        alias: String,
    },
    /// List tablets. Example: topo GetTablets --keyspace customer --format awk
    #[command(name = "GetTablets")]
    GetTablets(GetTabletsArgs),
    /// Delete tablets. Example: topo DeleteTablets zone1-101 zone2-201
    #[command(name = "DeleteTablets")]
    DeleteTablets {
        /// Allow deleting a shard primary.
        #[arg(long = "allow-primary", short = 'p', alias = "allow_primary")]
        allow_primary: bool,
        /// Tablet aliases.
        #[arg(required = true)]
        aliases: Vec<String>,
    },
    /// Register a tablet (and make a PRIMARY its shard's primary). Example: topo AddTablet --keyspace customer --shard -80 --type replica zone1-101
    #[command(name = "AddTablet")]
    AddTablet(AddTabletArgs),
    /// vtctl's InitTablet, with its flags: write a tablet record, as vttablet does at start
    /// (prints nothing). Example: topo InitTablet --keyspace customer --shard -80 --hostname h1 --port 15101 zone1-101 replica
    #[command(name = "InitTablet")]
    InitTablet(InitTabletArgs),
    /// Rebuild the serving graph of keyspaces. Example: topo RebuildKeyspaceGraph customer
    #[command(name = "RebuildKeyspaceGraph")]
    RebuildKeyspaceGraph {
        /// Cells (default: all).
        #[arg(long, short = 'c', value_delimiter = ',')]
        cells: Vec<String>,
        /// Allow a partial SNAPSHOT keyspace.
        #[arg(long = "allow-partial", alias = "allow_partial")]
        allow_partial: bool,
        /// Keyspaces.
        #[arg(required = true)]
        keyspaces: Vec<String>,
    },
    /// Rebuild the serving VSchema. Example: topo RebuildVSchemaGraph
    #[command(name = "RebuildVSchemaGraph")]
    RebuildVSchemaGraph {
        /// Cells (default: all).
        #[arg(long, short = 'c', value_delimiter = ',')]
        cells: Vec<String>,
    },
    /// Print the keyspace names of cells. Example: topo GetSrvKeyspaceNames zone1
    #[command(name = "GetSrvKeyspaceNames")]
    GetSrvKeyspaceNames {
        /// Cells (default: all).
        cells: Vec<String>,
    },
    /// Print a keyspace's serving graph per cell. Example: topo GetSrvKeyspaces customer zone1
    #[command(name = "GetSrvKeyspaces")]
    GetSrvKeyspaces {
        /// The keyspace.
        keyspace: String,
        /// Cells (default: all).
        cells: Vec<String>,
    },
    /// Print a cell's serving VSchema. Example: topo GetSrvVSchema zone1
    #[command(name = "GetSrvVSchema")]
    GetSrvVSchema {
        /// The cell.
        cell: String,
    },
    /// Print the serving VSchema of cells. Example: topo GetSrvVSchemas
    #[command(name = "GetSrvVSchemas")]
    GetSrvVSchemas {
        /// Cells (default: all).
        cells: Vec<String>,
    },
    /// Delete a cell's serving VSchema. Example: topo DeleteSrvVSchema zone2
    #[command(name = "DeleteSrvVSchema")]
    DeleteSrvVSchema {
        /// The cell.
        cell: String,
    },
    /// Save a keyspace's VSchema. Example: topo ApplyVSchema --vschema '{"sharded":true}' customer
    #[command(name = "ApplyVSchema")]
    ApplyVSchema {
        /// The VSchema as JSON.
        #[arg(long, conflicts_with = "vschema_file")]
        vschema: Option<String>,
        /// A file holding the VSchema JSON.
        #[arg(long = "vschema-file", alias = "vschema_file")]
        vschema_file: Option<PathBuf>,
        /// VSchema DDL (`alter vschema …`): refused, topo has no SQL parser.
        #[arg(long)]
        sql: Option<String>,
        /// A file of VSchema DDL: refused, topo has no SQL parser.
        #[arg(long = "sql-file", alias = "sql_file")]
        sql_file: Option<PathBuf>,
        /// Cells whose SrvVSchema to rebuild (default: all).
        #[arg(long, value_delimiter = ',')]
        cells: Vec<String>,
        /// Do not rebuild the serving VSchema.
        #[arg(long = "skip-rebuild", alias = "skip_rebuild")]
        skip_rebuild: bool,
        /// Check and print, do not save.
        #[arg(long = "dry-run", alias = "dry_run")]
        dry_run: bool,
        /// The keyspace.
        keyspace: String,
    },
    /// Print a keyspace's VSchema. Example: topo GetVSchema customer
    #[command(name = "GetVSchema")]
    GetVSchema {
        /// The keyspace.
        keyspace: String,
    },
    /// Save routing rules. Example: topo ApplyRoutingRules --rules '{"rules":[]}'
    #[command(name = "ApplyRoutingRules")]
    ApplyRoutingRules(RulesArgs),
    /// Print routing rules. Example: topo GetRoutingRules
    #[command(name = "GetRoutingRules")]
    GetRoutingRules,
    /// Save shard routing rules. Example: topo ApplyShardRoutingRules --rules-file rules.json
    #[command(name = "ApplyShardRoutingRules")]
    ApplyShardRoutingRules(RulesArgs),
    /// Print shard routing rules. Example: topo GetShardRoutingRules
    #[command(name = "GetShardRoutingRules")]
    GetShardRoutingRules,
    /// Save keyspace routing rules. Example: topo ApplyKeyspaceRoutingRules --rules-file rules.json
    #[command(name = "ApplyKeyspaceRoutingRules")]
    ApplyKeyspaceRoutingRules(RulesArgs),
    /// Print keyspace routing rules. Example: topo GetKeyspaceRoutingRules
    #[command(name = "GetKeyspaceRoutingRules")]
    GetKeyspaceRoutingRules,
    /// Print mirror rules. Example: topo GetMirrorRules
    #[command(name = "GetMirrorRules")]
    GetMirrorRules,
    /// Print a topology path as vtctldclient does: `/` lists global and the cells. Example: topo GetTopologyPath /global/keyspaces
    #[command(name = "GetTopologyPath")]
    GetTopologyPath {
        /// Read this version (backends with history).
        #[arg(long)]
        version: Option<i64>,
        /// Print only the decoded data.
        #[arg(long = "data-as-json", alias = "data_as_json")]
        data_as_json: bool,
        /// `/`, `/<cell>` or `/<cell>/<path>`.
        path: String,
    },
    /// Write a local file to a topology path. Example: topo WriteTopologyPath --cell global /RoutingRules rules.pb
    #[command(name = "WriteTopologyPath")]
    WriteTopologyPath {
        /// The cell (global or a cell).
        #[arg(long, default_value = "global")]
        cell: String,
        /// Write bytes that do not decode as the record the path names.
        #[arg(long)]
        raw: bool,
        /// Topology path.
        path: String,
        /// Local file.
        file: PathBuf,
    },
    /// Check the whole topology as Vitess's Validate does, without asking tablets: each
    /// shard has one PRIMARY, the shard record's; every listed tablet has a valid record.
    /// Exit status 1 when a problem is found. Example: topo Validate
    #[command(name = "Validate")]
    Validate {
        /// Refused: pinging tablets needs a vtctld; topo reads only the topology.
        #[arg(long = "ping-tablets", short = 'p')]
        ping_tablets: bool,
    },
    /// Check one keyspace as Vitess's ValidateKeyspace does (topology checks only).
    /// Example: topo ValidateKeyspace customer
    #[command(name = "ValidateKeyspace")]
    ValidateKeyspace {
        /// Refused: pinging tablets needs a vtctld; topo reads only the topology.
        #[arg(long = "ping-tablets", short = 'p')]
        ping_tablets: bool,
        /// The keyspace.
        keyspace: String,
    },
    /// Check one shard as Vitess's ValidateShard does (topology checks only).
    /// Example: topo ValidateShard customer/-80
    #[command(name = "ValidateShard")]
    ValidateShard {
        /// Refused: pinging tablets needs a vtctld; topo reads only the topology.
        #[arg(long = "ping-tablets", short = 'p')]
        ping_tablets: bool,
        /// <keyspace>/<shard>
        #[arg(value_parser = parse_keyspace_shard)]
        shard: (String, String),
    },
    /// Print the names of N equal shards (no topology needed). Example: topo GenerateShardRanges 4
    #[command(name = "GenerateShardRanges")]
    GenerateShardRanges {
        /// The number of shards.
        #[arg(allow_hyphen_values = true)]
        num_shards: String,
    },
    /// Update a keyspace's tablet throttler configuration, in its record and every cell's
    /// SrvKeyspace. Example: topo UpdateThrottlerConfig --enable --threshold 5 customer
    #[command(name = "UpdateThrottlerConfig")]
    UpdateThrottlerConfig(UpdateThrottlerConfigArgs),
    /// Print topology files (wildcards per path element). Example: topo TopoCat --decode-proto /keyspaces/*/Keyspace
    #[command(name = "TopoCat")]
    TopoCat {
        /// The cell (global or a cell).
        #[arg(long, default_value = "global")]
        cell: String,
        /// Decode records as protobuf text.
        #[arg(long = "decode-proto", alias = "decode_proto")]
        decode_proto: bool,
        /// Decode records as JSON (one array).
        #[arg(long = "decode-proto-json", alias = "decode_proto_json")]
        decode_proto_json: bool,
        /// Print path and version.
        #[arg(long)]
        long: bool,
        /// Paths.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// List a topology directory. Example: topo TopoLs -R /keyspaces
    #[command(name = "TopoLs", alias = "ls")]
    TopoLs {
        /// The cell (global or a cell).
        #[arg(long, default_value = "global")]
        cell: String,
        /// Show type, ephemeral and version.
        #[arg(short = 'l', long)]
        long: bool,
        /// Recurse.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Directory (default /).
        #[arg(default_value = "/")]
        path: String,
    },
    /// Copy a topology file to a local file, or with --to_topo the other way. Example: topo TopoCp /keyspaces/commerce/Keyspace ks.pb
    #[command(name = "TopoCp")]
    TopoCp {
        /// The cell (global or a cell).
        #[arg(long, default_value = "global")]
        cell: String,
        /// Copy from a local file to the topology.
        #[arg(long = "to_topo", alias = "to-topo")]
        to_topo: bool,
        /// With --to_topo: write bytes that do not decode as the record the path names.
        #[arg(long)]
        raw: bool,
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Delete topology files. Example: topo TopoRm -r /keyspaces/old
    #[command(name = "TopoRm", alias = "rm")]
    TopoRm {
        /// The cell (global or a cell).
        #[arg(long, default_value = "global")]
        cell: String,
        /// Delete everything under each path (listed first, and confirmed on a terminal).
        #[arg(short = 'r', long)]
        recursive: bool,
        /// With -r: allow the root or a whole top-level directory (`/`, `/keyspaces`).
        #[arg(long)]
        force: bool,
        /// With -r: do not ask for confirmation (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Paths.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print a file's contents (raw). Example: topo cat /metadata/owner
    #[command(name = "cat")]
    Cat {
        /// The cell.
        #[arg(long, default_value = "global")]
        cell: String,
        /// Decode records by file name.
        #[arg(short = 'p', long)]
        decode: bool,
        /// Path.
        path: String,
    },
    /// Print a file's version and size. Example: topo stat /keyspaces/commerce/Keyspace
    #[command(name = "stat")]
    Stat {
        /// The cell.
        #[arg(long, default_value = "global")]
        cell: String,
        /// Path.
        path: String,
    },
    /// Create an empty file if it does not exist. Example: topo touch /metadata/marker
    #[command(name = "touch")]
    Touch {
        /// The cell.
        #[arg(long, default_value = "global")]
        cell: String,
        /// Path.
        path: String,
    },
    /// Print a file's changes until interrupted. Example: topo watch --cell zone1 /keyspaces/customer/SrvKeyspace
    #[command(name = "watch")]
    Watch {
        /// The cell.
        #[arg(long, default_value = "global")]
        cell: String,
        /// Watch every file under the path.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Path.
        path: String,
    },
    /// Wait until a file exists (or, with --deleted, is gone). Example: topo wait --timeout 30s /keyspaces/x/Keyspace
    #[command(name = "wait")]
    Wait {
        /// The cell.
        #[arg(long, default_value = "global")]
        cell: String,
        /// Wait for deletion instead.
        #[arg(long)]
        deleted: bool,
        /// Give up after this long.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
        /// Path.
        path: String,
    },
    /// Run a command while holding the lock of a global directory. Example: topo lock keyspaces/commerce -- ./migrate.sh
    ///
    /// The command runs in its own process group and dies with the lock: when `topo lock`
    /// is killed (even with SIGKILL) the group is killed; when the lock is lost the group gets
    /// SIGTERM, then SIGKILL after --kill-grace. SIGINT, SIGTERM and SIGHUP are passed on to
    /// the command. Every `topo` run inside fences its writes by the lock (TOPO_LOCK_FENCE),
    /// so a write made after the lock is gone is refused; TOPO_LOCK_FENCING_TOKEN and
    /// TOPO_LOCK_KEY (on etcd also ETCD_LOCK_KEY and ETCD_LOCK_REV) let other programs fence
    /// too. The command cannot read from the terminal (it is not in the foreground group).
    ///
    /// Exit status: the command's (128+N when it was killed by signal N); 125 when the lock
    /// was lost while it ran; 126/127 when it could not be run; 1 when the lock could not be
    /// taken.
    #[command(name = "lock")]
    Lock {
        /// How long a command gets to exit after SIGTERM when the lock is lost.
        #[arg(long = "kill-grace", alias = "kill_grace", default_value = "5s", value_parser = parse_duration)]
        kill_grace: Duration,
        /// Directory to lock (relative to the global root).
        dir: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Internal: the process that runs `topo lock`'s command (see `lock`).
    #[command(name = "__lock-supervise", hide = true)]
    LockSupervise {
        /// The process id of the `topo lock` holding the lock.
        parent: i32,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Copy a topology to another one (Vitess's topo2topo). Example: topo topo2topo --to-implementation local --to-server copy.db --to-root /vitess/global --do-keyspaces --do-shards
    #[command(name = "topo2topo")]
    Topo2Topo(Topo2TopoArgs),
    /// Write every key of the global topology and every cell to a file. Example: topo backup topo-backup.json;
    /// with --keep, into a directory: topo backup --keep 14 /var/backups/topo
    #[command(name = "backup")]
    Backup {
        /// Treat FILE as a directory (created if missing): write topo-backup-<UTC time>.json
        /// there and remove the oldest such files so that N remain.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
        keep: Option<usize>,
        /// Output file (with --keep: directory).
        file: PathBuf,
    },
    /// Restore a backup into the configured topology. Example: topo restore topo-backup.json
    #[command(name = "restore")]
    Restore {
        /// Restore into a topology that already holds data (what is there is listed, and
        /// confirmed on a terminal).
        #[arg(long)]
        force: bool,
        /// With --force: do not ask for confirmation (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Keep the cell records' server addresses from the backup (default: point every
        /// cell at the target's global server address).
        #[arg(long = "keep-cell-addresses")]
        keep_cell_addresses: bool,
        /// Leave out values over the target's size limit (listed) instead of refusing the
        /// whole restore.
        #[arg(long = "skip-too-large", alias = "skip_too_large")]
        skip_too_large: bool,
        /// Writes in flight at once.
        #[arg(long, default_value_t = toposphere::copy::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
        concurrency: usize,
        /// Backup file.
        file: PathBuf,
    },
    /// Compare two backups key for key, decoded (so backups of different backends compare;
    /// versions are ignored); exit status 1 when they differ. Example: topo diff-backups etcd.json zk.json
    #[command(name = "diff-backups")]
    DiffBackups {
        /// Ignore the cells' server addresses (they differ between two topologies).
        #[arg(long = "ignore-cell-addresses")]
        ignore_cell_addresses: bool,
        /// One backup file.
        a: PathBuf,
        /// The other.
        b: PathBuf,
    },
    /// Check that a backup file is complete and every record decodes. Example: topo verify-backup topo-backup.json
    #[command(name = "verify-backup")]
    VerifyBackup {
        /// Backup file.
        file: PathBuf,
    },
    /// Check the topology's health and Vitess's production checklist: every cell answers,
    /// connections are encrypted, the global topology and each cell run on several servers,
    /// cells sharing servers have roots of their own, the serving graph exists, a probe key
    /// round-trips, a lock can be taken, no lock is stale, and (with --backup-dir) a recent
    /// backup exists. Exit status 1 when a check fails. Example: topo doctor --format json
    #[command(name = "doctor")]
    Doctor(DoctorArgs),
    /// Build an example toposphere (cells zone1, zone2; keyspaces commerce and customer).
    /// Example: topo demo
    #[command(name = "demo")]
    Demo {
        /// Rebuild it when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Serve the live topology browser, its JSON API (/api) and Prometheus metrics
    /// (/metrics). Example: topo serve --listen 127.0.0.1:15000
    #[command(name = "serve")]
    Serve {
        /// Address to listen on (loopback unless you say otherwise).
        #[arg(long, default_value = "127.0.0.1:15000")]
        listen: std::net::SocketAddr,
        /// Allow saving files from the browser (compare-and-set on their version).
        #[arg(long = "allow-writes", alias = "allow_writes")]
        allow_writes: bool,
        /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
        #[arg(long = "tls-cert", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long = "tls-key", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// File holding the bearer token every request must carry (required off loopback).
        #[arg(long = "token-file")]
        token_file: Option<PathBuf>,
        /// Serve off loopback without TLS or token anyway, and answer requests addressed to any
        /// host name (prints a warning on every start).
        #[arg(long)]
        insecure: bool,
    },
    /// Print a shell completion script. Example: topo completion bash > /etc/bash_completion.d/topo
    #[command(name = "completion")]
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// doctor's arguments.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Locks held longer than this are stale.
    #[arg(long = "stale-after", default_value = "10m", value_parser = parse_duration)]
    pub(crate) stale_after: Duration,
    /// text, or json (one object: every check with its status, for monitoring).
    #[arg(long, value_enum, default_value_t = DoctorFormat::Text)]
    pub(crate) format: DoctorFormat,
    /// Also check that this directory holds a backup written by `backup --keep` no older
    /// than --backup-max-age.
    #[arg(long = "backup-dir")]
    pub(crate) backup_dir: Option<PathBuf>,
    /// The age at which the newest backup in --backup-dir is too old.
    #[arg(long = "backup-max-age", default_value = "25h", value_parser = parse_duration, requires = "backup_dir")]
    pub(crate) backup_max_age: Duration,
}

/// doctor's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DoctorFormat {
    /// One line a check.
    Text,
    /// One JSON object.
    Json,
}

impl Command {
    /// Verbs that only read: on the embedded default store they refuse to create it.
    pub(crate) fn is_read_only(&self) -> bool {
        use Command as C;
        matches!(
            self,
            C::GetCellInfo { .. }
                | C::GetCellInfoNames
                | C::GetCellsAliases
                | C::GetKeyspace { .. }
                | C::GetKeyspaces
                | C::FindAllShardsInKeyspace { .. }
                | C::GetShard { .. }
                | C::GetShardReplication { .. }
                | C::GetTablet { .. }
                | C::GetTablets(_)
                | C::GetSrvKeyspaceNames { .. }
                | C::GetSrvKeyspaces { .. }
                | C::GetSrvVSchema { .. }
                | C::GetSrvVSchemas { .. }
                | C::GetVSchema { .. }
                | C::GetRoutingRules
                | C::GetShardRoutingRules
                | C::GetKeyspaceRoutingRules
                | C::GetMirrorRules
                | C::GetTopologyPath { .. }
                | C::Validate { .. }
                | C::ValidateKeyspace { .. }
                | C::ValidateShard { .. }
                | C::TopoCat { .. }
                | C::TopoLs { .. }
                | C::Cat { .. }
                | C::Stat { .. }
                | C::Watch { .. }
                | C::Wait { .. }
                | C::Backup { .. }
                | C::Doctor { .. }
                | C::Serve { .. }
        )
    }

    /// Verbs that run until stopped or have a deadline of their own: --action-timeout does
    /// not apply to them.
    pub(crate) fn is_long_running(&self) -> bool {
        use Command as C;
        matches!(
            self,
            C::Serve { .. }
                | C::Watch { .. }
                | C::Wait { .. }
                | C::Lock { .. }
                | C::LockSupervise { .. }
        )
    }
}

/// CreateKeyspace's arguments.
#[derive(Debug, Args)]
pub(crate) struct CreateKeyspaceArgs {
    /// Succeed when the keyspace exists.
    #[arg(long, short = 'f')]
    pub(crate) force: bool,
    /// Do not create an empty VSchema.
    #[arg(
        long = "allow-empty-vschema",
        short = 'e',
        alias = "allow_empty_vschema"
    )]
    pub(crate) allow_empty_vschema: bool,
    /// NORMAL or SNAPSHOT.
    #[arg(long = "type", default_value = "NORMAL")]
    pub(crate) keyspace_type: String,
    /// Base keyspace of a SNAPSHOT keyspace.
    #[arg(long = "base-keyspace", alias = "base_keyspace")]
    pub(crate) base_keyspace: Option<String>,
    /// Snapshot time of a SNAPSHOT keyspace (RFC 3339).
    #[arg(long = "snapshot-timestamp", alias = "snapshot_timestamp")]
    pub(crate) snapshot_timestamp: Option<String>,
    /// Durability policy.
    #[arg(
        long = "durability-policy",
        alias = "durability_policy",
        default_value = "none"
    )]
    pub(crate) durability_policy: String,
    /// Sidecar database name.
    #[arg(
        long = "sidecar-db-name",
        alias = "sidecar_db_name",
        default_value = "_vt"
    )]
    pub(crate) sidecar_db_name: String,
    /// The keyspace.
    pub(crate) keyspace: String,
}

/// GetTablets's arguments.
#[derive(Debug, Args)]
pub(crate) struct GetTabletsArgs {
    /// Cells (default: all).
    #[arg(long = "cell", short = 'c', value_delimiter = ',')]
    pub(crate) cells: Vec<String>,
    /// Keyspace.
    #[arg(long, short = 'k')]
    pub(crate) keyspace: Option<String>,
    /// Shard (needs --keyspace). Shard names start with `-` (`-80`), so values may.
    #[arg(long, short = 's', allow_hyphen_values = true)]
    pub(crate) shard: Option<String>,
    /// Only this tablet type.
    #[arg(long = "tablet-type", alias = "tablet_type")]
    pub(crate) tablet_type: Option<String>,
    /// Only these tablets.
    #[arg(
        long = "tablet-alias",
        alias = "tablet_alias",
        short = 't',
        value_delimiter = ','
    )]
    pub(crate) tablet_aliases: Vec<String>,
    /// Fail when any cell cannot be read.
    #[arg(long)]
    pub(crate) strict: bool,
    /// json or awk.
    #[arg(long, default_value = "awk")]
    pub(crate) format: String,
}

/// AddTablet's arguments.
#[derive(Debug, Args)]
pub(crate) struct AddTabletArgs {
    /// Keyspace.
    #[arg(long)]
    pub(crate) keyspace: String,
    /// Shard (`-80` is a value, not a flag).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) shard: String,
    /// Tablet type (primary, replica, rdonly, ...).
    #[arg(long = "type", default_value = "replica")]
    pub(crate) tablet_type: String,
    /// Hostname.
    #[arg(long, default_value = "localhost")]
    pub(crate) hostname: String,
    /// vttablet port.
    #[arg(long = "port", default_value_t = 15000)]
    pub(crate) port: i32,
    /// gRPC port.
    #[arg(long = "grpc-port", default_value_t = 16000)]
    pub(crate) grpc_port: i32,
    /// MySQL port.
    #[arg(long = "mysql-port", default_value_t = 3306)]
    pub(crate) mysql_port: i32,
    /// Tags as key=value.
    #[arg(long = "tag", value_delimiter = ',')]
    pub(crate) tags: Vec<String>,
    /// Create the keyspace and shard when missing.
    #[arg(long = "create-shard-and-keyspace", alias = "parent")]
    pub(crate) create_shard_and_keyspace: bool,
    /// Replace an existing record of the same keyspace and shard.
    #[arg(long = "allow-update")]
    pub(crate) allow_update: bool,
    /// Let a PRIMARY displace the shard's primary.
    #[arg(long = "allow-primary-override")]
    pub(crate) allow_primary_override: bool,
    /// Tablet alias (`cell-uid`).
    pub(crate) alias: String,
}

/// InitTablet's arguments: vtctl's flags (`go/vt/vtctl/vtctl.go`, commandInitTablet).
#[derive(Debug, Args)]
pub(crate) struct InitTabletArgs {
    /// Overrides the name of the database the vttablet uses.
    #[arg(
        long = "db_name_override",
        alias = "db-name-override",
        default_value = ""
    )]
    pub(crate) db_name_override: String,
    /// Replace an existing tablet record of the same alias.
    #[arg(long = "allow_update", alias = "allow-update")]
    pub(crate) allow_update: bool,
    /// Let a PRIMARY be created while the shard has another primary.
    #[arg(long = "allow_master_override", aliases = ["allow-master-override", "allow_primary_override", "allow-primary-override"])]
    pub(crate) allow_master_override: bool,
    /// Create the keyspace and shard when missing.
    #[arg(long)]
    pub(crate) parent: bool,
    /// The server the tablet runs on.
    #[arg(long, default_value = "")]
    pub(crate) hostname: String,
    /// The MySQL server's host.
    #[arg(long = "mysql_host", alias = "mysql-host", default_value = "")]
    pub(crate) mysql_host: String,
    /// The MySQL port (0: none).
    #[arg(long = "mysql_port", alias = "mysql-port", default_value_t = 0)]
    pub(crate) mysql_port: i32,
    /// The vttablet port (0: none).
    #[arg(long, default_value_t = 0)]
    pub(crate) port: i32,
    /// The vttablet gRPC port (0: none).
    #[arg(long = "grpc_port", alias = "grpc-port", default_value_t = 0)]
    pub(crate) grpc_port: i32,
    /// The keyspace.
    #[arg(long, default_value = "")]
    pub(crate) keyspace: String,
    /// The shard (`-80` is a value, not a flag).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub(crate) shard: String,
    /// Tags as comma-separated key:value pairs.
    #[arg(long, value_delimiter = ',')]
    pub(crate) tags: Vec<String>,
    /// Tablet alias (`cell-uid`).
    pub(crate) alias: String,
    /// Tablet type (primary, replica, rdonly, …).
    pub(crate) tablet_type: String,
}

/// Apply*Rules arguments.
#[derive(Debug, Args)]
pub(crate) struct RulesArgs {
    /// The rules as JSON.
    #[arg(long, short = 'r', conflicts_with = "rules_file")]
    pub(crate) rules: Option<String>,
    /// A file holding the rules JSON.
    #[arg(long = "rules-file", short = 'f', alias = "rules_file")]
    pub(crate) rules_file: Option<PathBuf>,
    /// Cells whose SrvVSchema to rebuild (default: all).
    #[arg(long, short = 'c', value_delimiter = ',')]
    pub(crate) cells: Vec<String>,
    /// Do not rebuild the serving VSchema.
    #[arg(long = "skip-rebuild", alias = "skip_rebuild")]
    pub(crate) skip_rebuild: bool,
    /// Check and print, do not save.
    #[arg(long = "dry-run", short = 'd', alias = "dry_run")]
    pub(crate) dry_run: bool,
}

/// UpdateThrottlerConfig's arguments (vtctldclient's throttler.go flags for the topology).
#[derive(Debug, Args)]
pub(crate) struct UpdateThrottlerConfigArgs {
    /// Enable the throttler.
    #[arg(long)]
    pub(crate) enable: bool,
    /// Disable the throttler.
    #[arg(long)]
    pub(crate) disable: bool,
    /// Threshold of the default check (replication lag seconds; only a value above 0 is
    /// applied) or, with --custom-query, of the custom query (any value, 0 when not given).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) threshold: Option<f64>,
    /// Custom throttler check query (given, even empty, it replaces the current one).
    #[arg(long = "custom-query")]
    pub(crate) custom_query: Option<String>,
    /// /throttler/check requests behave as /throttler/check-self.
    #[arg(long = "check-as-check-self")]
    pub(crate) check_as_check_self: bool,
    /// /throttler/check requests behave as usual.
    #[arg(long = "check-as-check-shard")]
    pub(crate) check_as_check_shard: bool,
    /// Throttle this app.
    #[arg(long = "throttle-app")]
    pub(crate) throttle_app: Option<String>,
    /// Stop throttling this app.
    #[arg(long = "unthrottle-app")]
    pub(crate) unthrottle_app: Option<String>,
    /// Ratio of the throttled app's requests to refuse, 0 to 1.
    #[arg(long = "throttle-app-ratio", default_value_t = 1.0)]
    pub(crate) throttle_app_ratio: f64,
    /// How long the app stays throttled.
    #[arg(long = "throttle-app-duration", default_value = "1h", value_parser = parse_duration)]
    pub(crate) throttle_app_duration: Duration,
    /// Exempt the app from throttling instead.
    #[arg(long = "throttle-app-exempt")]
    pub(crate) throttle_app_exempt: bool,
    /// The keyspace.
    pub(crate) keyspace: String,
}

/// topo2topo's arguments (Vitess's flags, both spellings).
#[derive(Debug, Args)]
pub(crate) struct Topo2TopoArgs {
    /// Source implementation (default: the global --topo-implementation).
    #[arg(long = "from-implementation", alias = "from_implementation")]
    pub(crate) from_implementation: Option<String>,
    /// Source server address (default: the global one).
    #[arg(long = "from-server", alias = "from_server")]
    pub(crate) from_server: Option<String>,
    /// Source global root (default: the global one).
    #[arg(long = "from-root", alias = "from_root")]
    pub(crate) from_root: Option<String>,
    /// Destination implementation.
    #[arg(long = "to-implementation", alias = "to_implementation")]
    pub(crate) to_implementation: String,
    /// Destination server address.
    #[arg(long = "to-server", alias = "to_server")]
    pub(crate) to_server: String,
    /// Destination global root.
    #[arg(long = "to-root", alias = "to_root")]
    pub(crate) to_root: String,
    /// Compare instead of copying.
    #[arg(long)]
    pub(crate) compare: bool,
    /// Show what would be copied.
    #[arg(long = "dry-run", alias = "dry_run")]
    pub(crate) dry_run: bool,
    /// Leave out records over the target's size limit (listed) instead of refusing the
    /// whole copy.
    #[arg(long = "skip-too-large", alias = "skip_too_large")]
    pub(crate) skip_too_large: bool,
    /// Reads and writes in flight at once.
    #[arg(long, default_value_t = toposphere::copy::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub(crate) concurrency: usize,
    /// Copy keyspaces (and VSchemas).
    #[arg(long = "do-keyspaces", alias = "do_keyspaces")]
    pub(crate) do_keyspaces: bool,
    /// Copy shards.
    #[arg(long = "do-shards", alias = "do_shards")]
    pub(crate) do_shards: bool,
    /// Copy replication graphs.
    #[arg(long = "do-shard-replications", alias = "do_shard_replications")]
    pub(crate) do_shard_replications: bool,
    /// Copy tablets.
    #[arg(long = "do-tablets", alias = "do_tablets")]
    pub(crate) do_tablets: bool,
    /// Copy every kind of routing rules.
    #[arg(long = "do-routing-rules", alias = "do_routing_rules")]
    pub(crate) do_routing_rules: bool,
    /// Copy cells aliases.
    #[arg(long = "do-cells-aliases")]
    pub(crate) do_cells_aliases: bool,
    /// Copy the serving graph (SrvKeyspace, SrvVSchema).
    #[arg(long = "do-serving")]
    pub(crate) do_serving: bool,
    /// Copy cell records too (they hold the source's addresses; usually not wanted).
    #[arg(long = "do-cell-info")]
    pub(crate) do_cell_info: bool,
    /// Every kind above except cell records.
    #[arg(long)]
    pub(crate) all: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_shard() {
        assert_eq!(
            parse_keyspace_shard("ks/-80").unwrap(),
            ("ks".into(), "-80".into())
        );
        for bad in ["ks", "/0", "ks/", "a/b/c"] {
            assert!(parse_keyspace_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn global_flags_as_vtctldclient_spells_them() {
        let mut cli = Cli::parse_from([
            "topo",
            "--server=internal",
            "--action_timeout=5s",
            "--v=2",
            "--topo-implementation=etcd2",
            "--topo-global-server-address=e1:2379",
            "--topo-global-server-address",
            "e2:2379,e3:2379",
            "GetKeyspaces",
        ]);
        cli.resolve().unwrap();
        assert_eq!(cli.global.server_address, "e1:2379,e2:2379,e3:2379");
        assert!(!cli.global.default_store);
        assert_eq!(cli.verbose, 2);
        assert_eq!(cli.action_timeout, Duration::from_secs(5));
        let mut other = Cli::parse_from(["topo", "--server", "vtctld:15999", "GetKeyspaces"]);
        let err = other.resolve().unwrap_err();
        assert!(
            err.contains("directly") && err.contains("--topo-global-server-address"),
            "{err}"
        );
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
