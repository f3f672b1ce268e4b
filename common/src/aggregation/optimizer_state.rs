//! Adam applied to the mean gradient: the one place a step changes the weights, whoever holds
//! them (the trainer in this process, the coordinator, or a worker's replica).

use md5::{Digest, Md5};

use super::{AggregationError, check_finite};
use crate::optim::{Adam, AdamConfig};

/// The weights and Adam's state, stepped only by [`OptimizerState::apply`].
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// The weights, in the model's flat layout.
    pub params: Vec<f32>,
    /// Adam's moments and step count.
    pub adam: Adam,
}

impl OptimizerState {
    /// Fresh Adam state (the paper's constants, learning rate `lr`) for `params`.
    pub fn new(params: Vec<f32>, lr: f64) -> Self {
        let adam = Adam::with_lr(lr, params.len());
        OptimizerState { params, adam }
    }

    /// Fresh Adam state with these settings.
    pub fn with_config(params: Vec<f32>, config: AdamConfig) -> Self {
        let adam = Adam::new(config, params.len());
        OptimizerState { params, adam }
    }

    /// Optimizer steps applied so far.
    pub fn steps(&self) -> u64 {
        self.adam.t
    }

    /// One Adam step on the mean gradient of a global batch; a vector of the wrong length or
    /// holding NaN or Inf is refused and nothing changes.
    pub fn apply(&mut self, mean: &[f32]) -> Result<(), AggregationError> {
        if mean.len() != self.params.len() {
            return Err(AggregationError::WrongLength {
                got: mean.len(),
                want: self.params.len(),
            });
        }
        check_finite(mean)?;
        self.adam.step(&mut self.params, mean);
        Ok(())
    }

    /// Hex md5 of the weights (see [`weights_digest`]).
    pub fn digest(&self) -> String {
        weights_digest(&self.params)
    }
}

/// Hex md5 of weights as little-endian f32 bytes: equal digests mean bit-identical replicas.
pub fn weights_digest(values: &[f32]) -> String {
    let mut h = Md5::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_tells_one_bit_apart() {
        let a = [1.0f32, 2.0, 3.0];
        let mut b = a;
        b[1] = f32::from_bits(b[1].to_bits() ^ 1);
        assert_eq!(weights_digest(&a), weights_digest(&a));
        assert_ne!(weights_digest(&a), weights_digest(&b));
        assert_eq!(weights_digest(&a).len(), 32);
    }

    #[test]
    fn apply_refuses_bad_means_and_leaves_the_state() {
        let mut s = OptimizerState::new(vec![1.0, 2.0], 1e-3);
        let before = s.clone();
        assert!(s.apply(&[0.5]).is_err());
        assert!(s.apply(&[0.5, f32::INFINITY]).is_err());
        assert_eq!(s, before);
        s.apply(&[0.5, -0.5]).unwrap();
        assert_eq!(s.steps(), 1);
        assert!(s.params[0] < 1.0 && s.params[1] > 2.0);
    }
}
