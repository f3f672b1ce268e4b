//! A model replica on one device: the parameters as Candle variables plus the training step.

use candle_core::{D, DType, Device, Tensor, Var, backprop::GradStore};

use super::ModelError;
use super::grouping::Grouping;
use super::lenet::{self, LeNetWeights};
use super::loss::{contrastive_loss_sum, cross_entropy_sum};
use super::params::{Head, ModelSpec};
use super::similarity::similarity;
use crate::aggregation::tree::{DEFAULT_MICRO_BATCH, MicroBatches};

/// Keeps the distance differentiable where two embeddings coincide.
const DIST_EPS: f64 = 1e-7;

/// What one forward + backward pass over a batch of pairs produced.
#[derive(Debug, Clone)]
pub struct PairStep {
    /// Loss summed over the batch.
    pub loss_sum: f32,
    /// Predicted similarity of each pair.
    pub similarity: Vec<f32>,
    /// Gradient of the summed loss, flat, in [`ModelSpec::params`] order.
    pub grad: Vec<f32>,
}

/// What one forward + backward pass of the classifier over a batch of labelled images produced.
#[derive(Debug, Clone)]
pub struct ClassStep {
    /// Cross-entropy summed over the batch.
    pub loss_sum: f32,
    /// Images whose largest logit is their label.
    pub correct: usize,
    /// Gradient of the summed loss, flat, in [`ModelSpec::params`] order.
    pub grad: Vec<f32>,
}

/// The network's parameters on a device, in the flat layout of its [`ModelSpec`].
pub struct Network {
    spec: ModelSpec,
    vars: Vec<Var>,
    device: Device,
}

