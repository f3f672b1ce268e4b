//! A gallery: the PNG and JPEG images of a folder, embedded once, and the nearest of them to a
//! query.

use std::path::Path;

use super::InferenceError;
use super::image_file::{Adapt, decode_image};
use super::input::read;
use super::model::TrainedModel;

/// A gallery image near a query.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    /// Its file name, relative to the gallery folder.
    pub name: String,
    /// Euclidean distance between the two embeddings.
    pub distance: f32,
    /// The model's similarity of the two images.
    pub similarity: f32,
}

/// The embedded images of a folder.
pub struct Gallery {
    names: Vec<String>,
    embeddings: Vec<f32>,
    width: usize,
}

/// Whether a file name says PNG or JPEG.
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

impl Gallery {
    /// Embeds every PNG and JPEG file directly inside `dir` (sorted by name) with `model`.
    pub fn load(dir: &Path, model: &TrainedModel, adapt: Adapt) -> Result<Self, InferenceError> {
        let unreadable = |source| InferenceError::GalleryUnreadable {
            dir: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(unreadable)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(InferenceError::EmptyGallery {
                dir: dir.to_path_buf(),
            });
        }
        let want = model.input_shape();
        let mut names = Vec::with_capacity(files.len());
        let mut images = Vec::with_capacity(files.len());
        for path in &files {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            images.push(decode_image(
                &read(path)?,
                &path.display().to_string(),
                want,
                adapt,
            )?);
            names.push(name);
        }
        let embeddings = model.embed(&images)?;
        Ok(Gallery {
            names,
            embeddings,
            width: model.width(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it holds no images (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The `k` images nearest to the embedding `query`, nearest first (ties by name).
    pub fn search(&self, model: &TrainedModel, query: &[f32], k: usize) -> Vec<Match> {
        let mut all: Vec<Match> = self
            .names
            .iter()
            .zip(self.embeddings.chunks_exact(self.width.max(1)))
            .map(|(name, e)| {
                let (similarity, distance) = model.compare(query, e);
                Match {
                    name: name.clone(),
                    distance,
                    similarity,
                }
            })
            .collect();
        all.sort_by(|a, b| {
            a.distance
                .total_cmp(&b.distance)
                .then_with(|| a.name.cmp(&b.name))
        });
        all.truncate(k);
        all
    }
}
