//! Generated types of `proto/inference.proto` and its descriptor set for server reflection.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("siamese.inference.v1");

/// Encoded `FileDescriptorSet` of `proto/inference.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
