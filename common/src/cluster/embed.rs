//! Embedding images across the workers: evaluation's share of the cluster.

use super::ClusterError;
use super::engine::ClusterEngine;
use super::proto::{EmbedTask, ImageSet, task, worker_message};
use super::wire::decode_f32;
use crate::pairs::shard_ranges;
use crate::train::ImageSplit;

impl ClusterEngine {
    /// Subnet outputs of `indices`, sharded across the workers and put back in order.
    pub(super) fn embed_sharded(
        &mut self,
        split: ImageSplit,
        indices: &[u32],
    ) -> Result<Vec<f32>, ClusterError> {
        let set = match split {
            ImageSplit::Train => ImageSet::Train,
            ImageSplit::Test => ImageSet::Test,
        };
        let ranges = shard_ranges(indices.len(), self.world());
        let mut ids = Vec::with_capacity(ranges.len());
        for (w, r) in ranges.iter().enumerate() {
            let kind = task::Kind::Embed(EmbedTask {
                set: set as i32,
                indices: indices[r.clone()].to_vec(),
            });
            ids.push(self.task(w, self.version, kind)?);
        }
        let width = self.spec.out_width();
        let mut out = Vec::with_capacity(indices.len() * width);
        for (w, (id, r)) in ids.into_iter().zip(ranges).enumerate() {
            let (_, body) = self.receive(w, id)?;
            let peer = self.workers[w].peer.clone();
            let values = match body {
                worker_message::Body::Embedding(e) if e.id == id => decode_f32(&e.values),
                _ => {
                    return Err(ClusterError::Protocol {
                        peer,
                        what: format!("expected the embeddings of task {id}"),
                    });
                }
            };
            match values {
                Some(v) if v.len() == r.len() * width => out.extend(v),
                _ => {
                    let what = format!(
                        "embeddings of task {id} do not hold {} x {width} values",
                        r.len()
                    );
                    return Err(ClusterError::Protocol { peer, what });
                }
            }
        }
        Ok(out)
    }
}
