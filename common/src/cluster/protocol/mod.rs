//! What the coordinator and the workers both speak: the generated gRPC messages, the float
//! encoding on the wire, the run token, TLS, the transport's limits and the shared-memory file.

pub mod auth;
pub mod proto;
pub mod shm;
pub mod tls;
pub mod transport;
pub mod wire;

pub use crate::model::MODEL_VERSION;

/// Version of `proto/cluster.proto` and of what its JSON fields carry (7: the next step's
/// tasks ride in `CoordinatorMessage.tasks`, which a worker of version 6 would ignore and so
/// never answer); a worker of another version is refused at join.
pub const PROTOCOL_VERSION: u32 = 7;
