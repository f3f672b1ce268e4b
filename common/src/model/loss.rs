//! The paper's contrastive loss on the predicted similarity (eq. 2, margin 1), and the softmax
//! cross-entropy of the plain LeNet-5 classifier it is compared with.

use candle_core::{D, Result, Tensor};

/// The loss margin of the paper.
pub const MARGIN: f32 = 1.0;

/// Mean over the batch of `(1 - y) s^2 + y max(margin - s, 0)^2`, with `y = 1` for same-class pairs.
pub fn contrastive_loss(s: &Tensor, y: &Tensor) -> Result<Tensor> {
    contrastive_loss_sum(s, y)? / s.elem_count() as f64
}

/// The same loss summed over the batch: what replicas differentiate, so that shard gradients
/// add up to the batch's without a per-shard 1/n rounding.
pub fn contrastive_loss_sum(s: &Tensor, y: &Tensor) -> Result<Tensor> {
    let different = (1.0 - y)?.mul(&s.sqr()?)?;
    let same = y.mul(&(MARGIN as f64 - s)?.relu()?.sqr()?)?;
    (different + same)?.sum_all()
}

/// Softmax cross-entropy of `logits` `[n, classes]` against class indices `labels` `[n]` (u32),
/// summed over the batch: summed for the same reason as the contrastive loss, so that shard
/// gradients add up to the batch's.
pub fn cross_entropy_sum(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    log_p.gather(&labels.unsqueeze(1)?, 1)?.sum_all()?.neg()
}

/// The same loss for one pair, for evaluation without building a graph.
pub fn pair_loss(s: f32, same: bool) -> f32 {
    if same {
        (MARGIN - s).max(0.0).powi(2)
    } else {
        s * s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn loss_matches_hand_computed_values() {
        // Pairs: (s=0.9, same), (s=0.2, different), (s=0.3, same), (s=0.75, different).
        // Terms: 0.1^2 = 0.01, 0.2^2 = 0.04, 0.7^2 = 0.49, 0.75^2 = 0.5625; mean = 1.1025 / 4.
        let s = Tensor::new(&[0.9f32, 0.2, 0.3, 0.75], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0, 1.0, 0.0], &Device::Cpu).unwrap();
        let got = contrastive_loss(&s, &y)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got - 0.275_625).abs() < 1e-6, "got {got}");
        let scalar: f32 = [(0.9, true), (0.2, false), (0.3, true), (0.75, false)]
            .iter()
            .map(|&(s, y)| pair_loss(s, y))
            .sum::<f32>()
            / 4.0;
        assert!((scalar - 0.275_625).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_matches_hand_computed_values() {
        // Sample 1: logits (1, 2, 3), class 2: -ln(e^3 / (e + e^2 + e^3)) = ln(1 + e^-1 + e^-2).
        // Sample 2: logits (0, 0, 0), class 1: ln 3.
        let logits = Tensor::new(&[[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[2u32, 1], &Device::Cpu).unwrap();
        let got = cross_entropy_sum(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln() + 3.0f64.ln();
        assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
        assert!((want - 1.506_218).abs() < 1e-6);
    }

    #[test]
    fn loss_gradient_matches_hand_derivative() {
        // d/ds of (1-y)s^2 + y(1-s)^2 over a mean of 2: same pair s=0.6 -> -2*0.4/2 = -0.4;
        // different pair s=0.6 -> 2*0.6/2 = 0.6.
        let s = candle_core::Var::new(&[0.6f32, 0.6], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0], &Device::Cpu).unwrap();
        let loss = contrastive_loss(s.as_tensor(), &y).unwrap();
        let g = loss.backward().unwrap();
        let g = g.get(s.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (g[0] + 0.4).abs() < 1e-6 && (g[1] - 0.6).abs() < 1e-6,
            "{g:?}"
        );
    }
}
