//! Where each record lives, relative to a cell's root (Vitess's layout, spec §2.3).

/// `cells/<cell>/CellInfo` (global).
pub fn cell_info(cell: &str) -> String {
    format!("cells/{cell}/CellInfo")
}

/// `cells_aliases/<alias>/CellsAlias` (global).
pub fn cells_alias(alias: &str) -> String {
    format!("cells_aliases/{alias}/CellsAlias")
}

/// `keyspaces/<ks>`: the keyspace directory, also the keyspace lock's directory.
pub fn keyspace_dir(ks: &str) -> String {
    format!("keyspaces/{ks}")
}

/// `keyspaces/<ks>/Keyspace` (global).
pub fn keyspace(ks: &str) -> String {
    format!("keyspaces/{ks}/Keyspace")
}

/// `keyspaces/<ks>/VSchema` (global).
pub fn vschema(ks: &str) -> String {
    format!("keyspaces/{ks}/VSchema")
}

/// `keyspaces/<ks>/shards`: the directory of a keyspace's shards.
pub fn shards_dir(ks: &str) -> String {
    format!("keyspaces/{ks}/shards")
}

/// `keyspaces/<ks>/shards/<shard>`: a shard's directory, also the shard lock's directory.
pub fn shard_dir(ks: &str, shard: &str) -> String {
    format!("keyspaces/{ks}/shards/{shard}")
}

/// `keyspaces/<ks>/shards/<shard>/Shard` (global).
pub fn shard(ks: &str, shard: &str) -> String {
    format!("keyspaces/{ks}/shards/{shard}/Shard")
}

/// `keyspaces/<ks>/shards/<shard>/ShardReplication` (cell).
pub fn shard_replication(ks: &str, shard: &str) -> String {
    format!("keyspaces/{ks}/shards/{shard}/ShardReplication")
}

/// `tablets`: the directory of a cell's tablets.
pub const TABLETS_DIR: &str = "tablets";

/// `tablets/<alias>/Tablet` (cell).
pub fn tablet(alias: &str) -> String {
    format!("tablets/{alias}/Tablet")
}

/// `keyspaces/<ks>/SrvKeyspace` (cell).
pub fn srv_keyspace(ks: &str) -> String {
    format!("keyspaces/{ks}/SrvKeyspace")
}

/// `SrvVSchema` (cell root).
pub const SRV_VSCHEMA: &str = "SrvVSchema";
/// `RoutingRules` (global root).
pub const ROUTING_RULES: &str = "RoutingRules";
/// `ShardRoutingRules` (global root).
pub const SHARD_ROUTING_RULES: &str = "ShardRoutingRules";
/// `MirrorRules` (global root).
pub const MIRROR_RULES: &str = "MirrorRules";
/// `routing_rules/keyspace/Rules` (global).
pub const KEYSPACE_ROUTING_RULES: &str = "routing_rules/keyspace/Rules";
/// `routing_rules`: the routing-rules lock's directory.
pub const ROUTING_RULES_LOCK_DIR: &str = "routing_rules";

/// `metadata/<key>` (global).
pub fn metadata(key: &str) -> String {
    format!("metadata/{key}")
}

/// `ExternalClusters/vitess/<name>` (global).
pub fn external_cluster(name: &str) -> String {
    format!("ExternalClusters/vitess/{name}")
}

/// `internal/named_locks/<name>`: a named lock's directory.
pub fn named_lock(name: &str) -> String {
    format!("internal/named_locks/{name}")
}
