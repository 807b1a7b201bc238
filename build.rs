//! Compiles the wire contract and the peer protocol at build time with a
//! pure-Rust protobuf compiler, so a fresh machine needs no `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/eventstore.proto", "proto/peer.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Prost's codec, except that a message that does not decode is
        // INVALID_ARGUMENT (src/api/codec.rs).
        .codec_path("crate::api::codec::ProtoCodec")
        .bytes(".protob.SaveRequest.value")
        .bytes(".protob.LoadResponse.value")
        .compile_fds(fds)?;
    Ok(())
}
