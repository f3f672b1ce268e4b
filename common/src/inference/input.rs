//! What the `embed`, `compare` and `search` commands read: `FILE.png` / `FILE.jpg`, or images of
//! a dataset file by index, `FILE#7`, `FILE#0..16` (end excluded) or `FILE#3,5,9`.

use std::path::{Path, PathBuf};

use super::InferenceError;
use super::dataset_file::images_at;
use super::image_file::{Adapt, decode_image};
use super::model::{ImageShape, Pixels};

/// Most images one `#A..B` range may name: a typo like `#0..6000000` is refused, not loaded.
const MAX_RANGE: usize = 1_000_000;

/// One input as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A PNG or JPEG file.
    Image(PathBuf),
    /// Images of a dataset file by index.
    Dataset {
        /// The IDX or CIFAR-10 file.
        path: PathBuf,
        /// The indices, in the order given.
        indices: Vec<usize>,
    },
}

impl Input {
    /// Parses `FILE` or `FILE#INDICES`; a `#` followed by anything but indices is part of the
    /// file name.
    pub fn parse(text: &str) -> Result<Self, InferenceError> {
        if let Some((path, spec)) = text.rsplit_once('#')
            && !spec.is_empty()
            && spec
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
        {
            let indices = parse_indices(spec).map_err(|why| InferenceError::Input {
                input: text.to_string(),
                why,
            })?;
            return Ok(Input::Dataset {
                path: PathBuf::from(path),
                indices,
            });
        }
        Ok(Input::Image(PathBuf::from(text)))
    }
}

/// `7`, `0..16` or a comma list of either.
fn parse_indices(spec: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let number = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("{s:?} is not an index (give N, A..B or a comma list)"))
        };
        match part.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if b <= a || b - a > MAX_RANGE {
                    return Err(format!(
                        "{part} names no images or more than {MAX_RANGE} (A..B excludes B)"
                    ));
                }
                out.extend(a..b);
            }
            None => out.push(number(part)?),
        }
    }
    Ok(out)
}

/// Reads every input as `want`-shaped images, with a name for each (the file, or `FILE#i`).
pub fn load_inputs(
    inputs: &[Input],
    want: ImageShape,
    adapt: Adapt,
) -> Result<Vec<(String, Pixels)>, InferenceError> {
    let mut out = Vec::new();
    for input in inputs {
        match input {
            Input::Image(path) => {
                let name = path.display().to_string();
                let bytes = read(path)?;
                out.push((name.clone(), decode_image(&bytes, &name, want, adapt)?));
            }
            Input::Dataset { path, indices } => {
                let images = images_at(path, indices, want)?;
                let names = indices.iter().map(|i| format!("{}#{i}", path.display()));
                out.extend(names.zip(images));
            }
        }
    }
    Ok(out)
}

/// A file's bytes, the error naming it.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, InferenceError> {
    std::fs::read(path).map_err(|source| InferenceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_indices_parse() {
        assert_eq!(Input::parse("a.png").unwrap(), Input::Image("a.png".into()));
        assert_eq!(
            Input::parse("x#y.png").unwrap(),
            Input::Image("x#y.png".into())
        );
        assert_eq!(
            Input::parse("t10k.gz#3,0..2").unwrap(),
            Input::Dataset {
                path: "t10k.gz".into(),
                indices: vec![3, 0, 1]
            }
        );
        for bad in ["f#2..2", "f#1.2", "f#0..2000000"] {
            assert!(Input::parse(bad).is_err(), "{bad}");
        }
    }
}
