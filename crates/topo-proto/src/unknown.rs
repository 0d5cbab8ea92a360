//! Unknown-field preservation on top of prost, which drops unknown fields.
//!
//! Decoding walks the wire bytes next to the message descriptors and keeps, for every
//! message occurrence, the raw bytes of the fields its schema does not know, in arrival
//! order. Encoding writes the known fields with prost and then splices each message's unknown
//! bytes after its known fields, rewriting the length prefixes of the enclosing messages:
//! the layout Go's protobuf (and so Vitess) writes.

use std::collections::BTreeMap;

use prost_reflect::{Kind, MessageDescriptor};

/// Where a nested message sits inside its parent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Slot {
    /// Field number and occurrence index (always 0 for a singular field, which protobuf
    /// merges when repeated on the wire).
    Field(u32, u32),
    /// A map entry, by field number and the entry's key (its encoded value).
    MapEntry(u32, Vec<u8>),
}

/// The unknown fields of one message occurrence and of the messages nested in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnknownFields {
    own: Vec<u8>,
    nested: BTreeMap<Slot, UnknownFields>,
}

impl UnknownFields {
    /// True when neither this message nor any nested one carries unknown fields.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.nested.is_empty()
    }

    fn merge(&mut self, other: UnknownFields) {
        self.own.extend(other.own);
        for (slot, child) in other.nested {
            self.nested.entry(slot).or_default().merge(child);
        }
    }
}

/// A wire-format problem.
pub(crate) type WireError = String;

fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One field on the wire: its number, wire type, the whole field's bytes and, for
/// length-delimited fields, the payload.
struct WireField<'a> {
    number: u32,
    wire_type: u8,
    whole: &'a [u8],
    payload: &'a [u8],
}

fn next_field<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<WireField<'a>, WireError> {
    let start = *pos;
    let tag = read_varint(bytes, pos)?;
    let number = u32::try_from(tag >> 3).map_err(|_| "field number out of range")?;
    if number == 0 {
        return Err("field number 0".into());
    }
    let wire_type = (tag & 7) as u8;
    let payload_start;
    match wire_type {
        0 => {
            read_varint(bytes, pos)?;
            payload_start = *pos;
        }
        1 => {
            *pos += 8;
            payload_start = *pos;
        }
        5 => {
            *pos += 4;
            payload_start = *pos;
        }
        2 => {
            let len =
                usize::try_from(read_varint(bytes, pos)?).map_err(|_| "length out of range")?;
            payload_start = *pos;
            *pos = pos.checked_add(len).ok_or("length out of range")?;
        }
        other => return Err(format!("unsupported wire type {other}")),
    }
    if *pos > bytes.len() {
        return Err("truncated field".into());
    }
    Ok(WireField {
        number,
        wire_type,
        whole: &bytes[start..*pos],
        payload: if wire_type == 2 {
            &bytes[payload_start..*pos]
        } else {
            &[]
        },
    })
}

/// The key of a map entry, as comparable bytes: the payload of a length-delimited key, the
/// varint or fixed value otherwise; an absent key is the key type's default.
fn map_key(entry: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut pos = 0;
    let mut key = Vec::new();
    while pos < entry.len() {
        let f = next_field(entry, &mut pos)?;
        if f.number == 1 {
            key = if f.wire_type == 2 {
                f.payload.to_vec()
            } else {
                // Canonical form of a scalar key: its value without the tag.
                let mut p = 0;
                let tag_len = {
                    read_varint(f.whole, &mut p)?;
                    p
                };
                let raw = &f.whole[tag_len..];
                if f.wire_type == 0 {
                    let mut q = 0;
                    read_varint(raw, &mut q)?.to_be_bytes().to_vec()
                } else {
                    raw.to_vec()
                }
            };
        }
    }
    if key.iter().all(|b| *b == 0) {
        key.clear();
    }
    Ok(key)
}

/// Collects the unknown fields of `bytes`, a message of type `desc`.
pub(crate) fn collect(bytes: &[u8], desc: &MessageDescriptor) -> Result<UnknownFields, WireError> {
    let mut unknown = UnknownFields::default();
    let mut occurrences: BTreeMap<u32, u32> = BTreeMap::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let f = next_field(bytes, &mut pos)?;
        let Some(field) = desc.get_field(f.number) else {
            unknown.own.extend_from_slice(f.whole);
            continue;
        };
        let Kind::Message(child_desc) = field.kind() else {
            continue;
        };
        if f.wire_type != 2 {
            continue;
        }
        let child = collect(f.payload, &child_desc)?;
        let slot = if field.is_map() {
            Slot::MapEntry(f.number, map_key(f.payload)?)
        } else if field.is_list() {
            let n = occurrences.entry(f.number).or_default();
            *n += 1;
            Slot::Field(f.number, *n - 1)
        } else {
            Slot::Field(f.number, 0)
        };
        if !child.is_empty() {
            unknown.nested.entry(slot).or_default().merge(child);
        }
    }
    Ok(unknown)
}

/// Writes `unknown` into `encoded` (prost's encoding of a message of type `desc`): each
/// message's unknown bytes after its known fields.
pub(crate) fn splice(
    encoded: &[u8],
    desc: &MessageDescriptor,
    unknown: &UnknownFields,
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(encoded.len() + unknown.own.len());
    if unknown.nested.is_empty() {
        out.extend_from_slice(encoded);
    } else {
        let mut occurrences: BTreeMap<u32, u32> = BTreeMap::new();
        let mut pos = 0;
        while pos < encoded.len() {
            let f = next_field(encoded, &mut pos)?;
            let nested = desc
                .get_field(f.number)
                .and_then(|field| match field.kind() {
                    Kind::Message(child_desc) if f.wire_type == 2 => {
                        let slot = if field.is_map() {
                            map_key(f.payload).ok().map(|k| Slot::MapEntry(f.number, k))
                        } else if field.is_list() {
                            let n = occurrences.entry(f.number).or_default();
                            *n += 1;
                            Some(Slot::Field(f.number, *n - 1))
                        } else {
                            Some(Slot::Field(f.number, 0))
                        };
                        slot.and_then(|s| unknown.nested.get(&s))
                            .map(|u| (child_desc, u))
                    }
                    _ => None,
                });
            match nested {
                Some((child_desc, child_unknown)) => {
                    let payload = splice(f.payload, &child_desc, child_unknown)?;
                    write_varint((u64::from(f.number) << 3) | 2, &mut out);
                    write_varint(payload.len() as u64, &mut out);
                    out.extend_from_slice(&payload);
                }
                None => out.extend_from_slice(f.whole),
            }
        }
    }
    out.extend_from_slice(&unknown.own);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_truncation_is_an_error() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            let mut buf = Vec::new();
            write_varint(v, &mut buf);
            let mut pos = 0;
            assert_eq!(read_varint(&buf, &mut pos).unwrap(), v);
            assert_eq!(pos, buf.len());
        }
        let mut pos = 0;
        assert!(read_varint(&[0x80, 0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(next_field(&[0x0a, 0x05, 0x01], &mut pos).is_err());
    }
}
