//! The protobuf text format as Go's `prototext.Format` writes it (Vitess's `TopoCat
//! --decode_proto`): one field per line, two-space indent, `name: {` for messages, fields in
//! declaration order, map entries sorted by key with both `key` and `value`, strings escaped
//! the Go way (`\x80`, not octal), floats in Go's shortest `%g` spelling, and unknown fields
//! last, by number.

use std::borrow::Cow;
use std::fmt::Write;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};

use crate::unknown::{next_field, read_varint};

/// Formats `msg` in the multiline text format, without the final newline Go adds (callers
/// print it as a line).
pub(crate) fn format(msg: &DynamicMessage) -> String {
    let mut out = String::new();
    write_message(msg, 0, &mut out);
    if out.ends_with('\n') {
        out.pop();
    }
    out
}

/// The multiline text of [`format`] on one line, as Go's `prototext.Marshal` writes it:
/// `name:value` fields separated by a space, messages as `name:{…}`.
pub(crate) fn single_line(multiline: &str) -> String {
    let mut out = String::new();
    for line in multiline.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let opens = out.ends_with('{');
        if line == "}" {
            out.push('}');
            continue;
        }
        if !out.is_empty() && !opens {
            out.push(' ');
        }
        match line.strip_suffix(" {") {
            Some(name) => {
                out.push_str(name.trim_end_matches(':'));
                out.push_str(":{");
            }
            None => match line.split_once(": ") {
                Some((name, value)) => {
                    out.push_str(name);
                    out.push(':');
                    out.push_str(value);
                }
                None => out.push_str(line),
            },
        }
    }
    out
}

fn indent(depth: usize, out: &mut String) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn write_message(msg: &DynamicMessage, depth: usize, out: &mut String) {
    let desc = msg.descriptor();
    let names = desc.descriptor_proto().field.iter().map(|f| f.name());
    for field in names.filter_map(|n| desc.get_field_by_name(n)) {
        if !msg.has_field(&field) {
            continue;
        }
        write_field(&field, &msg.get_field(&field), depth, out);
    }
    let mut unknown = Vec::new();
    for field in msg.unknown_fields() {
        field.encode(&mut unknown);
    }
    write_unknown(&unknown, depth, out);
}

fn write_field(field: &FieldDescriptor, value: &Value, depth: usize, out: &mut String) {
    let name = field.name();
    match value {
        Value::List(items) => {
            for item in items {
                write_single(name, item, &field.kind(), depth, out);
            }
        }
        Value::Map(entries) => {
            let Kind::Message(entry) = field.kind() else {
                return;
            };
            let key_kind = entry.map_entry_key_field().kind();
            let value_kind = entry.map_entry_value_field().kind();
            let mut sorted: Vec<(&MapKey, &Value)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            for (key, value) in sorted {
                indent(depth, out);
                out.push_str(name);
                out.push_str(": {\n");
                write_single("key", &Value::from(key.clone()), &key_kind, depth + 1, out);
                write_single("value", value, &value_kind, depth + 1, out);
                indent(depth, out);
                out.push_str("}\n");
            }
        }
        single => write_single(name, single, &field.kind(), depth, out),
    }
}

