//! Compiles `proto/geocache.proto` with the protoc binary vendored by `protoc-bin-vendored`,
//! so a fresh machine needs no system protobuf install.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded, so setting the variable cannot race.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/geocache.proto");
    // Values are `bytes::Bytes` end to end (docs/ARCHITECTURE.md §8): no copy out of the decoded frame.
    // Decode failures are the sender's fault: see src/codec.rs.
    tonic_prost_build::configure()
        .bytes(".")
        .codec_path("crate::codec::GeocacheCodec")
        .compile_protos(&["proto/geocache.proto"], &["proto"])?;
    Ok(())
}
