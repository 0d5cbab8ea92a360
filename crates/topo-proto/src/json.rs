//! JSON and text renderings of records.
//!
//! Two JSON forms, both protojson with the original (snake_case) field names:
//! - [`JsonForm::Vtctld`]: what `vtctldclient` prints by default: enums as numbers, every
//!   field present (zero scalars, `[]`, `{}`, `null` for an unset message; a proto3
//!   `optional` field only when set), 64-bit integers as strings, bytes as base64.
//! - [`JsonForm::Pretty`]: enums by name (the number when unnamed), unpopulated fields
//!   left out (`vtctldclient --compact`, and Vitess's `DecodeContent`).
//!
//! Parsing accepts either form. Text output is the protobuf text format, as Go writes it.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::Value;
use topo_core::TopoError;

use crate::{message_descriptor, Record, Stored};

/// Which JSON rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonForm {
    /// Older vtctldclient releases' default (`UseEnumNumbers`): enum numbers, unpopulated
    /// fields emitted. The golden vectors are in this form.
    Vtctld,
    /// Newer vtctldclient releases' default (`cli.DefaultMarshalOptions`): enum names,
    /// unpopulated fields emitted.
    Full,
    /// Enum names, unpopulated fields omitted.
    Pretty,
    /// Go's `protojson.Marshal` with its default options (Vitess's `topo.DecodeContent`):
    /// lowerCamelCase JSON names, enum names, unpopulated fields omitted.
    Protojson,
    /// Go's `encoding/json` of the generated Go struct, which vtctldclient uses for plain maps
    /// and slices of messages: `omitempty` on every field (zero values and unset messages
    /// left out), enums as numbers, 64-bit integers as numbers.
    Go,
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
        JsonForm::Full => SerializeOptions::new()
            .use_proto_field_name(true)
            .use_enum_numbers(false)
            .skip_default_fields(false)
            .stringify_64_bit_integers(true),
        JsonForm::Pretty => SerializeOptions::new()
            .use_proto_field_name(true)
            .use_enum_numbers(false)
            .skip_default_fields(true)
            .stringify_64_bit_integers(true),
        JsonForm::Protojson => SerializeOptions::new()
            .use_proto_field_name(false)
            .use_enum_numbers(false)
            .skip_default_fields(true)
            .stringify_64_bit_integers(true),
        JsonForm::Go => SerializeOptions::new()
            .use_proto_field_name(true)
            .use_enum_numbers(true)
            .skip_default_fields(true)
            .stringify_64_bit_integers(false),
    };
    let value = msg
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| TopoError::corrupt(type_name, e))?;
    Ok(arrange(value, &desc, form))
}

/// Puts a serialized message in protojson's layout: fields in declaration order (protojson
/// walks fields in index order; the serializer uses number order), map entries sorted by
/// key, floating-point numbers spelled as Go spells them, and, in the vtctld form, `null` for
/// every unset singular message field (the serializer leaves those out).
fn arrange(value: Value, desc: &MessageDescriptor, form: JsonForm) -> Value {
    let Value::Object(mut fields) = value else {
        return value;
    };
    let mut out = serde_json::Map::with_capacity(fields.len());
    for name in desc.descriptor_proto().field.iter().map(|f| f.name()) {
        let Some(field) = desc.get_field_by_name(name) else {
            continue;
        };
        let key = if form == JsonForm::Protojson {
            field.json_name()
        } else {
            name
        };
        let Some(v) = fields.remove(key) else {
            let unset_message = matches!(field.kind(), Kind::Message(_))
                && !field.is_list()
                && !field.is_map()
                && field.containing_oneof().is_none();
            if matches!(form, JsonForm::Vtctld | JsonForm::Full) && unset_message {
                out.insert(name.to_string(), Value::Null);
            }
            continue;
        };
        let v = match (field.kind(), v) {
            (Kind::Message(entry), Value::Object(entries)) if field.is_map() => {
                let value_kind = entry.map_entry_value_field().kind();
                let mut entries: Vec<(String, Value)> = entries.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k, arrange_value(v, &value_kind, form)))
                        .collect(),
                )
            }
            (kind, Value::Array(items)) if field.is_list() => Value::Array(
                items
                    .into_iter()
                    .map(|v| arrange_value(v, &kind, form))
                    .collect(),
            ),
            (kind, v) => arrange_value(v, &kind, form),
        };
        out.insert(key.to_string(), v);
    }
    // Anything the descriptor did not name (nothing, for a well-formed serialization) stays.
    out.extend(fields);
    Value::Object(out)
}