impl Network {
    /// Builds the network on `device` with the given flat weights.
    pub fn new(spec: ModelSpec, weights: &[f32], device: &Device) -> Result<Self, ModelError> {
        spec.check_len(weights, "initial weights")?;
        let vars = spec
            .params()
            .iter()
            .map(|p| {
                Var::from_slice(
                    &weights[p.offset..p.offset + p.len()],
                    p.shape.as_slice(),
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Network {
            spec,
            vars,
            device: device.clone(),
        })
    }

    /// The layout this network was built for.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Overwrites every parameter from a flat vector.
    pub fn set_weights(&self, weights: &[f32]) -> Result<(), ModelError> {
        self.spec.check_len(weights, "weights")?;
        for (var, p) in self.vars.iter().zip(self.spec.params()) {
            let t = Tensor::from_slice(
                &weights[p.offset..p.offset + p.len()],
                p.shape.as_slice(),
                &self.device,
            )?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// The current parameters as a flat vector.
    pub fn weights(&self) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::with_capacity(self.spec.num_params());
        for var in &self.vars {
            out.extend(var.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Parameter tensors: tracked for training, detached for inference (no graph is built).
    fn tensors(&self, train: bool) -> Vec<Tensor> {
        self.vars
            .iter()
            .map(|v| {
                if train {
                    v.as_tensor().clone()
                } else {
                    v.as_tensor().detach()
                }
            })
            .collect()
    }

    /// Subnet output (embedding or logits) for a batch of images `[n, c, h, w]`, without gradients.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let t = self.tensors(false);
        // Nothing is differentiated, so the grouping is never used.
        let groups = Grouping::flat(MicroBatches::whole(x.dim(0)?));
        Ok(lenet::forward(
            &self.spec,
            LeNetWeights { t: &t[..10] },
            x,
            groups,
        )?)
    }

    /// The similarity unit's slope and offset, `s = sigmoid(a d + b)`.
    pub fn similarity_unit(&self) -> Result<(f32, f32), ModelError> {
        match self.spec.head {
            Head::Siamese { .. } => {
                let a = self.vars[10].flatten_all()?.to_vec1::<f32>()?[0];
                let b = self.vars[11].flatten_all()?.to_vec1::<f32>()?[0];
                Ok((a, b))
            }
            Head::Classifier => Ok((0.0, 0.0)),
        }
    }

    /// Similarity of the pairs of `groups`, whose images are stacked as `[a_0..a_n, b_0..b_n]`
    /// in `x`.
    fn pair_similarity(
        &self,
        t: &[Tensor],
        x: &Tensor,
        groups: Grouping,
        masks: Option<&[Tensor; 2]>,
    ) -> Result<Tensor, ModelError> {
        let n = groups.per_pair().rows();
        let weights = LeNetWeights { t: &t[..10] };
        let e = lenet::forward_masked(&self.spec, weights, x, groups, masks)?;
        let diff = (e.narrow(0, 0, n)? - e.narrow(0, n, n)?)?;
        let d = (diff.sqr()?.sum(1)? + DIST_EPS)?.sqrt()?;
        Ok(similarity(&d, &t[10], &t[11], groups.per_pair())?)
    }

    /// Forward and backward over a batch of pairs: `x` holds the first images of all pairs, then
    /// the second images; `same` is 1.0 for a same-class pair. Weight gradients are summed per
    /// micro-batch of `per` pairs and then over micro-batches by the fixed tree of
    /// `aggregation::tree`, so a batch split into canonical blocks adds up to the same bytes.
    pub fn pair_step(&self, x: &Tensor, same: &Tensor, per: usize) -> Result<PairStep, ModelError> {
        self.pair_step_masked(x, same, per, None)
    }

    /// [`Network::pair_step`] with dropout masks for the hidden layers, one row per image of
    /// `x` (see [`lenet::forward_masked`]).
    pub fn pair_step_masked(
        &self,
        x: &Tensor,
        same: &Tensor,
        per: usize,
        masks: Option<&[Tensor; 2]>,
    ) -> Result<PairStep, ModelError> {
        if !matches!(self.spec.head, Head::Siamese { .. }) {
            return Err(candle_core::Error::Msg("pair_step needs the siamese head".into()).into());
        }
        let pairs = same.dim(0)?;
        let groups = Grouping::stacked(MicroBatches::new(pairs, per)?);
        if x.dim(0)? != groups.rows() {
            return Err(candle_core::Error::Msg(format!(
                "pair_step: {} images for {pairs} pairs (two images a pair)",
                x.dim(0)?
            ))
            .into());
        }
        if let Some(m) = masks {
            for (mask, width) in m.iter().zip(lenet::HIDDEN) {
                if mask.dims() != [groups.rows(), width] {
                    return Err(candle_core::Error::Msg(format!(
                        "pair_step: a dropout mask of shape {:?} for {} images of {width} units",
                        mask.dims(),
                        groups.rows()
                    ))
                    .into());
                }
            }
        }
        let t = self.tensors(true);
        let s = self.pair_similarity(&t, x, groups, masks)?;
        let loss = contrastive_loss_sum(&s, same)?;
        let grads = loss.backward()?;
        Ok(PairStep {
            loss_sum: loss.to_dtype(DType::F32)?.to_scalar::<f32>()?,
            similarity: s.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            grad: self.flat_gradient(&grads)?,
        })
    }

    /// Forward and backward of the classifier over a batch of images `x` `[n, c, h, w]` with class
    /// indices `labels` `[n]` (u32): softmax cross-entropy summed over the batch.
    pub fn class_step(&self, x: &Tensor, labels: &Tensor) -> Result<ClassStep, ModelError> {
        if self.spec.head != Head::Classifier {
            return Err(
                candle_core::Error::Msg("class_step needs the classifier head".into()).into(),
            );
        }
        let t = self.tensors(true);
        // Micro-batches of images keep the backward parallel; nothing needs the classifier's
        // gradient to match across splits.
        let groups = Grouping::flat(MicroBatches::new(x.dim(0)?, DEFAULT_MICRO_BATCH)?);
        let logits = lenet::forward(&self.spec, LeNetWeights { t: &t[..10] }, x, groups)?;
        let loss = cross_entropy_sum(&logits, labels)?;
        let grads = loss.backward()?;
        let correct = logits
            .argmax(D::Minus1)?
            .eq(labels)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()?;
        Ok(ClassStep {
            loss_sum: loss.to_dtype(DType::F32)?.to_scalar::<f32>()?,
            correct: correct as usize,
            grad: self.flat_gradient(&grads)?,
        })
    }

    /// Collects the gradient of every parameter into one flat vector (zeros where none flowed).
    fn flat_gradient(&self, grads: &GradStore) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::with_capacity(self.spec.num_params());
        for var in &self.vars {
            match grads.get(var.as_tensor()) {
                Some(g) => out.extend(g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
                None => out.extend(std::iter::repeat_n(0.0, var.elem_count())),
            }
        }
        Ok(out)
    }
}