fn write_single(name: &str, value: &Value, kind: &Kind, depth: usize, out: &mut String) {
    indent(depth, out);
    out.push_str(name);
    out.push_str(": ");
    match value {
        Value::Message(m) => {
            let mut body = String::new();
            write_message(m, depth + 1, &mut body);
            if body.is_empty() {
                out.push_str("{}\n");
            } else {
                out.push_str("{\n");
                out.push_str(&body);
                indent(depth, out);
                out.push_str("}\n");
            }
            return;
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::I32(v) => out.push_str(&v.to_string()),
        Value::I64(v) => out.push_str(&v.to_string()),
        Value::U32(v) => out.push_str(&v.to_string()),
        Value::U64(v) => out.push_str(&v.to_string()),
        Value::F32(v) => out.push_str(&go_g(&format!("{v:e}"), v.is_nan(), v.is_infinite())),
        Value::F64(v) => out.push_str(&go_g(&format!("{v:e}"), v.is_nan(), v.is_infinite())),
        Value::String(s) => quote(s.as_bytes(), out),
        Value::Bytes(b) => quote(b, out),
        Value::EnumNumber(n) => {
            let named = match kind {
                Kind::Enum(e) => e.get_value(*n).map(|v| v.name().to_string()),
                _ => None,
            };
            out.push_str(&named.unwrap_or_else(|| n.to_string()));
        }
        // Lists and maps never nest directly in protobuf.
        Value::List(_) | Value::Map(_) => {}
    }
    out.push('\n');
}

/// Unknown fields as Go prints them: the number as the name, varints in decimal, fixed-size
/// values in hex, length-delimited ones as strings.
fn write_unknown(mut bytes: &[u8], depth: usize, out: &mut String) {
    while !bytes.is_empty() {
        let mut pos = 0;
        // Groups are the only fields the walker refuses; Vitess never writes them.
        let Ok(field) = next_field(bytes, &mut pos) else {
            return;
        };
        indent(depth, out);
        let _ = write!(out, "{}: ", field.number);
        let mut tag_len = 0;
        let _ = read_varint(field.whole, &mut tag_len);
        let raw = &field.whole[tag_len..];
        match field.wire_type {
            0 => {
                let mut p = 0;
                let _ = write!(out, "{}", read_varint(raw, &mut p).unwrap_or_default());
            }
            1 | 5 => {
                let mut le = [0u8; 8];
                le[..raw.len()].copy_from_slice(raw);
                let _ = write!(out, "0x{:x}", u64::from_le_bytes(le));
            }
            _ => quote(field.payload, out),
        }
        out.push('\n');
        bytes = &bytes[pos..];
    }
}

/// `text` quoted as Go quotes a string in the text format; also what `fmt`'s `%q` writes for
/// printable text and the usual escapes (vtctldclient's awk tags).
pub(crate) fn go_quote(text: &str) -> String {
    let mut out = String::new();
    quote(text.as_bytes(), &mut out);
    out
}

/// A quoted string with Go's text-format escapes: `\"`, `\\`, `\n`, `\r`, `\t`, `\xNN` for
/// other control bytes, DEL and bytes that are not UTF-8, `\uNNNN` for U+0080..U+009F.
fn quote(bytes: &[u8], out: &mut String) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c < ' ' || c == '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c if ('\u{80}'..='\u{9f}').contains(&c) => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
}

