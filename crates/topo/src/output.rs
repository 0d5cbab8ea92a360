//! Printing results the way vtctldclient does.

use serde_json::Value;
use topo_proto::json::{go_string, message_to_json, pretty_string, JsonForm};
use topo_proto::Record;

/// The protojson form of `cli.MarshalJSON`: vtctldclient's `DefaultMarshalOptions` (enum
/// names, every field) unless `--compact` (set fields only).
pub(crate) fn form(compact: bool) -> JsonForm {
    if compact {
        JsonForm::Pretty
    } else {
        JsonForm::Full
    }
}

/// A message as JSON in the chosen form.
pub(crate) fn msg<M: Record>(m: &M, compact: bool) -> Value {
    message_to_json(m, form(compact))
}

/// A message as Go's `encoding/json` writes the Go struct (`cli.MarshalJSON` of a plain map
/// or slice; `--compact` does not change it).
pub(crate) fn go_msg<M: Record>(m: &M) -> Value {
    message_to_json(m, JsonForm::Go)
}

/// Prints a value as Go's `json.MarshalIndent` does.
pub(crate) fn print_go(v: &Value) {
    crate::out!("{}", go_string(v));
}

/// Prints a line on stdout. Unlike `println!` it does not panic when stdout is closed
/// (`topo TopoLs -R / | head`); the output just stops.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Prints JSON with a two-space indent.
pub(crate) fn print(v: &Value) {
    crate::out!("{}", pretty_string(v));
}

/// A JSON object from (key, value) pairs, in order.
pub(crate) fn object<I: IntoIterator<Item = (String, Value)>>(pairs: I) -> Value {
    Value::Object(pairs.into_iter().collect())
}
