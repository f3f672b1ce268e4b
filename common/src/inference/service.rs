//! The `Inference` gRPC service: requests' images decoded and checked on the server's threads,
//! embedded by the shared [`Batcher`], compared or searched against the gallery.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::InferenceError;
use super::batcher::Batcher;
use super::gallery::Gallery;
use super::image_file::{Adapt, decode_image};
use super::model::{ImageShape, Pixels, THRESHOLD, TrainedModel};
use super::proto::inference_server::Inference;
use super::proto::{
    CompareRequest, CompareResponse, EmbedRequest, EmbedResponse, Embedding, Image, InfoRequest,
    Match, ModelInfo, SearchRequest, SearchResponse, image,
};

/// Most images one Embed request may carry.
const MAX_IMAGES_PER_REQUEST: usize = 1024;
/// Matches a Search returns when the request asks for none.
const DEFAULT_K: usize = 5;

/// The service's state, shared by every request.
pub struct InferenceService {
    model: Arc<TrainedModel>,
    batcher: Batcher,
    gallery: Option<Arc<Gallery>>,
    /// What the server was told it may do to images that do not fit (requests may ask too).
    adapt: Adapt,
}

impl InferenceService {
    /// A service answering with `model` through `batcher`, searching `gallery` when given.
    pub fn new(
        model: Arc<TrainedModel>,
        batcher: Batcher,
        gallery: Option<Arc<Gallery>>,
        adapt: Adapt,
    ) -> Self {
        InferenceService {
            model,
            batcher,
            gallery,
            adapt,
        }
    }

    /// The batcher, for its statistics.
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// A request's image as the model's input, or the status saying what is wrong with it.
    fn pixels(&self, image: Option<&Image>, name: &str, resize: bool) -> Result<Pixels, Status> {
        let want = self.model.input_shape();
        let adapt = Adapt {
            resize: resize || self.adapt.resize,
            ..self.adapt
        };
        match image.and_then(|i| i.data.as_ref()) {
            None => Err(Status::invalid_argument(format!("{name}: no image given"))),
            Some(image::Data::Encoded(bytes)) => {
                decode_image(bytes, name, want, adapt).map_err(invalid)
            }
            Some(image::Data::Raw(raw)) => raw_pixels(raw, name, want),
        }
    }

    /// Embeddings of images, row-major.
    async fn embed(&self, images: &[Pixels]) -> Result<Vec<f32>, Status> {
        let mut values = Vec::with_capacity(images.len() * self.model.input_shape().len());
        images.iter().for_each(|p| p.push_f32(&mut values));
        self.batcher
            .embed(values, images.len())
            .await
            .map_err(|e| match e {
                InferenceError::Input { .. } => invalid(e),
                InferenceError::Server(ref why) if why.starts_with("busy") => {
                    Status::resource_exhausted(e.to_string())
                }
                other => Status::internal(other.to_string()),
            })
    }
}

/// A bad input as INVALID_ARGUMENT, its message naming what is wrong.
fn invalid(e: InferenceError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Raw CHW pixels, checked against the model's shape (raw images are never resized).
fn raw_pixels(
    raw: &super::proto::RawImage,
    name: &str,
    want: ImageShape,
) -> Result<Pixels, Status> {
    let shape = ImageShape {
        channels: raw.channels as usize,
        height: raw.height as usize,
        width: raw.width as usize,
    };
    if shape != want {
        return Err(Status::invalid_argument(format!(
            "{name}: raw image {}x{}x{}, the model takes {}x{}x{}",
            shape.channels, shape.height, shape.width, want.channels, want.height, want.width
        )));
    }
    if raw.pixels.len() != shape.len() {
        return Err(Status::invalid_argument(format!(
            "{name}: {} pixel bytes, {}x{}x{} needs {}",
            raw.pixels.len(),
            shape.channels,
            shape.height,
            shape.width,
            shape.len()
        )));
    }
    Ok(Pixels {
        shape,
        data: raw.pixels.to_vec(),
    })
}

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn info(&self, _req: Request<InfoRequest>) -> Result<Response<ModelInfo>, Status> {
        let shape = self.model.input_shape();
        Ok(Response::new(ModelInfo {
            channels: shape.channels as u32,
            height: shape.height as u32,
            width: shape.width as u32,
            embedding_width: self.model.width() as u32,
            gallery_size: self.gallery.as_ref().map_or(0, |g| g.len() as u32),
            threshold: THRESHOLD,
        }))
    }

    async fn embed(&self, req: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        let req = req.into_inner();
        if req.images.len() > MAX_IMAGES_PER_REQUEST {
            return Err(Status::invalid_argument(format!(
                "{} images in one request; at most {MAX_IMAGES_PER_REQUEST}",
                req.images.len()
            )));
        }
        let images = req
            .images
            .iter()
            .enumerate()
            .map(|(i, image)| self.pixels(Some(image), &format!("image {i}"), req.resize))
            .collect::<Result<Vec<_>, _>>()?;
        let values = self.embed(&images).await?;
        let width = self.model.width().max(1);
        let embeddings = values
            .chunks_exact(width)
            .map(|e| Embedding { values: e.to_vec() })
            .collect();
        Ok(Response::new(EmbedResponse { embeddings }))
    }

    async fn compare(
        &self,
        req: Request<CompareRequest>,
    ) -> Result<Response<CompareResponse>, Status> {
        let req = req.into_inner();
        let a = self.pixels(req.a.as_ref(), "a", req.resize)?;
        let b = self.pixels(req.b.as_ref(), "b", req.resize)?;
        let e = self.embed(&[a, b]).await?;
        let (ea, eb) = e.split_at(e.len() / 2);
        let (similarity, distance) = self.model.compare(ea, eb);
        Ok(Response::new(CompareResponse {
            similarity,
            distance,
            same: similarity > THRESHOLD,
            threshold: THRESHOLD,
        }))
    }

    async fn search(
        &self,
        req: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let Some(gallery) = &self.gallery else {
            return Err(Status::failed_precondition(
                "no gallery: start the server with --gallery DIR",
            ));
        };
        let req = req.into_inner();
        let query = self.pixels(req.query.as_ref(), "query", req.resize)?;
        let e = self.embed(&[query]).await?;
        let k = match req.k {
            0 => DEFAULT_K,
            k => k as usize,
        };
        let matches = gallery
            .search(&self.model, &e, k)
            .into_iter()
            .map(|m| Match {
                name: m.name,
                distance: m.distance,
                similarity: m.similarity,
            })
            .collect();
        Ok(Response::new(SearchResponse { matches }))
    }
}
