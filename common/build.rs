//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and keeps the descriptor set for
//! gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let fds = protox::compile(["cluster.proto"], ["../proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("cluster_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // `bytes` fields as `Bytes`: the weights are encoded once and shared by every worker's
    // message, and received vectors are sliced from the receive buffer rather than copied.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
