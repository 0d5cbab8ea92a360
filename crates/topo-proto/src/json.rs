//! JSON and text renderings of records.
//!
//! Two JSON forms, both protojson with the original (snake_case) field names:
//! - [`JsonForm::Vtctld`]: what `vtctldclient` prints by default: enums as numbers, every
//!   field present (zero scalars, `[]`, `{}`, `null` for an unset message; a proto3
//!   `optional` field only when set), 64-bit integers as strings, bytes as base64.
//! - [`JsonForm::Pretty`]: enums by name (the number when unnamed), unpopulated fields
//!   left out (`vtctldclient --compact`, and Vitess's `DecodeContent`).
//!
//! Parsing accepts either form. Text output is the protobuf text format.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::Value;
use topo_core::TopoError;

use crate::{message_descriptor, Record, Stored};

/// Which JSON rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonForm {
    /// vtctldclient's default: enum numbers, unpopulated fields emitted.
    Vtctld,
    /// Enum names, unpopulated fields omitted.
    Pretty,
}

fn dynamic(bytes: &[u8], desc: MessageDescriptor) -> Result<DynamicMessage, TopoError> {
    let name = desc.full_name().to_string();
    DynamicMessage::decode(desc, bytes)
        .map_err(|e| TopoError::corrupt(name.clone(), format_args!("not a valid {name}: {e}")))
}

/// Renders `bytes`, a message of type `type_name` (`topodata.Shard`), as JSON.
///
/// # Errors
/// `InvalidArgument` for an unknown type; `Corrupt` when the bytes do not decode.
pub fn to_json(bytes: &[u8], type_name: &str, form: JsonForm) -> Result<Value, TopoError> {
    let desc = message_descriptor(type_name)?;
    let msg = dynamic(bytes, desc.clone())?;
    let options = match form {
        JsonForm::Vtctld => SerializeOptions::new()
            .use_proto_field_name(true)
            .use_enum_numbers(true)
            .skip_default_fields(false)
            .stringify_64_bit_integers(true),
        JsonForm::Pretty => SerializeOptions::new()
            .use_proto_field_name(true)
            .use_enum_numbers(false)
            .skip_default_fields(true)
            .stringify_64_bit_integers(true),
    };
    let mut value = msg
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| TopoError::corrupt(type_name, e))?;
    if form == JsonForm::Vtctld {
        add_null_messages(&mut value, &desc);
    }
    Ok(value)
}

/// protojson with unpopulated fields emits `null` for an unset singular message; the
/// serializer leaves such fields out, so put them in, at every depth.
fn add_null_messages(value: &mut Value, desc: &MessageDescriptor) {
    let Value::Object(map) = value else { return };
    for field in desc.fields() {
        let Kind::Message(child) = field.kind() else {
            continue;
        };
        let name = field.name();
        if field.is_map() {
            let value_desc = child.map_entry_value_field();
            if let (Kind::Message(vd), Some(Value::Object(entries))) =
                (value_desc.kind(), map.get_mut(name))
            {
                for v in entries.values_mut() {
                    add_null_messages(v, &vd);
                }
            }
        } else if field.is_list() {
            if let Some(Value::Array(items)) = map.get_mut(name) {
                for v in items {
                    add_null_messages(v, &child);
                }
            }
        } else if field.containing_oneof().is_none() {
            match map.get_mut(name) {
                Some(v) => add_null_messages(v, &child),
                None => {
                    map.insert(name.to_string(), Value::Null);
                }
            }
        }
    }
}

/// Renders a record as JSON.
pub fn record_to_json<M: Record>(record: &Stored<M>, form: JsonForm) -> Value {
    // Our own encoding always decodes.
    to_json(&record.encode(), &M::full_name(), form).unwrap_or(Value::Null)
}

/// Renders a message as JSON.
pub fn message_to_json<M: Record>(msg: &M, form: JsonForm) -> Value {
    to_json(&msg.encode_to_vec(), &M::full_name(), form).unwrap_or(Value::Null)
}

