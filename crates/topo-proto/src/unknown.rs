//! Unknown-field preservation on top of prost, which drops unknown fields.
//!
//! Decoding walks the wire bytes next to the message descriptors and keeps, for every
//! message occurrence, the raw bytes of the fields its schema does not know, in arrival
//! order. Encoding writes the known fields with prost and then splices each message's unknown
//! bytes after its known fields, rewriting the length prefixes of the enclosing messages:
//! the layout Go's protobuf (and so Vitess) writes.
//!
//! Elements of repeated message fields are found again by their known content, so removing
//! or inserting an element (a ShardReplication node, a source shard) does not move unknown
//! fields onto a neighbour; when the list keeps its length, an element changed in place keeps
//! its own by position. (An element both changed and moved loses them rather than giving them
//! to another element.)

use std::collections::BTreeMap;

use prost_reflect::{Kind, MessageDescriptor};

/// Where a nested message sits inside its parent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Slot {
    /// A singular message field, by number (protobuf merges repeated occurrences of it).
    Field(u32),
    /// A map entry, by field number and the entry's key (its encoded value).
    MapEntry(u32, Vec<u8>),
}

/// One element of a repeated message field that carried unknown fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ListItem {
    /// Its position among the field's elements when decoded.
    index: u32,
    /// Its known fields as prost encodes them, to find the element again.
    known: Vec<u8>,
    unknown: UnknownFields,
}

/// The elements of one repeated message field that carried unknown fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct ListField {
    /// How many elements the field had when decoded.
    len: u32,
    items: Vec<ListItem>,
}

/// The unknown fields of one message occurrence and of the messages nested in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnknownFields {
    own: Vec<u8>,
    nested: BTreeMap<Slot, UnknownFields>,
    lists: BTreeMap<u32, ListField>,
}

impl UnknownFields {
    /// True when neither this message nor any nested one carries unknown fields.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.nested.is_empty() && self.lists.is_empty()
    }

    fn merge(&mut self, other: UnknownFields) {
        self.own.extend(other.own);
        for (slot, child) in other.nested {
            self.nested.entry(slot).or_default().merge(child);
        }
        for (number, list) in other.lists {
            let mine = self.lists.entry(number).or_default();
            // A merged occurrence appends its elements after ours.
            mine.items.extend(list.items.into_iter().map(|mut item| {
                item.index += mine.len;
                item
            }));
            mine.len += list.len;
        }
    }
}

/// A wire-format problem.
pub(crate) type WireError = String;

pub(crate) fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, WireError> {
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
pub(crate) struct WireField<'a> {
    pub(crate) number: u32,
    pub(crate) wire_type: u8,
    pub(crate) whole: &'a [u8],
    pub(crate) payload: &'a [u8],
}

pub(crate) fn next_field<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<WireField<'a>, WireError> {
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
        let index = if field.is_list() {
            let n = occurrences.entry(f.number).or_default();
            *n += 1;
            *n - 1
        } else {
            0
        };
        if child.is_empty() {
            continue;
        }
        if field.is_list() {
            let known = strip(f.payload, &child_desc)?;
            unknown
                .lists
                .entry(f.number)
                .or_default()
                .items
                .push(ListItem {
                    index,
                    known,
                    unknown: child,
                });
        } else {
            let slot = if field.is_map() {
                Slot::MapEntry(f.number, map_key(f.payload)?)
            } else {
                Slot::Field(f.number)
            };
            unknown.nested.entry(slot).or_default().merge(child);
        }
    }
    for (number, list) in &mut unknown.lists {
        list.len = occurrences.get(number).copied().unwrap_or_default();
    }
    Ok(unknown)
}

/// `bytes` (a message of type `desc`) without its unknown fields, at every depth.
fn strip(bytes: &[u8], desc: &MessageDescriptor) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    while pos < bytes.len() {
        let f = next_field(bytes, &mut pos)?;
        let Some(field) = desc.get_field(f.number) else {
            continue;
        };
        match field.kind() {
            Kind::Message(child_desc) if f.wire_type == 2 => {
                write_length_delimited(f.number, &strip(f.payload, &child_desc)?, &mut out);
            }
            _ => out.extend_from_slice(f.whole),
        }
    }
    Ok(out)
}

