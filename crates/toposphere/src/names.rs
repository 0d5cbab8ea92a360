//! Name validation (Vitess's `ValidateObjectName` and `ValidateShardName`, spec §3.1), so a
//! `/`, `..` or NUL in a name never reaches a backend (CVE-2023-29194/29195).

use topo_core::{Result, TopoError};
use topo_proto::names::parse_key_range;
use topo_proto::topodata::KeyRange;

/// The longest keyspace or shard name.
pub const MAX_NAME_LENGTH: usize = 64;

/// Checks a keyspace or shard name: 1 to 64 characters of `[A-Za-z0-9_-]`.
///
/// # Errors
/// `InvalidArgument`: `empty name`, `name <n> is too long`, or `invalid character <c> in
/// name <n>`.
pub fn validate_object_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(TopoError::invalid("empty name"));
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(TopoError::invalid(format!("name {name} is too long")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(TopoError::invalid(format!(
            "invalid character {c:?} in name {name:?}"
        )));
    }
    Ok(())
}

/// Checks a shard name and returns its canonical (lower-case) form and key range: no `-`
/// means a non-range shard (`0`, no key range); `-` alone is the full range; otherwise
/// exactly one `-` between hex bounds, the end above the start.
///
/// # Errors
/// `InvalidArgument` as [`validate_object_name`] or for a bad key range.
pub fn validate_shard_name(shard: &str) -> Result<(String, Option<KeyRange>)> {
    validate_object_name(shard)?;
    if !shard.contains('-') {
        return Ok((shard.to_string(), None));
    }
    let kr = parse_key_range(shard)?;
    Ok((shard.to_ascii_lowercase(), Some(kr)))
}

/// Checks a cell or alias name: non-empty, at most 64 characters of `[A-Za-z0-9_.-]`,
/// and not `.` or `..`.
///
/// # Errors
/// `InvalidArgument` naming the cell.
pub fn validate_cell_name(cell: &str) -> Result<()> {
    let ok_chars = cell
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if cell.is_empty() || cell.len() > MAX_NAME_LENGTH || !ok_chars || cell == "." || cell == ".." {
        return Err(TopoError::invalid(format!(
            "invalid cell name {cell:?}: use 1 to 64 characters of [A-Za-z0-9_.-]"
        )));
    }
    Ok(())
}

/// Checks a name used as one path element (metadata keys, lock names, election names,
/// external cluster names): non-empty, no `/`, no NUL, not `.` or `..`.
///
/// # Errors
/// `InvalidArgument` naming `what` and the name.
pub fn validate_path_element(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.contains('\0') || name == "." || name == ".." {
        return Err(TopoError::invalid(format!("invalid {what} {name:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        assert!(validate_object_name("commerce").is_ok());
        assert!(validate_object_name("a_b-c9").is_ok());
        assert_eq!(
            validate_object_name("").unwrap_err().to_string(),
            "invalid argument: empty name"
        );
        assert!(validate_object_name(&"x".repeat(65))
            .unwrap_err()
            .to_string()
            .contains("too long"));
        for bad in ["a/b", "..", "a.b", "a\0b", "ks name", "../global"] {
            let err = validate_object_name(bad).unwrap_err();
            assert!(
                err.to_string().contains("invalid character"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn shard_names() {
        assert_eq!(validate_shard_name("0").unwrap(), ("0".to_string(), None));
        let (name, kr) = validate_shard_name("80-C0").unwrap();
        assert_eq!(name, "80-c0");
        assert_eq!(kr.unwrap().start, vec![0x80]);
        let (_, full) = validate_shard_name("-").unwrap();
        assert_eq!(full, Some(KeyRange::default()));
        for bad in ["foo-bar", "a/b", "80-40", "-80-", ""] {
            assert!(validate_shard_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cells_and_elements() {
        assert!(validate_cell_name("zone1").is_ok());
        assert!(validate_cell_name("us-east.1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(validate_cell_name(bad).is_err(), "{bad}");
        }
        assert!(validate_path_element("metadata key", "k1").is_ok());
        assert!(validate_path_element("metadata key", "../x").is_err());
    }
}
