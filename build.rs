//! Compiles the gRPC API (proto/sesame/v1/sesame.proto) with the vendored protoc (there is no
//! system protoc), and writes the file descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("sesame_v1_descriptor.bin"))
        .btree_map(".")
        .compile_protos(&["proto/sesame/v1/sesame.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
