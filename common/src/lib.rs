//! siamese-cluster's library: data, pair protocol, SN-LeNet-5 and the training math that the
//! `coordinator` and `worker` binaries share.

pub mod aggregation;
pub mod atomic_file;
pub mod cluster;
pub mod config;
pub mod data;
pub mod error_report;
pub mod heap;
pub mod inference;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod pairs;
pub mod results;
pub mod stop;
pub mod telemetry;
pub mod threads;
pub mod train;
