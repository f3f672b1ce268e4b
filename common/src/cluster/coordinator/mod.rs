//! The coordinator's side of the cluster: the gRPC service that admits workers, the pool that
//! keeps track of them (lost, joined, replaced), the engine that cuts every step into tree
//! blocks and adds their gradients, the replica checks, NCCL's rendezvous, and the worker
//! processes it starts on its own host.

mod admission;
mod answer_checks;
mod cluster_engine;
mod events;
mod local_workers;
mod nccl_rendezvous;
mod pool;
mod rank_table;
mod replica_check;
mod run;
mod service;
mod settings;
mod step_clock;

pub use admission::{Admission, check_join};
pub use answer_checks::{checked_embeddings, checked_vector, figures_problem};
pub use cluster_engine::ClusterEngine;
pub use local_workers::LocalWorkers;
pub use rank_table::RankTable;
pub use run::{train_on_cluster, with_cluster};
pub use service::{CoordinatorService, serve};
pub use settings::{ClusterArgs, EngineSettings};
