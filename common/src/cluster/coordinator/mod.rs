//! The coordinator's side of the cluster: the gRPC service that admits workers, the engine that
//! shards every step across them and collects their gradients, the replica checks, NCCL's
//! rendezvous, and the worker processes it starts on its own host.

mod cluster_engine;
mod links;
mod local_workers;
mod nccl_rendezvous;
mod replica_check;
mod run;
mod service;
mod settings;
mod step_clock;

pub use cluster_engine::ClusterEngine;
pub use local_workers::LocalWorkers;
pub use run::{train_on_cluster, with_cluster};
pub use service::{Admission, CoordinatorService, serve};
pub use settings::{ClusterArgs, EngineSettings};
