//! Images of a dataset file picked by index: an IDX image file (MNIST, Fashion-MNIST; plain or
//! gzip) or a CIFAR-10 binary batch, recognised by their contents rather than their names.

use std::io::Read;
use std::path::Path;

use super::InferenceError;
use super::model::{ImageShape, Pixels};
use crate::data::{load_cifar_file, load_idx_images};

/// Bytes of one CIFAR-10 record: a label, then 3x32x32 pixels.
const CIFAR_RECORD: u64 = 1 + 3 * 32 * 32;
/// The magic number an IDX image file starts with.
const IDX_IMAGES: [u8; 4] = [0, 0, 8, 3];

/// The first four bytes of the file's contents (after gzip, if it is compressed).
fn magic(path: &Path) -> Result<[u8; 4], InferenceError> {
    let io = |source| InferenceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let n = file.read(&mut head).map_err(io)?;
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        let file = std::fs::File::open(path).map_err(io)?;
        let mut gz = flate2::read::MultiGzDecoder::new(file);
        head = [0u8; 4];
        // A gzip file too short or corrupt for four bytes is not an IDX file.
        let _ = gz.read(&mut head);
    }
    Ok(head)
}

/// Every image of the file, their shape, and the file's image count.
pub(super) fn read_images(path: &Path) -> Result<(Vec<u8>, ImageShape), InferenceError> {
    if magic(path)? == IDX_IMAGES {
        let (pixels, rows, cols) = load_idx_images(path)?;
        let shape = ImageShape {
            channels: 1,
            height: rows,
            width: cols,
        };
        return Ok((pixels, shape));
    }
    let size = std::fs::metadata(path)
        .map_err(|source| InferenceError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > 0 && size % CIFAR_RECORD == 0 {
        let set = load_cifar_file(path)?;
        let (channels, height, width) = set.shape();
        let pixels = (0..set.len()).flat_map(|i| set.image(i).to_vec()).collect();
        return Ok((
            pixels,
            ImageShape {
                channels,
                height,
                width,
            },
        ));
    }
    Err(InferenceError::Input {
        input: path.display().to_string(),
        why: "neither an IDX image file (magic 0x00000803, plain or gzip) nor a CIFAR-10 binary batch (records of 3,073 bytes)".into(),
    })
}

/// A dataset file is never resized or converted: its images fit another model.
const OTHER_DATASET: &str =
    " (the file holds another dataset's images than the model was trained on)";

/// The images at `indices` of the dataset file at `path`, each checked against `want`.
pub(super) fn images_at(
    path: &Path,
    indices: &[usize],
    want: ImageShape,
) -> Result<Vec<Pixels>, InferenceError> {
    let (pixels, shape) = read_images(path)?;
    let name = path.display().to_string();
    if shape.channels != want.channels {
        return Err(InferenceError::Channels {
            name,
            found: format!("{} channel(s)", shape.channels),
            want: format!("{} channel(s)", want.channels),
            hint: OTHER_DATASET,
        });
    }
    if (shape.height, shape.width) != (want.height, want.width) {
        return Err(InferenceError::Size {
            name,
            found_w: shape.width,
            found_h: shape.height,
            want_w: want.width,
            want_h: want.height,
            hint: OTHER_DATASET,
        });
    }
    let count = pixels.len() / shape.len().max(1);
    indices
        .iter()
        .map(|&i| match i < count {
            true => Ok(Pixels {
                shape,
                data: pixels[i * shape.len()..(i + 1) * shape.len()].to_vec(),
            }),
            false => Err(InferenceError::Input {
                input: format!("{name}#{i}"),
                why: format!("index {i} is past the file's {count} images"),
            }),
        })
        .collect()
}
