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
                let bytes = read(path).map_err(|e| misread_index(path).unwrap_or(e))?;
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

/// For a `FILE#SPEC` that named no file because SPEC is not an index (`#-1`, `#abc`, `#`) while
/// FILE exists: the error that says so, rather than that `FILE#SPEC` does not exist.
fn misread_index(path: &Path) -> Option<InferenceError> {
    let text = path.to_str()?;
    let (file, spec) = text.rsplit_once('#')?;
    (!path.exists() && Path::new(file).is_file()).then(|| InferenceError::Input {
        input: text.to_string(),
        why: format!(
            "there is no file of that name, and {spec:?} after the # of {file} is not an index (give N, A..B or a comma list)"
        ),
    })
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

    #[test]
    fn a_bad_index_after_an_existing_file_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t10k.gz");
        std::fs::write(&file, b"not read").unwrap();
        let shape = ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        for spec in ["-1", "abc", ""] {
            let text = format!("{}#{spec}", file.display());
            let input = Input::parse(&text).unwrap();
            let err = load_inputs(&[input], shape, Adapt::default()).unwrap_err();
            let want = format!("{spec:?} after the # of {} is not an index", file.display());
            assert!(err.to_string().contains(&want), "{err}");
        }
        // A missing file with a # in its name is still reported as missing.
        let text = format!("{}#abc", dir.path().join("absent.gz").display());
        let err =
            load_inputs(&[Input::parse(&text).unwrap()], shape, Adapt::default()).unwrap_err();
        assert!(matches!(err, InferenceError::Io { .. }), "{err}");
    }
}
