//! The golden test vectors: records encoded by the reference protobuf implementation from
//! Vitess's field definitions, with the JSON that vtctldclient prints for them. They live in
//! this crate's `tests/golden` folder (see its README); `TOPO_GOLDEN_DIR` points the tests
//! at another folder of the same format.
//!
//! Tests go by the folder's `manifest.tsv`, never by case names they assume are there, so a
//! folder with other cases works as long as it holds the record types a test needs.

use std::io;
use std::path::{Path, PathBuf};

/// One case of a golden folder, as `manifest.tsv` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoldenCase {
    /// The file stem: `<name>.pb`, `<name>.json` and `<name>.pretty.json`.
    pub name: String,
    /// The full message name, e.g. `topodata.Shard`.
    pub type_name: String,
    /// The file name the record is stored under in a topology (`Shard`, `Tablet`, …).
    pub topo_file: String,
    /// Whether the record holds a map entry (maps may encode in any order).
    pub has_maps: bool,
    /// Whether the bytes carry fields the schema does not know.
    pub has_unknown: bool,
}

/// The golden folder: `$TOPO_GOLDEN_DIR` when set, else the one shipped in this crate.
pub fn dir() -> PathBuf {
    match std::env::var_os("TOPO_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
    }
}

/// The cases that `dir/manifest.tsv` lists (its first line is a header).
///
/// # Errors
/// When the manifest cannot be read, or a line has fewer than five tab-separated columns
/// (the error names the line).
pub fn manifest(dir: &Path) -> io::Result<Vec<GoldenCase>> {
    let path = dir.join("manifest.tsv");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| match line.split('\t').collect::<Vec<_>>()[..] {
            [name, type_name, topo_file, maps, unknown, ..] => Ok(GoldenCase {
                name: name.to_string(),
                type_name: type_name.to_string(),
                topo_file: topo_file.to_string(),
                has_maps: maps == "yes",
                has_unknown: unknown == "yes",
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: malformed line {line:?}", path.display()),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_manifest_and_refuses_a_short_line() {
        let dir = tempfile::tempdir().unwrap();
        let manifest_path = dir.path().join("manifest.tsv");
        std::fs::write(
            &manifest_path,
            "case\ttype\ttopo_file\thas_maps\thas_unknown\nks\ttopodata.Keyspace\tKeyspace\tno\tyes\n",
        )
        .unwrap();
        let cases = manifest(dir.path()).unwrap();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].type_name, "topodata.Keyspace");
        assert!(cases[0].has_unknown && !cases[0].has_maps);
        std::fs::write(&manifest_path, "header\nks\ttopodata.Keyspace\n").unwrap();
        let err = manifest(dir.path()).unwrap_err();
        assert!(err.to_string().contains("malformed line"), "{err}");
    }
}
