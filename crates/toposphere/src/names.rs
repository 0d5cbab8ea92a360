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

/// The names of `shards` shards of (nearly) equal size covering the whole key range, as
/// Vitess's `key.GenerateShardRanges` spells them: two hex digits per bound up to 256 shards,
/// four up to 65536, boundaries rounded down from the exact fractions.
///
/// # Errors
/// `InvalidArgument` (with Vitess's text) for zero, negative, or over 65536 shards.
pub fn generate_shard_ranges(shards: i64) -> Result<Vec<String>> {
    let (width, max) = match shards {
        i64::MIN..=0 => return Err(TopoError::invalid("shards must be greater than zero")),
        1..=256 => (2, 256u32),
        257..=65536 => (4, 65536u32),
        _ => {
            return Err(TopoError::invalid(
                "this function does not support more than 65336 shards in a single keyspace",
            ))
        }
    };
    let bound = |v: u32, edge: u32| {
        if v == edge {
            String::new()
        } else {
            format!("{v:0width$x}")
        }
    };
    let size = f64::from(max) / shards as f64;
    let mut start = 0u32;
    Ok((1..=shards)
        .map(|i| {
            // Truncation toward zero, as Go's int(float64) does.
            let end = (i as f64 * size) as u32;
            let name = format!("{}-{}", bound(start, 0), bound(end, max));
            start = end;
            name
        })
        .collect())
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

    #[test]
    fn shard_ranges_as_vitess_generates_them() {
        assert_eq!(generate_shard_ranges(1).unwrap(), ["-"]);
        assert_eq!(generate_shard_ranges(2).unwrap(), ["-80", "80-"]);
        assert_eq!(generate_shard_ranges(3).unwrap(), ["-55", "55-aa", "aa-"]);
        assert_eq!(generate_shard_ranges(512).unwrap()[1], "0080-0100");
        assert!(generate_shard_ranges(0).is_err());
        assert!(generate_shard_ranges(65537).is_err());
    }
}