/// JSON text as vtctldclient prints it: two-space indent.
pub fn pretty_string(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Parses JSON (either form) into the bytes of a message of type `type_name`.
///
/// # Errors
/// `InvalidArgument` naming the problem (bad JSON, unknown field, wrong type).
pub fn json_to_bytes(json: &str, type_name: &str) -> Result<Vec<u8>, TopoError> {
    let desc = message_descriptor(type_name)?;
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize_with_options(desc, &mut de, &DeserializeOptions::new())
        .map_err(|e| TopoError::invalid(format!("invalid {type_name} JSON: {e}")))?;
    de.end()
        .map_err(|e| TopoError::invalid(format!("invalid {type_name} JSON: {e}")))?;
    Ok(prost::Message::encode_to_vec(&msg))
}

/// Parses JSON (either form) into a message.
///
/// # Errors
/// As [`json_to_bytes`].
pub fn from_json<M: Record>(json: &str) -> Result<M, TopoError> {
    let bytes = json_to_bytes(json, &M::full_name())?;
    M::decode(bytes.as_slice())
        .map_err(|e| TopoError::invalid(format!("invalid {} JSON: {e}", M::full_name())))
}

/// Renders `bytes` of type `type_name` in the protobuf text format.
///
/// # Errors
/// As [`to_json`].
pub fn to_text(bytes: &[u8], type_name: &str) -> Result<String, TopoError> {
    let desc = message_descriptor(type_name)?;
    Ok(dynamic(bytes, desc)?.to_text_format())
}

/// The message type stored in a topology file, chosen by its path as Vitess's
/// `DecodeContent` does: by base name, with `Rules` under `keyspace/` and every file under
/// `ExternalClusters/vitess/`.
pub fn message_type_for_path(path: &str) -> Option<&'static str> {
    let trimmed = path.trim_end_matches('/');
    let base = trimmed.rsplit('/').next().unwrap_or(trimmed);
    let parent = trimmed.rsplit('/').nth(1).unwrap_or("");
    Some(match base {
        "CellInfo" => "topodata.CellInfo",
        "CellsAlias" => "topodata.CellsAlias",
        "Keyspace" => "topodata.Keyspace",
        "Shard" => "topodata.Shard",
        "VSchema" => "vschema.Keyspace",
        "ShardReplication" => "topodata.ShardReplication",
        "Tablet" => "topodata.Tablet",
        "SrvVSchema" => "vschema.SrvVSchema",
        "SrvKeyspace" => "topodata.SrvKeyspace",
        "RoutingRules" => "vschema.RoutingRules",
        "ShardRoutingRules" => "vschema.ShardRoutingRules",
        "MirrorRules" => "vschema.MirrorRules",
        "Rules" if parent == "keyspace" => "vschema.KeyspaceRoutingRules",
        _ if trimmed.contains("/ExternalClusters/vitess/")
            || trimmed.starts_with("ExternalClusters/vitess/") =>
        {
            "topodata.ExternalVitessCluster"
        }
        _ => return None,
    })
}

/// Vitess's `DecodeContent`: the contents of the file at `path`, decoded by its name, as
/// pretty JSON (`json`) or protobuf text. A file whose name names no record type is shown as
/// text (lossy UTF-8) in text mode.
///
/// # Errors
/// In JSON mode, `InvalidArgument` for a file that holds no known record; `Corrupt` when the
/// bytes do not decode (naming `path`).
pub fn decode_content(path: &str, bytes: &[u8], json: bool) -> Result<String, TopoError> {
    let Some(type_name) = message_type_for_path(path) else {
        if json {
            return Err(TopoError::invalid(format!(
                "no record type is known for {path}"
            )));
        }
        return Ok(String::from_utf8_lossy(bytes).into_owned());
    };
    let reject = |e: TopoError| match e {
        TopoError::Corrupt { message, .. } => TopoError::corrupt(path, message),
        other => other,
    };
    if json {
        Ok(pretty_string(
            &to_json(bytes, type_name, JsonForm::Pretty).map_err(reject)?,
        ))
    } else {
        to_text(bytes, type_name).map_err(reject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topodata::{CellInfo, Shard, TabletAlias};

    #[test]
    fn file_names_pick_types() {
        assert_eq!(
            message_type_for_path("/keyspaces/ks/shards/-80/Shard"),
            Some("topodata.Shard")
        );
        assert_eq!(
            message_type_for_path("/routing_rules/keyspace/Rules"),
            Some("vschema.KeyspaceRoutingRules")
        );
        assert_eq!(message_type_for_path("/other/Rules"), None);
        assert_eq!(
            message_type_for_path("/ExternalClusters/vitess/c1"),
            Some("topodata.ExternalVitessCluster")
        );
        assert_eq!(message_type_for_path("/metadata/foo"), None);
    }

    #[test]
    fn vtctld_form_emits_everything_and_parses_back() {
        let shard = Shard {
            primary_alias: Some(TabletAlias {
                cell: "zone1".into(),
                uid: 100,
            }),
            ..Default::default()
        };
        let v = message_to_json(&shard, JsonForm::Vtctld);
        assert_eq!(v["primary_term_start_time"], Value::Null);
        assert_eq!(v["source_shards"], Value::Array(vec![]));
        assert_eq!(v["is_primary_serving"], Value::Bool(false));
        let back: Shard = from_json(&v.to_string()).unwrap();
        assert_eq!(back, shard);
        let pretty = message_to_json(&shard, JsonForm::Pretty);
        assert!(pretty.get("source_shards").is_none());
    }

    #[test]
    fn decode_content_modes() {
        let cell = CellInfo {
            server_address: "a:1".into(),
            root: "/r".into(),
        };
        let bytes = prost::Message::encode_to_vec(&cell);
        let json = decode_content("/cells/z/CellInfo", &bytes, true).unwrap();
        assert!(json.contains("\"server_address\": \"a:1\""), "{json}");
        let text = decode_content("/cells/z/CellInfo", &bytes, false).unwrap();
        assert!(text.contains("server_address"), "{text}");
        assert_eq!(
            decode_content("/metadata/k", b"hello", false).unwrap(),
            "hello"
        );
        assert!(decode_content("/metadata/k", b"hello", true).is_err());
        let err = decode_content("/cells/z/CellInfo", &[0x0a, 0xff], true).unwrap_err();
        assert!(err.to_string().contains("/cells/z/CellInfo"), "{err}");
    }

    #[test]
    fn bad_json_is_a_clear_error() {
        let err = from_json::<Shard>("{\"no_such_field\": 1}").unwrap_err();
        assert!(err.to_string().contains("topodata.Shard"), "{err}");
        assert!(from_json::<Shard>("not json").is_err());
    }
}