/// Go's `strconv.FormatFloat(v, 'g', -1, size)` from Rust's shortest `{:e}` spelling of the
/// same value (`1.5e6`): exponent form when the exponent is below -4 or at least 6, with a
/// sign and two digits or more (`1.5e+06`); plain decimal otherwise.
fn go_g(sci: &str, nan: bool, infinite: bool) -> Cow<'static, str> {
    if nan {
        return "nan".into();
    }
    if infinite {
        return if sci.starts_with('-') { "-inf" } else { "inf" }.into();
    }
    let (negative, sci) = match sci.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, sci),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    if !(-4..6).contains(&exp) {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let _ = write!(s, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        return s.into();
    }
    // The decimal point sits after `exp + 1` digits.
    let point = exp + 1;
    if point <= 0 {
        s.push_str("0.");
        s.push_str(&"0".repeat(point.unsigned_abs() as usize));
        s.push_str(&digits);
    } else {
        let point = point as usize;
        if point >= digits.len() {
            s.push_str(&digits);
            s.push_str(&"0".repeat(point - digits.len()));
        } else {
            s.push_str(&digits[..point]);
            s.push('.');
            s.push_str(&digits[point..]);
        }
    }
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message_descriptor;
    use crate::topodata::{KeyRange, Shard, TabletAlias};
    use crate::vschema::{MirrorRule, MirrorRules};
    use prost::Message;

    fn text<M: Message + prost::Name>(m: &M) -> String {
        let desc = message_descriptor(&M::full_name()).unwrap();
        format(&DynamicMessage::decode(desc, m.encode_to_vec().as_slice()).unwrap())
    }

    #[test]
    fn floats_are_spelled_as_go_does() {
        let cases: [(f64, &str); 10] = [
            (1.0, "1"),
            (0.75, "0.75"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (-2.5, "-2.5"),
            (0.0, "0"),
            (-0.0, "-0"),
        ];
        for (v, want) in cases {
            assert_eq!(go_g(&format!("{v:e}"), false, false), want, "{v}");
        }
        assert_eq!(go_g(&format!("{:e}", 0.1f32), false, false), "0.1");
        assert_eq!(go_g("inf", false, true), "inf");
        assert_eq!(go_g("-inf", false, true), "-inf");
        assert_eq!(go_g("NaN", true, false), "nan");
    }

    #[test]
    fn strings_are_escaped_as_go_does() {
        let mut out = String::new();
        quote(b"a\"b\\c\n\x01\x7f\xff\xc2\x85\xc3\xa9", &mut out);
        assert_eq!(out, r#""a\"b\\c\n\x01\x7f\xff\u0085é""#);
    }

    #[test]
    fn messages_are_multiline_in_declaration_order() {
        let shard = Shard {
            primary_alias: Some(TabletAlias {
                cell: "zone1".into(),
                uid: 100,
            }),
            primary_term_start_time: Some(Default::default()),
            key_range: Some(KeyRange {
                start: vec![],
                end: vec![0x80],
            }),
            is_primary_serving: true,
            ..Default::default()
        };
        assert_eq!(
            text(&shard),
            "primary_alias: {\n  cell: \"zone1\"\n  uid: 100\n}\n\
             primary_term_start_time: {}\n\
             key_range: {\n  end: \"\\x80\"\n}\n\
             is_primary_serving: true"
        );
        let rules = MirrorRules {
            rules: vec![MirrorRule {
                from_table: "a".into(),
                to_table: "b".into(),
                percent: 0.1,
            }],
        };
        assert_eq!(
            text(&rules),
            "rules: {\n  from_table: \"a\"\n  to_table: \"b\"\n  percent: 0.1\n}"
        );
    }

    #[test]
    fn maps_print_sorted_entries_and_unknown_fields_come_last() {
        let mut bytes = crate::topodata::Tablet {
            hostname: "h".into(),
            port_map: [("vt".to_string(), 15100), ("grpc".to_string(), 0)].into(),
            ..Default::default()
        }
        .encode_to_vec();
        // Unknown fields 40 (varint 7) and 41 (string "x").
        bytes.extend_from_slice(&[0xc0, 0x02, 0x07, 0xca, 0x02, 0x01, b'x']);
        let desc = message_descriptor("topodata.Tablet").unwrap();
        let msg = DynamicMessage::decode(desc, bytes.as_slice()).unwrap();
        assert_eq!(
            format(&msg),
            "hostname: \"h\"\n\
             port_map: {\n  key: \"grpc\"\n  value: 0\n}\n\
             port_map: {\n  key: \"vt\"\n  value: 15100\n}\n\
             40: 7\n\
             41: \"x\""
        );
    }

    #[test]
    fn one_line_as_prototext_marshal_writes_it() {
        let multiline = "keyspace: \"ks\"\nkey_range: {\n  end: \"\\x80\"\n}\nport_map: {\n  key: \"vt\"\n  value: 1\n}\ndb: {}\ntype: REPLICA";
        assert_eq!(
            super::single_line(multiline),
            "keyspace:\"ks\" key_range:{end:\"\\x80\"} port_map:{key:\"vt\" value:1} db:{} type:REPLICA"
        );
    }
}
