//! Reading and writing records: decode with the path in errors, keep versions, and the
//! read-modify-write loop every typed update uses.

use topo_core::{Conn, ConnExt, Fence, Result, TopoError, Version};
use topo_proto::{Record, Stored};

/// A record read from the topology, with the version it had.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<M> {
    /// The record, with any unknown fields it carried.
    pub value: Stored<M>,
    /// Its version when read.
    pub version: Version,
}

/// Reads and decodes the record at `path`.
pub(crate) async fn read<M: Record>(conn: &dyn Conn, path: &str) -> Result<Versioned<M>> {
    let (bytes, version) = conn.get(path).await?;
    Ok(Versioned {
        value: Stored::decode(&bytes, path)?,
        version,
    })
}

/// As [`read`], with `None` for a missing record.
pub(crate) async fn read_opt<M: Record>(
    conn: &dyn Conn,
    path: &str,
) -> Result<Option<Versioned<M>>> {
    match read(conn, path).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_no_node() => Ok(None),
        Err(e) => Err(e),
    }
}

/// What an update loop does when the record does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfMissing {
    /// Fail with `NoNode`.
    Fail,
    /// Start from the default record and create it.
    Create,
}

/// Read-modify-write of the record at `path` over [`ConnExt::read_modify_write`]: decode,
/// let `update` change it, write with the read version; retried only when another writer got
/// there first. `update` returning `NoUpdateNeeded` ends the loop without a write and gives
/// `Ok(None)`. With a fence every write is fenced.
pub(crate) async fn update_loop<M, F>(
    conn: &dyn Conn,
    path: &str,
    fence: Option<&Fence>,
    missing: IfMissing,
    mut update: F,
) -> Result<Option<Versioned<M>>>
where
    M: Record,
    F: FnMut(&mut Stored<M>) -> Result<()> + Send,
{
    // The value of the attempt that was written, returned with its version.
    let mut written = None;
    let version = conn
        .read_modify_write(path, fence, |current| {
            let mut value = match current {
                Some(bytes) => Stored::decode(bytes, path)?,
                None if missing == IfMissing::Create => Stored::new(M::default()),
                None => return Err(TopoError::NoNode(path.to_string())),
            };
            update(&mut value)?;
            let bytes = value.encode();
            written = Some(value);
            Ok(bytes)
        })
        .await?;
    Ok(version
        .zip(written)
        .map(|(version, value)| Versioned { value, version }))
}

/// Writes `value` at `path`: unconditionally without a version, else compare-and-set; fenced
/// when a fence is given.
pub(crate) async fn write<M: Record>(
    conn: &dyn Conn,
    path: &str,
    value: &Stored<M>,
    version: Option<&Version>,
    fence: Option<&Fence>,
) -> Result<Version> {
    let bytes = value.encode();
    match fence {
        Some(f) => conn.update_fenced(f, path, &bytes, version).await,
        None => conn.update(path, &bytes, version).await,
    }
}

/// Deletes `path`, treating a missing file as done.
pub(crate) async fn delete_if_exists(
    conn: &dyn Conn,
    path: &str,
    fence: Option<&Fence>,
) -> Result<()> {
    let r = match fence {
        Some(f) => conn.delete_fenced(f, path, None).await,
        None => conn.delete(path, None).await,
    };
    match r {
        Err(e) if e.is_no_node() => Ok(()),
        other => other,
    }
}

/// `NoUpdateNeeded` for `path`, for update callbacks that find nothing to change.
pub fn no_update_needed(path: &str) -> TopoError {
    TopoError::NoUpdateNeeded(path.to_string())
}
