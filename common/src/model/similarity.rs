//! The similarity unit `s = sigmoid(a d + b)` as one op whose slope and offset gradients sum
//! over pairs by micro-batch and tree.
//!
//! Composed from Candle's `broadcast_mul`, `broadcast_add` and `sigmoid`, the gradients of the
//! two scalars `a` and `b` are Candle's own f32 sums over the whole call, whose order depends on
//! the call's size: the one place left where a split batch would add up differently. Here each
//! micro-batch sums its pairs in f64 and rounds once, and the micro-batches meet in the fixed
//! tree of `aggregation::tree`, like every other weight gradient of the model.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::cpu_view::{storage_slice, tensor_slice};
use super::grouping::Grouping;
use crate::aggregation::tree::sum_leaves;

/// The op's name in errors.
const OP: &str = "similarity_unit";

/// `sigmoid(a d + b)` over (distances `[n]`, slope `[1]`, offset `[1]`).
struct SimilarityUnit {
    /// The pairs each leaf of the slope and offset gradients sums.
    groups: Grouping,
}

/// The logistic function as Candle computes it, so both paths give the same similarities.
fn sigmoid(z: f32) -> f32 {
    ((-z).exp() + 1.0).recip()
}

impl CustomOp3 for SimilarityUnit {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = l1.shape().dims1()?;
        if l2.shape().elem_count() != 1 || l3.shape().elem_count() != 1 {
            candle_core::bail!(
                "{OP}: slope {:?} and offset {:?} must hold one value each",
                l2.shape(),
                l3.shape()
            );
        }
        let d = storage_slice(s1, l1, OP, "distances")?;
        let a = storage_slice(s2, l2, OP, "slope")?[0];
        let b = storage_slice(s3, l3, OP, "offset")?[0];
        // Multiply, then add, each rounded: what `broadcast_mul` + `broadcast_add` do.
        let s = d.iter().map(|&d| sigmoid(d * a + b)).collect();
        Ok((CpuStorage::F32(s), Shape::from(n)))
    }

    fn bwd(
        &self,
        d: &Tensor,
        a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = d.dim(0)?;
        self.groups.check(n, OP)?;
        let (d, a, res, grad) = (
            d.contiguous()?,
            a.contiguous()?,
            res.contiguous()?,
            grad.contiguous()?,
        );
        let (dg, dl) = d.storage_and_layout();
        let (ag, al) = a.storage_and_layout();
        let (sg, sl) = res.storage_and_layout();
        let (gg, gl) = grad.storage_and_layout();
        let (ds, s, gs) = (
            tensor_slice(&dg, dl, OP)?,
            tensor_slice(&sg, sl, OP)?,
            tensor_slice(&gg, gl, OP)?,
        );
        let slope = tensor_slice(&ag, al, OP)?[0];
        // dL/dz per pair, rounded as Candle's sigmoid backward rounds it: g ((1 - s) s).
        let dz: Vec<f32> = gs
            .iter()
            .zip(s)
            .map(|(&g, &s)| g * ((1.0 - s) * s))
            .collect();
        let dd: Vec<f32> = dz.iter().map(|&z| z * slope).collect();
        // Two values a leaf: the slope's gradient, then the offset's.
        let mut sums = vec![0.0f32; 2 * self.groups.leaves()];
        for (leaf, out) in sums.chunks_exact_mut(2).enumerate() {
            let (mut da, mut db) = (0.0f64, 0.0f64);
            for i in self.groups.runs(leaf).into_iter().flatten() {
                da += f64::from(dz[i]) * f64::from(ds[i]);
                db += f64::from(dz[i]);
            }
            out.copy_from_slice(&[da as f32, db as f32]);
        }
        let mut root = sum_leaves(&mut sums, 2).to_vec();
        // No pairs, no leaves: a zero gradient.
        root.resize(2, 0.0);
        let dev = d.device();
        Ok((
            Some(Tensor::from_vec(dd, n, dev)?),
            Some(Tensor::from_vec(vec![root[0]], a.shape(), dev)?),
            Some(Tensor::from_vec(vec![root[1]], a.shape(), dev)?),
        ))
    }
}

/// Similarity `sigmoid(a d + b)` of pairs at distances `d` (`[n]`), with slope `a` and offset `b`
/// (one value each); on the CPU their gradients sum over `groups`' leaves and tree.
pub fn similarity(d: &Tensor, a: &Tensor, b: &Tensor, groups: Grouping) -> Result<Tensor> {
    if !d.device().is_cpu() {
        let z = d.broadcast_mul(a)?.broadcast_add(b)?;
        return candle_nn::ops::sigmoid(&z);
    }
    let (d, a, b) = (d.contiguous()?, a.contiguous()?, b.contiguous()?);
    let op = SimilarityUnit { groups };
    if d.track_op() || a.track_op() || b.track_op() {
        d.apply_op3(&a, &b, op)
    } else {
        d.apply_op3_no_bwd(&a, &b, &op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::tree::MicroBatches;
    use candle_core::{Device, Var};

    /// The op's similarities and gradients against Candle's composition, which it replaces.
    #[test]
    fn matches_candle_ops_and_their_gradients() {
        let dev = Device::Cpu;
        let dist: Vec<f32> = (0..21).map(|i| 0.05 + 0.13 * i as f32).collect();
        let d = Var::from_vec(dist, 21, &dev).unwrap();
        let a = Var::from_vec(vec![-1.7f32], 1, &dev).unwrap();
        let b = Var::from_vec(vec![2.2f32], 1, &dev).unwrap();
        let probe: Vec<f32> = (0..21).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let probe = Tensor::from_vec(probe, 21, &dev).unwrap();
        let groups = Grouping::flat(MicroBatches::new(21, 4).unwrap());
        let ours = similarity(&d, &a, &b, groups).unwrap();
        let z = d.broadcast_mul(&a).unwrap().broadcast_add(&b).unwrap();
        let theirs = candle_nn::ops::sigmoid(&z).unwrap();
        assert_eq!(
            ours.to_vec1::<f32>().unwrap(),
            theirs.to_vec1::<f32>().unwrap()
        );
        let g1 = (ours * &probe).unwrap().sum_all().unwrap().backward();
        let g2 = (theirs * &probe).unwrap().sum_all().unwrap().backward();
        let (g1, g2) = (g1.unwrap(), g2.unwrap());
        let dd = |g: &candle_core::backprop::GradStore| g.get(&d).unwrap().to_vec1::<f32>();
        assert_eq!(dd(&g1).unwrap(), dd(&g2).unwrap());
        for v in [&a, &b] {
            let (x, y) = (
                g1.get(v).unwrap().to_vec1::<f32>().unwrap()[0],
                g2.get(v).unwrap().to_vec1::<f32>().unwrap()[0],
            );
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
        }
    }
}