/// One field value, by its kind.
fn arrange_value(value: Value, kind: &Kind, form: JsonForm) -> Value {
    match (kind, value) {
        (Kind::Message(child), v) => arrange(v, child, form),
        (Kind::Double, Value::Number(n)) => go_float(n, false),
        (Kind::Float, Value::Number(n)) => go_float(n, true),
        (_, v) => v,
    }
}

/// A float as protojson writes it: integral values without a fraction (`1`, not `1.0`), and a
/// `float` field by its shortest 32-bit spelling (`0.1`, not `0.10000000149011612`).
fn go_float(n: serde_json::Number, single: bool) -> Value {
    let Some(mut f) = n.as_f64() else {
        return Value::Number(n);
    };
    if single {
        // The value came from an f32, so this cast is exact, and its shortest decimal is
        // what Go prints.
        f = format!("{}", f as f32).parse().unwrap_or(f);
    }
    // Integral values below 2^53 are exact as i64 and print without a fraction, as in Go.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let negative_zero = f == 0.0 && f.is_sign_negative();
    if f.fract() == 0.0 && f.abs() < EXACT && !negative_zero {
        return Value::Number((f as i64).into());
    }
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Number(n))
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

/// JSON text as Go's `json.MarshalIndent(v, "", "  ")` writes it: two-space indent, and
/// `<`, `>`, `&`, U+2028 and U+2029 escaped (Go escapes them for HTML safety). Those
/// characters can only occur inside strings, so escaping them in the text is exact.
pub fn go_string(value: &Value) -> String {
    let text = pretty_string(value);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
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

/// Renders `bytes` of type `type_name` in the protobuf text format as Go's
/// `prototext.Format` writes it (TopoCat `--decode_proto`), without its final newline.
///
/// # Errors
/// As [`to_json`].
pub fn to_text(bytes: &[u8], type_name: &str) -> Result<String, TopoError> {
    let desc = message_descriptor(type_name)?;
    Ok(crate::text::format(&dynamic(bytes, desc)?))
}

/// A message on one line of protobuf text, as Go's `prototext.MarshalOptions{}.Format` (and
/// so `fmt`'s `%v` of a message) writes it, without Go's random extra spaces.
pub fn message_to_text_line<M: Record>(msg: &M) -> String {
    // Our own encoding always decodes.
    to_text(&msg.encode_to_vec(), &M::full_name())
        .map(|t| crate::text::single_line(&t))
        .unwrap_or_default()
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

/// Vitess's `topo.DecodeContent` byte for byte (GetTopologyPath's `data`): one line of
/// protobuf text (`prototext.Marshal`), or with `json` one line of `protojson.Marshal`
/// (lowerCamelCase names); a file of no known type as its text, an error in JSON mode. Go
/// inserts a random extra space now and then in both (to keep callers from depending on the
/// bytes); this is the form without.
///
/// # Errors
/// As [`decode_content`].
pub fn decode_content_line(path: &str, bytes: &[u8], json: bool) -> Result<String, TopoError> {
    let Some(type_name) = message_type_for_path(path) else {
        return decode_content(path, bytes, json);
    };
    if json {
        let v = to_json(bytes, type_name, JsonForm::Protojson).map_err(|e| match e {
            TopoError::Corrupt { message, .. } => TopoError::corrupt(path, message),
            other => other,
        })?;
        Ok(serde_json::to_string(&v).unwrap_or_default())
    } else {
        Ok(crate::text::single_line(&decode_content(
            path, bytes, false,
        )?))
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
    fn fields_in_declaration_order_and_floats_as_go_spells_them() {
        let shard = Shard::default();
        let v = message_to_json(&shard, JsonForm::Vtctld);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        // primary_term_start_time (field 8) is declared second, as in Vitess.
        assert_eq!(
            keys,
            [
                "primary_alias",
                "primary_term_start_time",
                "key_range",
                "source_shards",
                "tablet_controls",
                "is_primary_serving",
                "vtorc_state"
            ]
        );
        let rules = crate::vschema::MirrorRules {
            rules: vec![
                crate::vschema::MirrorRule {
                    percent: 0.1,
                    ..Default::default()
                },
                crate::vschema::MirrorRule {
                    percent: 10.0,
                    ..Default::default()
                },
            ],
        };
        let text = pretty_string(&message_to_json(&rules, JsonForm::Pretty));
        assert!(text.contains("\"percent\": 0.1\n"), "{text}");
        assert!(text.contains("\"percent\": 10\n"), "{text}");
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
