//! Generated protocol types and the descriptor set for server reflection.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("siamese.cluster.v1");

/// Encoded `FileDescriptorSet` of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cluster_descriptor.bin"));
