//! One LeNet-5 stage, conv -> bias -> ReLU -> 2x2 max-pool, as a single Candle op.
//!
//! Stock Candle 0.11 runs this stage's training step about 9x slower than PyTorch on CPU (its
//! conv backward is a scalar loop and its max-pool backward mis-scales the gradient, see
//! `../shared/notes/candle-cpu.md`). Fusing the stage lets the forward keep a one-byte argmax per
//! pooled output, so the backward touches only the winning quarter of the conv output, and lets
//! the whole stage run as per-image im2col + one GEMM, parallel over images. The backward runs
//! parallel over micro-batches: each sums its images' weight and bias gradients in f64 and rounds
//! once, and the micro-batches meet in the fixed tree of `aggregation::tree`, so neither the
//! thread count nor the split of a batch among workers changes a bit. Devices other than the CPU
//! compose Candle's own ops instead ([`conv_relu_pool_reference`]), which is also what the tests
//! hold this kernel to.

use std::ops::Range;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv_geom::ConvGeom;
use super::conv_kernels::{self as kernels, Grads, Prepared, Run, Scratch, lanes_for};
use super::cpu_view::{storage_slice, tensor_slice};
use super::grouping::Grouping;
use crate::aggregation::tree::sum_leaves;

/// The op's name in errors.
const OP: &str = "conv_relu_pool";

/// The fused stage as a Candle custom op over (input, weight, bias).
struct ConvReluPool {
    geom: ConvGeom,
    /// Whether the backward must produce the input gradient (not for the first layer, whose
    /// input is data: skipping it saved a third of stock Candle's backward time).
    input_grad: bool,
    /// Index (0..4) of the winner in each 2x2 window, written by the forward for the backward.
    argmax: Mutex<Vec<u8>>,
    /// The images each leaf of the weight and bias gradients sums.
    groups: Grouping,
}

/// Splits `n` images into one contiguous range per worker thread (for the forward, which sums
/// nothing across images).
fn image_ranges(n: usize) -> Vec<Range<usize>> {
    let per = n.div_ceil(rayon::current_num_threads().max(1)).max(1);
    (0..n).step_by(per).map(|s| s..(s + per).min(n)).collect()
}

impl ConvReluPool {
    fn check(&self, x: &Shape, w: &Shape, b: &Shape) -> Result<usize> {
        let g = &self.geom;
        let (n, c, h, wd) = x.dims4()?;
        if (c, h, wd) != (g.cin, g.h, g.w) {
            candle_core::bail!(
                "conv_relu_pool: input is {c}x{h}x{wd} per image, expected {}x{}x{}",
                g.cin,
                g.h,
                g.w
            );
        }
        if w.dims() != [g.cout, g.cin, g.k, g.k] || b.dims() != [g.cout] {
            candle_core::bail!("conv_relu_pool: weight {w:?} / bias {b:?} do not match {g:?}");
        }
        if lanes_for(g.cout).is_none() || g.k > 8 {
            candle_core::bail!(
                "conv_relu_pool: the fused kernel takes up to 16 filters of up to 8x8, not {g:?}"
            );
        }
        if !g.conv_h().is_multiple_of(2) || !g.conv_w().is_multiple_of(2) {
            candle_core::bail!(
                "conv_relu_pool: conv output {}x{} is not even",
                g.conv_h(),
                g.conv_w()
            );
        }
        Ok(n)
    }
}

