//! Values that cross the [`crate::Conn`] boundary: versions, directory entries, list items,
//! watch data and fences.

use std::fmt;

/// The version of a stored file: opaque, comparable, printable.
///
/// Each backend fills it from its own notion of version (etcd: the key's ModRevision,
/// ZooKeeper: `stat.version`, memory and local: a store-wide counter). Only backends
/// construct versions; callers get them from reads and writes and hand them back for a
/// compare-and-set. A version seen in a watch event is the same kind as one from `get`, so it
/// works as the expected version of an update.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(i64);

impl Version {
    /// Wraps a backend's raw version number. For backend implementations and for parsing a
    /// version a user typed (`GetTopologyPath --version`).
    pub const fn new(raw: i64) -> Self {
        Version(raw)
    }

    /// The backend's raw version number.
    pub const fn raw(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.0)
    }
}

/// Whether a directory entry is a directory or a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DirEntryType {
    /// A directory (Vitess's zero value: names-only listings report every entry as this).
    #[default]
    Directory,
    /// A file.
    File,
}

/// One child in a [`crate::Conn::list_dir`] result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DirEntry {
    /// The child's name (one path element).
    pub name: String,
    /// Directory or file; only filled by full listings.
    pub entry_type: DirEntryType,
    /// True when the entry holds only data not written through the file API (lock and
    /// election entries); only filled by full listings.
    pub ephemeral: bool,
}

impl DirEntry {
    /// A names-only entry.
    pub fn name_only(name: impl Into<String>) -> Self {
        DirEntry {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// The children of a directory in a store of flat keys (etcd, memory, local): the first
/// path element after `prefix` of every key, a directory when more elements follow it,
/// ephemeral when every key below it is; sorted by name (Vitess's `ListDir` emulation).
/// `keys` yields each key with whether it is ephemeral; keys not under `prefix` are
/// ignored. With `full == false` only names are filled.
pub fn dir_entries<'a>(
    prefix: &str,
    keys: impl IntoIterator<Item = (&'a str, bool)>,
    full: bool,
) -> Vec<DirEntry> {
    let mut children: std::collections::BTreeMap<&str, (bool, bool)> =
        std::collections::BTreeMap::new();
    for (key, ephemeral) in keys {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let (name, is_dir) = crate::path::first_element(rest);
        if name.is_empty() {
            continue;
        }
        let slot = children.entry(name).or_insert((false, true));
        slot.0 |= is_dir;
        slot.1 &= ephemeral;
    }
    children
        .into_iter()
        .map(|(name, (is_dir, ephemeral))| {
            if full {
                DirEntry {
                    name: name.to_string(),
                    entry_type: if is_dir {
                        DirEntryType::Directory
                    } else {
                        DirEntryType::File
                    },
                    ephemeral,
                }
            } else {
                DirEntry::name_only(name)
            }
        })
        .collect()
}

/// One file returned by [`crate::Conn::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvInfo {
    /// The file's path relative to the connection's root, in canonical form (`/a/b/file`).
    pub key: String,
    /// The file's contents.
    pub value: Vec<u8>,
    /// The file's version.
    pub version: Version,
}

/// A file's contents and version, as read by `get` or delivered by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchData {
    /// The contents.
    pub contents: Vec<u8>,
    /// The version the contents have.
    pub version: Version,
}

/// One item of a recursive watch: a file under the watched prefix changed or went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecursiveChange {
    /// The file's path relative to the connection's root (`/keyspaces/ks/SrvKeyspace`).
    pub path: String,
    /// The new contents and version, or `None` when the file was deleted. A deletion does
    /// not end a recursive watch.
    pub data: Option<WatchData>,
}

/// Proof that a lock was held, for fenced writes.
///
/// A fence names the lock entry and its fencing token. A backend accepts a fenced write only
/// while that very entry still exists, checked atomically with the write, so a holder that
/// lost its lock (lease expired, session expired, released) cannot overwrite the work of the
/// next holder. Fences are made by backends from the lock they granted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    dir: String,
    key: String,
    token: u64,
}

impl Fence {
    /// A fence for the lock on `dir` (relative path), whose backend entry is `key` (the
    /// backend's own key or node path) and whose fencing token is `token`. For backend
    /// implementations.
    pub fn new(dir: impl Into<String>, key: impl Into<String>, token: u64) -> Self {
        Fence {
            dir: dir.into(),
            key: key.into(),
            token,
        }
    }

    /// The locked directory, relative to the connection's root.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The backend's key or node path of the lock entry.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: strictly larger for each later holder of the same directory.
    pub fn token(&self) -> u64 {
        self.token
    }
}

/// The TLS files of a backend's client (Vitess's `--topo-etcd-tls-*` and `--topo-zk-tls-*`
/// flags); none set means plain TCP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) to verify the servers with; alone, it enables server-authenticated
    /// TLS.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate for mutual TLS, with `key`.
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key.
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// Whether any TLS file is set (so connections use TLS).
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}
