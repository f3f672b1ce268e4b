//! One LeNet-5 stage, conv -> bias -> ReLU -> 2x2 max-pool, as a single Candle op.
//!
//! Stock Candle 0.11 runs this stage's training step about 9x slower than PyTorch on CPU (its
//! conv backward is a scalar loop and its max-pool backward mis-scales the gradient, see
//! `../shared/notes/candle-cpu.md`). Fusing the stage lets the forward keep a one-byte argmax per
//! pooled output, so the backward touches only the winning quarter of the conv output, and lets
//! the whole stage run as per-image im2col + one GEMM, parallel over images. Devices other than
//! the CPU compose Candle's own ops instead ([`conv_relu_pool_reference`]), which is also what the
//! tests hold this kernel to.

use std::ops::Range;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv_geom::ConvGeom;
use super::conv_kernels::{self as kernels, Grads, Prepared, lanes_for};
use super::cpu_view::{storage_slice, tensor_slice};

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
}

/// Splits `n` images into one contiguous range per worker thread.
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
        let ranges = image_ranges(n);
        let per = ranges.first().map_or(1, |r| r.len());
        let mut dx = if self.input_grad {
            vec![0.0f32; n * g.in_len()]
        } else {
            Vec::new()
        };
        let mut dx_chunks: Vec<&mut [f32]> = dx.chunks_mut(per * g.in_len()).collect();
        dx_chunks.resize_with(ranges.len(), Default::default);
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
        let partials: Vec<(Vec<f64>, Vec<f64>)> = ranges
            .into_par_iter()
            .zip(dx_chunks.into_par_iter())
            .map(|(r, dx)| {
                let mut dw8 = vec![0.0f64; kernels::dw8_len(&g)];
                let mut db = vec![0.0f64; g.cout];
                kernels::backward(
                    &g,
                    &prepared,
                    &xs[r.start * il..r.end * il],
                    &os[r.start * ol..r.end * ol],
                    &gs[r.start * ol..r.end * ol],
                    &argmax[r.start * ol..r.end * ol],
                    Grads {
                        dx,
                        dw8: &mut dw8,
                        db: &mut db,
                    },
                );
                (dw8, db)
            })
            .collect();
        let mut dw8 = vec![0.0f64; kernels::dw8_len(&g)];
        let mut db = vec![0.0f64; g.cout];
        for (pw, pb) in partials {
            dw8.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
        }
        let dw = kernels::unpad_weight_grad(&g, &dw8);
        let dev = x.device();
        let dx = if self.input_grad {
            Some(Tensor::from_vec(dx, x.shape(), dev)?)
        } else {
            None
        };
        Ok((
            dx,
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(
                db.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                g.cout,
                dev,
            )?),
        ))
    }
}

/// Conv (stride 1) -> bias -> ReLU -> 2x2 max-pool, with the fused kernel on the CPU.
///
/// `input_grad` says whether gradients must flow into `x` (false for the first layer).
pub fn conv_relu_pool(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    geom: ConvGeom,
    input_grad: bool,
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return conv_relu_pool_reference(x, w, b, geom.pad);
    }
    let op = ConvReluPool {
        geom,
        input_grad,
        argmax: Mutex::new(Vec::new()),
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
