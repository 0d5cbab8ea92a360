//! The golden vectors of `tests/golden` (or `$TOPO_GOLDEN_DIR`): bytes made by the
//! reference protobuf implementation from Vitess's field definitions, with the JSON that
//! vtctldclient prints for them. Every case must decode to that JSON, and encode back.

use std::path::Path;

use serde_json::Value;
use topo_proto::golden::{self, GoldenCase};
use topo_proto::json::{json_to_bytes, pretty_string, to_json, JsonForm};
use topo_proto::{topodata, vschema, Record, Stored};

/// JSON values compared with every number as a float (`5` and `5.0` are the same value).
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::Number::from_f64(n.as_f64().unwrap_or(f64::NAN))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// Decodes with the typed record wrapper and re-encodes.
fn typed_round_trip<M: Record>(bytes: &[u8]) -> Vec<u8> {
    Stored::<M>::decode(bytes, "golden")
        .expect("typed decode")
        .encode()
}

fn round_trip(type_name: &str, bytes: &[u8]) -> Vec<u8> {
    match type_name {
        "topodata.CellInfo" => typed_round_trip::<topodata::CellInfo>(bytes),
        "topodata.CellsAlias" => typed_round_trip::<topodata::CellsAlias>(bytes),
        "topodata.Keyspace" => typed_round_trip::<topodata::Keyspace>(bytes),
        "topodata.Shard" => typed_round_trip::<topodata::Shard>(bytes),
        "topodata.Tablet" => typed_round_trip::<topodata::Tablet>(bytes),
        "topodata.ShardReplication" => typed_round_trip::<topodata::ShardReplication>(bytes),
        "topodata.SrvKeyspace" => typed_round_trip::<topodata::SrvKeyspace>(bytes),
        "vschema.SrvVSchema" => typed_round_trip::<vschema::SrvVSchema>(bytes),
        "vschema.Keyspace" => typed_round_trip::<vschema::Keyspace>(bytes),
        "vschema.RoutingRules" => typed_round_trip::<vschema::RoutingRules>(bytes),
        "vschema.ShardRoutingRules" => typed_round_trip::<vschema::ShardRoutingRules>(bytes),
        "vschema.KeyspaceRoutingRules" => typed_round_trip::<vschema::KeyspaceRoutingRules>(bytes),
        "vschema.MirrorRules" => typed_round_trip::<vschema::MirrorRules>(bytes),
        other => panic!("the golden test has no typed record for {other}"),
    }
}

fn read(dir: &Path, file: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(file)).ok()
}

fn read_json(dir: &Path, file: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn check_case(dir: &Path, case: &GoldenCase) -> Result<(), String> {
    let name = &case.name;
    let pb = read(dir, &format!("{name}.pb")).ok_or(format!("{name}.pb missing"))?;
    let expected_bytes = read(dir, &format!("{name}.reencoded.pb")).unwrap_or_else(|| pb.clone());
    let decoded_json = |bytes: &[u8], form| {
        to_json(bytes, &case.type_name, form)
            .map(normalize)
            .map_err(|e| format!("{name}: decode: {e}"))
    };

    for (file, form) in [
        (format!("{name}.json"), JsonForm::Vtctld),
        (format!("{name}.pretty.json"), JsonForm::Pretty),
    ] {
        let want = normalize(read_json(dir, &file));
        let got = decoded_json(&pb, form)?;
        if got != want {
            return Err(format!(
                "{file}: decoded .pb differs\n got: {got}\nwant: {want}"
            ));
        }
        // The same text, too: field order, map order, number spelling, indentation.
        let text = std::fs::read_to_string(dir.join(&file)).map_err(|e| e.to_string())?;
        let printed = to_json(&pb, &case.type_name, form)
            .map(|v| pretty_string(&v))
            .map_err(|e| format!("{name}: decode: {e}"))?;
        if printed.trim_end() != text.trim_end() {
            return Err(format!(
                "{file}: printed JSON differs from the file\n got: {printed}\nwant: {text}"
            ));
        }
        // Parse the JSON, encode, and compare with the stored record.
        let encoded =
            json_to_bytes(&text, &case.type_name).map_err(|e| format!("{file}: parse: {e}"))?;
        if case.has_maps || case.has_unknown {
            let known_only = decoded_json(&expected_bytes, JsonForm::Vtctld)?;
            if decoded_json(&encoded, JsonForm::Vtctld)? != known_only {
                return Err(format!("{file}: JSON → bytes gives a different record"));
            }
        } else if encoded != expected_bytes {
            return Err(format!("{file}: JSON → bytes differ from {name}.pb\n got: {encoded:02x?}\nwant: {expected_bytes:02x?}"));
        }
    }

    // Typed decode and re-encode keeps every field, unknown ones included.
    let again = round_trip(&case.type_name, &pb);
    if case.has_maps && !case.has_unknown {
        if decoded_json(&again, JsonForm::Vtctld)?
            != decoded_json(&expected_bytes, JsonForm::Vtctld)?
        {
            return Err(format!("{name}: typed round trip changed the record"));
        }
    } else if again != expected_bytes {
        return Err(format!("{name}: typed round trip bytes differ\n got: {again:02x?}\nwant: {expected_bytes:02x?}"));
    }
    Ok(())
}

#[test]
fn golden_vectors() {
    let dir = golden::dir();
    let cases = golden::manifest(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cases.is_empty(), "no golden cases in {}", dir.display());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check_case(&dir, c).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!("{} golden cases passed", cases.len());
}
