//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and keeps each service's
//! descriptor set for gRPC server reflection.

/// Each proto file and the descriptor set its server reflects: separate sets, so that the
/// cluster's reflection lists only the cluster and the inference server's only inference.
const PROTOS: [(&str, &str); 2] = [
    ("cluster.proto", "cluster_descriptor.bin"),
    ("inference.proto", "inference_descriptor.bin"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for (proto, descriptor) in PROTOS {
        let fds = protox::compile([proto], ["../proto"])?;
        std::fs::write(out.join(descriptor), prost::Message::encode_to_vec(&fds))?;
        // `bytes` fields as `Bytes`: the weights are encoded once and shared by every worker's
        // message, and received vectors are sliced from the receive buffer rather than copied.
        tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    }
    Ok(())
}
