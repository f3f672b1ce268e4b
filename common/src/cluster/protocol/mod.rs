//! What the coordinator and the workers both speak: the generated gRPC messages, the float
//! encoding on the wire, the run token, the transport's limits and the shared-memory file.

pub mod auth;
pub mod proto;
pub mod shm;
pub mod transport;
pub mod wire;

/// Version of `proto/cluster.proto`; a worker of another version is refused at join.
pub const PROTOCOL_VERSION: u32 = 2;
/// Version of the model's parameter layout and maths; replicas must agree on it.
pub const MODEL_VERSION: &str = "sn-lenet5/1";