impl CustomOp3 for ConvReluPool {
    fn name(&self) -> &'static str {
        "conv_relu_pool"
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
        let n = self.check(l1.shape(), l2.shape(), l3.shape())?;
        let (x, w, b) = (
            storage_slice(s1, l1, OP, "input")?,
            storage_slice(s2, l2, OP, "weight")?,
            storage_slice(s3, l3, OP, "bias")?,
        );
        let g = self.geom;
        let mut out = vec![0.0f32; n * g.out_len()];
        let mut argmax = self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("argmax lock poisoned".into()))?;
        argmax.clear();
        argmax.resize(n * g.out_len(), 0);
        let ranges = image_ranges(n);
        let per = ranges.first().map_or(1, |r| r.len());
        let prepared = Prepared::new(&g, w, lanes_for(g.cout).unwrap_or(16));
        out.par_chunks_mut(per * g.out_len())
            .zip(argmax.par_chunks_mut(per * g.out_len()))
            .zip(ranges.into_par_iter())
            .for_each(|((o, a), r)| {
                kernels::forward(
                    &g,
                    &prepared,
                    &x[r.start * g.in_len()..r.end * g.in_len()],
                    b,
                    o,
                    a,
                )
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, g.cout, g.out_h(), g.out_w())),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom;
        let n = x.dim(0)?;
        let argmax = self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("argmax lock poisoned".into()))?;
        if argmax.len() != n * g.out_len() {
            candle_core::bail!("conv_relu_pool: backward without a matching forward");
        }
        let groups = self.groups;
        groups.check(n, OP)?;
        let (x, res, grad_res) = (x.contiguous()?, res.contiguous()?, grad_res.contiguous()?);
        let w = w.contiguous()?;
        let (xg, xl) = x.storage_and_layout();
        let (wg, wl) = w.storage_and_layout();
        let (og, ol) = res.storage_and_layout();
        let (gg, gl) = grad_res.storage_and_layout();
        let (xs, ws) = (tensor_slice(&xg, xl, OP)?, tensor_slice(&wg, wl, OP)?);
        let (os, gs) = (tensor_slice(&og, ol, OP)?, tensor_slice(&gg, gl, OP)?);
        let (il, ol) = (g.in_len(), g.out_len());
        let prepared = Prepared::new(&g, ws, lanes_for(g.cout).unwrap_or(16));
        let mut dx = if self.input_grad {
            vec![0.0f32; n * il]
        } else {
            Vec::new()
        };
        // One leaf per micro-batch: its weight gradient, then its bias gradient.
        let dw_len = g.cout * g.cin * g.k * g.k;
        let width = dw_len + g.cout;
        let mut sums = vec![0.0f32; groups.leaves() * width];
        sums.par_chunks_mut(width)
            .zip(groups.split_rows(&mut dx, il).into_par_iter())
            .enumerate()
            .for_each_init(
                || {
                    let acc = (vec![0.0f64; kernels::dw8_len(&g)], vec![0.0f64; g.cout]);
                    (acc, Scratch::default())
                },
                |((dw8, db), scratch), (leaf, (out, dx_runs))| {
                    dw8.fill(0.0);
                    db.fill(0.0);
                    for (r, dx) in groups.runs(leaf).into_iter().zip(dx_runs) {
                        if r.is_empty() {
                            continue;
                        }
                        let run = Run {
                            x: &xs[r.start * il..r.end * il],
                            out: &os[r.start * ol..r.end * ol],
                            grad: &gs[r.start * ol..r.end * ol],
                            arg: &argmax[r.start * ol..r.end * ol],
                        };
                        kernels::backward(&g, &prepared, run, Grads { dx, dw8, db }, scratch);
                    }
                    let (dw_out, db_out) = out.split_at_mut(dw_len);
                    kernels::unpad_weight_grad(&g, dw8, dw_out);
                    for (o, &v) in db_out.iter_mut().zip(db.iter()) {
                        *o = v as f32;
                    }
                },
            );
        let mut root = sum_leaves(&mut sums, width).to_vec();
        // A batch without images has no leaves and a zero gradient.
        root.resize(width, 0.0);
        let db = root.split_off(dw_len);
        let dev = x.device();
        let dx = if self.input_grad {
            Some(Tensor::from_vec(dx, x.shape(), dev)?)
        } else {
            None
        };
        Ok((
            dx,
            Some(Tensor::from_vec(root, w.shape(), dev)?),
            Some(Tensor::from_vec(db, g.cout, dev)?),
        ))
    }
}

/// Conv (stride 1) -> bias -> ReLU -> 2x2 max-pool, with the fused kernel on the CPU.
///
/// `input_grad` says whether gradients must flow into `x` (false for the first layer); `groups`
/// says which images each leaf of the weight and bias gradients sums.
pub fn conv_relu_pool(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    geom: ConvGeom,
    input_grad: bool,
    groups: Grouping,
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return conv_relu_pool_reference(x, w, b, geom.pad);
    }
    let op = ConvReluPool {
        geom,
        input_grad,
        argmax: Mutex::new(Vec::new()),
        groups,
    };
    let grads_needed = x.track_op() || w.track_op() || b.track_op();
    if grads_needed {
        x.apply_op3(w, b, op)
    } else {
        x.apply_op3_no_bwd(w, b, &op)
    }
}

/// The same stage from Candle's stock ops, for non-CPU devices and as the tests' reference.
///
/// The pool is a reshape plus two `max` reductions rather than `max_pool2d`, whose backward in
/// Candle 0.11 scales the gradient by (number of maxima)/4.
pub fn conv_relu_pool_reference(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize) -> Result<Tensor> {
    let cout = w.dim(0)?;
    let z = x
        .conv2d(w, pad, 1, 1, 1)?
        .broadcast_add(&b.reshape((1, cout, 1, 1))?)?
        .relu()?;
    let (n, c, h, wd) = z.dims4()?;
    z.reshape((n, c, h / 2, 2, wd / 2, 2))?.max(5)?.max(3)
}