fn write_length_delimited(number: u32, payload: &[u8], out: &mut Vec<u8>) {
    write_varint((u64::from(number) << 3) | 2, out);
    write_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// For every repeated field with kept elements, which kept element goes with each of the
/// field's occurrences in `encoded`: an element with the same known content (at the same
/// position when several match), else, when the list kept its length, the element that was
/// at the same position.
fn match_list_items<'u>(
    encoded: &[u8],
    unknown: &'u UnknownFields,
) -> Result<BTreeMap<(u32, u32), &'u UnknownFields>, WireError> {
    let mut matched = BTreeMap::new();
    if unknown.lists.is_empty() {
        return Ok(matched);
    }
    let mut payloads: BTreeMap<u32, Vec<&[u8]>> = BTreeMap::new();
    let mut pos = 0;
    while pos < encoded.len() {
        let f = next_field(encoded, &mut pos)?;
        if f.wire_type == 2 && unknown.lists.contains_key(&f.number) {
            payloads.entry(f.number).or_default().push(f.payload);
        }
    }
    for (number, list) in &unknown.lists {
        let items = &list.items;
        let current = payloads.get(number).map(Vec::as_slice).unwrap_or_default();
        let mut used = vec![false; items.len()];
        let mut assigned: Vec<Option<usize>> = vec![None; current.len()];
        for (j, payload) in current.iter().enumerate() {
            let same = |i: &usize| !used[*i] && items[*i].known == *payload;
            let found = (0..items.len())
                .filter(same)
                .find(|i| items[*i].index as usize == j)
                .or_else(|| (0..items.len()).find(same));
            if let Some(i) = found {
                used[i] = true;
                assigned[j] = Some(i);
            }
        }
        let same_len = current.len() == list.len as usize;
        for (j, slot) in assigned.iter_mut().enumerate() {
            if slot.is_none() && same_len {
                *slot = (0..items.len()).find(|i| !used[*i] && items[*i].index as usize == j);
                if let Some(i) = *slot {
                    used[i] = true;
                }
            }
        }
        for (j, slot) in assigned.into_iter().enumerate() {
            if let Some(i) = slot {
                matched.insert((*number, j as u32), &items[i].unknown);
            }
        }
    }
    Ok(matched)
}

/// Writes `unknown` into `encoded` (prost's encoding of a message of type `desc`): each
/// message's unknown bytes after its known fields.
pub(crate) fn splice(
    encoded: &[u8],
    desc: &MessageDescriptor,
    unknown: &UnknownFields,
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(encoded.len() + unknown.own.len());
    if unknown.nested.is_empty() && unknown.lists.is_empty() {
        out.extend_from_slice(encoded);
    } else {
        let list_items = match_list_items(encoded, unknown)?;
        let mut occurrences: BTreeMap<u32, u32> = BTreeMap::new();
        let mut pos = 0;
        while pos < encoded.len() {
            let f = next_field(encoded, &mut pos)?;
            let nested = desc
                .get_field(f.number)
                .and_then(|field| match field.kind() {
                    Kind::Message(child_desc) if f.wire_type == 2 => {
                        let kept = if field.is_map() {
                            map_key(f.payload)
                                .ok()
                                .and_then(|k| unknown.nested.get(&Slot::MapEntry(f.number, k)))
                        } else if field.is_list() {
                            let n = occurrences.entry(f.number).or_default();
                            *n += 1;
                            list_items.get(&(f.number, *n - 1)).copied()
                        } else {
                            unknown.nested.get(&Slot::Field(f.number))
                        };
                        kept.map(|u| (child_desc, u))
                    }
                    _ => None,
                });
            match nested {
                Some((child_desc, child_unknown)) => {
                    let payload = splice(f.payload, &child_desc, child_unknown)?;
                    write_length_delimited(f.number, &payload, &mut out);
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
