//! Dataset layer: finding, downloading, verifying and decoding MNIST, Fashion-MNIST and CIFAR-10.

mod augment;
mod cifar;
mod download;
mod error;
mod idx;
mod idx_reader;
mod images;
mod kind;
mod resolve;
mod source;
#[cfg(test)]
mod testutil;

pub use augment::{Augment, TestAugment, augment_key, mirror, mix};
pub use cifar::{
    CIFAR_FOLDER, CIFAR_TEST_FILE, CIFAR_TRAIN_FILES, load_cifar_file, load_cifar10,
    parse_cifar_batch,
};
pub use download::download;
pub use error::DataError;
pub use idx::{MNIST_FILES, load_idx_images, load_idx_pair, load_mnist_like, parse_idx_pair};
pub use images::{Dataset, ImageSet};
pub use kind::DatasetKind;
pub use resolve::{DATA_DIR_ENV, files_present, load_dataset, obtain_dataset, resolve_data_dir};
pub use source::{DATASET_URL_ENV, RemoteFile, Source, configured_source, official_source};
