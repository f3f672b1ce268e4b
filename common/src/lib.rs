//! siamese-cluster's library: data, pair protocol, SN-LeNet-5 and the training math that the
//! `coordinator` and `worker` binaries share.

pub mod data;
pub mod model;
pub mod optim;
