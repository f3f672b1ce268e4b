//! Using a trained checkpoint: load it, read images (PNG, JPEG, or dataset files by index),
//! embed them, compare two, search a gallery; and the gRPC inference service of
//! `coordinator serve`, which batches concurrent requests into one forward pass.

mod batcher;
mod dataset_file;
mod error;
mod gallery;
mod image_file;
mod input;
mod model;
pub mod proto;
mod server;
mod service;

pub use batcher::{BatchStats, Batcher};
pub use error::InferenceError;
pub use gallery::{Gallery, Match};
pub use image_file::{Adapt, decode_image};
pub use input::{Input, load_inputs};
pub use model::{ImageShape, Pixels, THRESHOLD, TrainedModel};
pub use server::{ServeOptions, serve, serve_blocking};
pub use service::InferenceService;
