//! Compiles the project's .proto files with protox (no system protoc), generating prost
//! types and a descriptor set that the crate embeds for reflection (JSON, text format,
//! unknown-field handling).
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/vttime.proto",
        "proto/vtorcdata.proto",
        "proto/query.proto",
        "proto/topodata.proto",
        "proto/vschema.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new()
        .btree_map(["."])
        .enable_type_names()
        .compile_fds(fds)?;
    Ok(())
}
