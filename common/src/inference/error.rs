//! What can go wrong using a trained model, naming the file, input or field at fault.

use std::path::PathBuf;

/// Why a checkpoint, an input or a request could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The weights file could not be read as SN-LeNet-5 weights.
    #[error("weights {path}: {why}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The model failed to load the weights or to run.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An image's bytes are not a readable PNG or JPEG.
    #[error("{name}: not a readable PNG or JPEG image: {source}")]
    Decode {
        /// The input (file name, or the request's image).
        name: String,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// An image of another format than PNG or JPEG.
    #[error("{name}: {format} images are not read; give PNG or JPEG")]
    Format {
        /// The input.
        name: String,
        /// The format found.
        format: String,
    },
    /// An image with other channels than the model takes.
    #[error("{name}: {found}, the model takes {want}{hint}")]
    Channels {
        /// The input.
        name: String,
        /// What it holds, in words ("RGB (3 channels)").
        found: String,
        /// What the model takes, in words.
        want: String,
        /// How to convert it, where the input can be.
        hint: &'static str,
    },
    /// An image of another size than the model takes.
    #[error("{name}: the image is {found_w}x{found_h}, the model takes {want_w}x{want_h}{hint}")]
    Size {
        /// The input.
        name: String,
        /// Its width.
        found_w: usize,
        /// Its height.
        found_h: usize,
        /// The model's width.
        want_w: usize,
        /// The model's height.
        want_h: usize,
        /// How to resize it, where the input can be.
        hint: &'static str,
    },
    /// A dataset file could not be read.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// An input that names nothing usable.
    #[error("input {input:?}: {why}")]
    Input {
        /// The input as given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// A gallery folder that cannot be listed (missing, not a folder, no permission).
    #[error("gallery {dir}: the folder cannot be read: {source}")]
    GalleryUnreadable {
        /// The folder.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A gallery folder holding no images.
    #[error("gallery {dir}: no PNG or JPEG files")]
    EmptyGallery {
        /// The folder.
        dir: PathBuf,
    },
    /// The serving side failed (binding, the runtime, the transport).
    #[error("serving: {0}")]
    Server(String),
    /// The compute thread of the server is gone.
    #[error("the inference compute thread stopped")]
    ComputeStopped,
}
