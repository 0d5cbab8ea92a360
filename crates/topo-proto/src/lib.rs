//! # topo-proto
//!
//! The records Vitess keeps in its topology service, as proto3 messages with Vitess's
//! package, message and field names, numbers and types, so the bytes Toposphere writes are
//! the bytes Vitess writes, and the other way round.
//!
//! - [`topodata`], [`vschema`], [`vttime`], [`vtorcdata`], [`query`]: prost types generated
//!   from this crate's own `.proto` files (compiled with protox; no system `protoc`).
//! - [`Stored`]: a decoded record plus the unknown fields it carried, so that a record
//!   written by a newer Vitess keeps its newer fields through read-modify-write.
//! - [`json`]: JSON as `vtctldclient` prints it (and its "pretty" form), parsing back, proto
//!   text format, and [`json::decode_content`] (Vitess's `DecodeContent`).
//! - [`names`]: tablet aliases, key ranges and tablet types in their text forms.

mod text;
mod unknown;

pub mod golden;
pub mod json;
pub mod names;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use topo_core::TopoError;

pub use unknown::UnknownFields;

#[allow(missing_docs, clippy::all)]
/// Package `vttime`: time and duration.
pub mod vttime {
    include!(concat!(env!("OUT_DIR"), "/vttime.rs"));
}

#[allow(missing_docs, clippy::all)]
/// Package `vtorcdata`: VTOrc switches.
pub mod vtorcdata {
    include!(concat!(env!("OUT_DIR"), "/vtorcdata.rs"));
}

#[allow(missing_docs, clippy::all)]
/// Package `query`: the column type enum.
pub mod query {
    include!(concat!(env!("OUT_DIR"), "/query.rs"));
}

#[allow(missing_docs, clippy::all)]
/// Package `topodata`: keyspaces, shards, tablets, the replication and serving graphs,
/// cells.
pub mod topodata {
    include!(concat!(env!("OUT_DIR"), "/topodata.rs"));
}

#[allow(missing_docs, clippy::all)]
/// Package `vschema`: VSchema, routing rules, the serving VSchema.
pub mod vschema {
    include!(concat!(env!("OUT_DIR"), "/vschema.rs"));
}

/// The descriptors of every message of this crate (for reflection: JSON, text format,
/// unknown fields).
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"))[..])
            .expect("the descriptor set generated at build time decodes")
    })
}

/// The descriptor of the message called `full_name` (`topodata.Shard`).
///
/// # Errors
/// `InvalidArgument` naming the type when this crate does not define it.
pub fn message_descriptor(full_name: &str) -> Result<MessageDescriptor, TopoError> {
    descriptor_pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| TopoError::invalid(format!("unknown message type {full_name}")))
}

/// A message type of this crate: a prost message that knows its full protobuf name.
pub trait Record:
    Message + prost::Name + Default + Clone + PartialEq + Send + Sync + 'static
{
    /// The message's descriptor.
    fn descriptor() -> MessageDescriptor {
        message_descriptor(&Self::full_name()).expect("every generated type is in the pool")
    }
}

impl<M: Message + prost::Name + Default + Clone + PartialEq + Send + Sync + 'static> Record for M {}

/// A record as stored: the decoded message plus the unknown fields its bytes carried.
///
/// Derefs to the message, so fields are read and changed directly; [`Stored::encode`]
/// writes the known fields in field-number order followed by the unknown fields exactly as
/// they arrived (Go's layout), at every nesting depth.
#[derive(Clone, Default, PartialEq)]
pub struct Stored<M> {
    /// The message.
    pub msg: M,
    unknown: UnknownFields,
}

impl<M: Record> Stored<M> {
    /// A record with no unknown fields.
    pub fn new(msg: M) -> Self {
        Stored {
            msg,
            unknown: UnknownFields::default(),
        }
    }

    /// Decodes the bytes stored at `path`.
    ///
    /// # Errors
    /// [`TopoError::Corrupt`] naming `path` when the bytes are not a valid `M`.
    pub fn decode(bytes: &[u8], path: &str) -> Result<Self, TopoError> {
        let msg = M::decode(bytes).map_err(|e| {
            TopoError::corrupt(path, format_args!("not a valid {}: {e}", M::full_name()))
        })?;
        let unknown = unknown::collect(bytes, &M::descriptor()).map_err(|e| {
            TopoError::corrupt(path, format_args!("not a valid {}: {e}", M::full_name()))
        })?;
        Ok(Stored { msg, unknown })
    }

    /// The bytes to store: known fields, then the unknown fields kept from decoding.
    pub fn encode(&self) -> Vec<u8> {
        let known = self.msg.encode_to_vec();
        if self.unknown.is_empty() {
            return known;
        }
        // Splicing only fails on malformed input, and prost's own output is well-formed.
        unknown::splice(&known, &M::descriptor(), &self.unknown).unwrap_or(known)
    }

    /// The unknown fields carried from decoding.
    pub fn unknown_fields(&self) -> &UnknownFields {
        &self.unknown
    }

