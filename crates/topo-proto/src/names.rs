//! Text forms of tablet aliases, key ranges and tablet types, as Vitess writes and parses
//! them.

use std::cmp::Ordering;
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use topo_core::TopoError;

use crate::topodata::{KeyRange, TabletAlias, TabletType};

/// `<cell>-<uid zero-padded to 10 digits>`, e.g. `zone1-0000000100`.
pub fn alias_string(alias: &TabletAlias) -> String {
    format!("{}-{:010}", alias.cell, alias.uid)
}

/// Parses a tablet alias (`zone1-100` or `zone1-0000000100`).
///
/// # Errors
/// `InvalidArgument` naming the text when it is not `<cell>-<uid>` with a valid cell and a
/// uid that fits in 32 bits.
pub fn parse_alias(text: &str) -> Result<TabletAlias, TopoError> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"^([-_.a-zA-Z0-9]+)-([0-9]+)$").expect("valid regex"));
    let caps = re.captures(text).ok_or_else(|| {
        TopoError::invalid(format!(
            "invalid tablet alias {text:?}: expected <cell>-<uid>"
        ))
    })?;
    let uid = caps[2].parse::<u32>().map_err(|_| {
        TopoError::invalid(format!("invalid tablet alias {text:?}: uid out of range"))
    })?;
    Ok(TabletAlias {
        cell: caps[1].to_string(),
        uid,
    })
}

/// Orders aliases by cell, then uid (Vitess's sort order for alias lists).
pub fn alias_cmp(a: &TabletAlias, b: &TabletAlias) -> Ordering {
    a.cell.cmp(&b.cell).then(a.uid.cmp(&b.uid))
}

/// The text form of a key range: `hex(start)-hex(end)`; the full range is `-`.
pub fn key_range_string(kr: Option<&KeyRange>) -> String {
    match kr {
        None => "-".to_string(),
        Some(kr) => format!("{}-{}", hex::encode(&kr.start), hex::encode(&kr.end)),
    }
}

/// Parses the key-range part of a shard name: `-80` → [ , 0x80), `80-` → [0x80, ), `-` →
/// the full range (a present, empty key range). Hex is case-insensitive.
///
/// # Errors
/// `InvalidArgument` for more than one `-`, bad hex, or an end not above the start.
pub fn parse_key_range(text: &str) -> Result<KeyRange, TopoError> {
    let mut parts = text.split('-');
    let (start, end) = match (parts.next(), parts.next(), parts.next()) {
        (Some(s), Some(e), None) => (s, e),
        _ => {
            return Err(TopoError::invalid(format!(
                "invalid shardId, can only contain one '-': {text}"
            )))
        }
    };
    let decode = |h: &str| {
        hex::decode(h).map_err(|_| {
            TopoError::invalid(format!("invalid key range {text:?}: {h:?} is not hex"))
        })
    };
    let kr = KeyRange {
        start: decode(start)?,
        end: decode(end)?,
    };
    if !kr.end.is_empty() && kr.start >= kr.end {
        return Err(TopoError::invalid(format!(
            "out of order keys: {} is not strictly smaller than {}",
            hex::encode(&kr.start),
            hex::encode(&kr.end)
        )));
    }
    Ok(kr)
}

/// True when `a` and `b` share any key (absent ranges cover everything).
pub fn key_ranges_intersect(a: Option<&KeyRange>, b: Option<&KeyRange>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return true;
    };
    let a_before_b = !a.end.is_empty() && a.end <= b.start;
    let b_before_a = !b.end.is_empty() && b.end <= a.start;
    !(a_before_b || b_before_a)
}

/// True when `kr` starts at the minimum key.
pub fn key_range_starts_at_min(kr: &KeyRange) -> bool {
    kr.start.iter().all(|b| *b == 0)
}

/// Parses a tablet type by name, case-insensitively, accepting Vitess's aliases `MASTER`
/// (PRIMARY) and `BATCH` (RDONLY).
///
/// # Errors
/// `InvalidArgument` naming the text.
pub fn parse_tablet_type(text: &str) -> Result<TabletType, TopoError> {
    let upper = text.to_ascii_uppercase();
    let canonical = match upper.as_str() {
        "MASTER" => "PRIMARY",
        "BATCH" => "RDONLY",
        other => other,
    };
    TabletType::from_str_name(canonical)
        .ok_or_else(|| TopoError::invalid(format!("unknown TabletType {text}")))
}

/// The canonical name of a tablet type (`PRIMARY`, never `MASTER`).
pub fn tablet_type_name(t: TabletType) -> &'static str {
    t.as_str_name()
}

/// A tablet alias in its text form, for `Display` contexts.
#[derive(Debug)]
pub struct AliasDisplay<'a>(pub &'a TabletAlias);

impl fmt::Display for AliasDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&alias_string(self.0))
    }
}

/// A string quoted as Go's `%q` writes it (`"x \"y\""`), with the text format's escapes for
/// control characters: vtctldclient's awk tag values.
pub fn go_quote(text: &str) -> String {
    crate::text::go_quote(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        let a = parse_alias("zone1-100").unwrap();
        assert_eq!(alias_string(&a), "zone1-0000000100");
        assert_eq!(parse_alias("zone1-0000000100").unwrap(), a);
        assert_eq!(parse_alias("us-east.1_a-7").unwrap().cell, "us-east.1_a");
        for bad in ["zone1", "zone1-", "-100", "zone1-99999999999", "zo/ne-1"] {
            assert!(parse_alias(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_ranges() {
        let kr = parse_key_range("-80").unwrap();
        assert!(kr.start.is_empty());
        assert_eq!(kr.end, vec![0x80]);
        assert_eq!(key_range_string(Some(&kr)), "-80");
        assert_eq!(key_range_string(Some(&parse_key_range("-").unwrap())), "-");
        assert_eq!(parse_key_range("A0-C0").unwrap().start, vec![0xa0]);
        assert!(parse_key_range("80-40").is_err());
        assert!(parse_key_range("80-80").is_err());
        assert!(parse_key_range("zz-").is_err());
        assert!(parse_key_range("1-2-3").is_err());
        let lo = parse_key_range("-80").unwrap();
        let hi = parse_key_range("80-").unwrap();
        assert!(!key_ranges_intersect(Some(&lo), Some(&hi)));
        assert!(key_ranges_intersect(
            Some(&lo),
            Some(&parse_key_range("40-c0").unwrap())
        ));
        assert!(key_ranges_intersect(None, Some(&hi)));
    }

    #[test]
    fn tablet_types() {
        assert_eq!(parse_tablet_type("replica").unwrap(), TabletType::Replica);
        assert_eq!(parse_tablet_type("MASTER").unwrap(), TabletType::Primary);
        assert_eq!(parse_tablet_type("batch").unwrap(), TabletType::Rdonly);
        assert!(parse_tablet_type("leader").is_err());
        assert_eq!(tablet_type_name(TabletType::Primary), "PRIMARY");
    }
}