    /// The message, dropping unknown fields.
    pub fn into_inner(self) -> M {
        self.msg
    }
}

impl<M> Deref for Stored<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.msg
    }
}

impl<M> DerefMut for Stored<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.msg
    }
}

impl<M: fmt::Debug> fmt::Debug for Stored<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Stored");
        d.field("msg", &self.msg);
        if !self.unknown.is_empty() {
            d.field("unknown", &self.unknown);
        }
        d.finish()
    }
}

impl<M: Record> From<M> for Stored<M> {
    fn from(msg: M) -> Self {
        Stored::new(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topodata::{Shard, TabletAlias};

    #[test]
    fn garbage_never_panics() {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..5000 {
            let len = rng.random_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Ok(s) = Stored::<Shard>::decode(&bytes, "/x/Shard") {
                let _ = s.encode();
            }
            let _ = Stored::<topodata::Tablet>::decode(&bytes, "/t/Tablet");
            let _ = json::to_json(&bytes, "topodata.SrvKeyspace", json::JsonForm::Vtctld);
            let _ = json::to_text(&bytes, "topodata.Tablet");
        }
    }

    #[test]
    fn corrupt_bytes_name_the_path() {
        let err =
            Stored::<Shard>::decode(&[0x0a, 0xff], "/vitess/global/keyspaces/ks/shards/0/Shard")
                .unwrap_err();
        assert!(err.is(topo_core::ErrorKind::Corrupt));
        assert!(
            err.to_string()
                .contains("/vitess/global/keyspaces/ks/shards/0/Shard"),
            "{err}"
        );
    }

    /// A ShardReplication whose nodes are (uid, unknown bytes of the node).
    fn replication_bytes(nodes: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (uid, extra) in nodes {
            let alias = TabletAlias {
                cell: "z".into(),
                uid: *uid,
            }
            .encode_to_vec();
            let mut node = vec![0x0a, alias.len() as u8];
            node.extend_from_slice(&alias);
            node.extend_from_slice(extra);
            out.push(0x0a);
            out.push(node.len() as u8);
            out.extend_from_slice(&node);
        }
        out
    }

    #[test]
    fn unknown_fields_stay_with_their_list_element() {
        use crate::topodata::ShardReplication;
        // Field 9 of a node, varint 1 / 2 / 3.
        let (a, b, c): (&[u8], &[u8], &[u8]) = (&[0x48, 1], &[0x48, 2], &[0x48, 3]);
        let bytes = replication_bytes(&[(1, a), (2, b), (3, c)]);
        let decoded = Stored::<ShardReplication>::decode(&bytes, "/r").unwrap();
        assert_eq!(decoded.encode(), bytes);
        let uid = |s: &mut Stored<ShardReplication>, i: usize, uid: u32| {
            s.nodes[i].tablet_alias.as_mut().unwrap().uid = uid;
        };

        // Removing a node leaves each other node with its own unknown field.
        let mut s = decoded.clone();
        s.nodes.remove(0);
        assert_eq!(s.encode(), replication_bytes(&[(2, b), (3, c)]));

        // Inserting one does too; the new node has none.
        let mut s = decoded.clone();
        let first = s.nodes[0].clone();
        s.nodes.insert(0, first);
        uid(&mut s, 0, 7);
        assert_eq!(
            s.encode(),
            replication_bytes(&[(7, &[]), (1, a), (2, b), (3, c)])
        );

        // A node changed in place keeps its own, found by position.
        let mut s = decoded.clone();
        uid(&mut s, 1, 4);
        assert_eq!(s.encode(), replication_bytes(&[(1, a), (4, b), (3, c)]));

        // Changed and moved: its fields are dropped rather than given to a neighbour.
        let mut s = decoded.clone();
        s.nodes.remove(1);
        uid(&mut s, 1, 9);
        assert_eq!(s.encode(), replication_bytes(&[(1, a), (9, &[])]));
    }

    #[test]
    fn nested_unknown_fields_survive_modification() {
        // A Shard whose primary_alias carries an unknown field 9 (varint 7), plus a top-level
        // unknown field 40 (string "x").
        let alias = {
            let mut b = TabletAlias {
                cell: "z".into(),
                uid: 1,
            }
            .encode_to_vec();
            b.extend_from_slice(&[0x48, 0x07]);
            b
        };
        let mut bytes = vec![0x0a, alias.len() as u8];
        bytes.extend_from_slice(&alias);
        bytes.extend_from_slice(&[0xc2, 0x02, 0x01, b'x']);
        let mut s = Stored::<Shard>::decode(&bytes, "/s").unwrap();
        assert_eq!(
            s.encode(),
            bytes,
            "unchanged record re-encodes to the same bytes"
        );
        s.is_primary_serving = true;
        s.primary_alias.as_mut().unwrap().uid = 2;
        let again = Stored::<Shard>::decode(&s.encode(), "/s").unwrap();
        assert_eq!(again.unknown_fields(), s.unknown_fields());
        assert_eq!(again.primary_alias.as_ref().unwrap().uid, 2);
        assert!(again.is_primary_serving);
    }
}
