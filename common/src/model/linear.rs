//! A fully connected layer whose results do not depend on how samples are batched.
//!
//! Candle's matmul picks different kernels for different batch sizes, so the same image gets
//! slightly different activations in a batch of 21 and in one of 64, and its weight gradient sums
//! over the batch in an order set by the kernel's blocking. Data-parallel training must give the
//! same model whatever the sharding (and Adam turns tiny differences in near-zero gradients
//! into steps of size lr), so this layer computes every output row with one fixed-order dot
//! product, and sums the weight and bias gradients per micro-batch in f64, then over
//! micro-batches by the fixed tree of `aggregation::tree`.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_view::{storage_slice, tensor_slice};
use super::grouping::Grouping;
use super::kernel_path::KernelPath;
use super::simd::{Lanes8, Scalar, sum_lanes};
use crate::aggregation::tree::sum_leaves;

/// Dot products of `R` rows of `x` with `O` weight rows, each with a fixed association: four
/// independent eight-lane chains (one chain would wait on the FMA latency), an eight-lane tail, a
/// scalar tail, then a fixed tree. Blocking rows and outputs only shares loads between the
/// products (each of the `R x O` sums keeps its own chains), so every result has the same bits
/// whatever `R` and `O` are.
#[inline(always)]
fn dots<S: Lanes8, const R: usize, const O: usize>(
    xs: [&[f32]; R],
    ws: [&[f32]; O],
    n: usize,
) -> [[f32; O]; R] {
    let (mut acc, mut i) = ([[[S::zero(); 4]; O]; R], 0);
    while i + 32 <= n {
        for c in 0..4 {
            let mut wv = [S::zero(); O];
            for q in 0..O {
                wv[q] = S::load(&ws[q][i + 8 * c..]);
            }
            for r in 0..R {
                let xv = S::load(&xs[r][i + 8 * c..]);
                for q in 0..O {
                    acc[r][q][c] = S::madd(xv, wv[q], acc[r][q][c]);
                }
            }
        }
        i += 32;
    }
    while i + 8 <= n {
        let mut wv = [S::zero(); O];
        for q in 0..O {
            wv[q] = S::load(&ws[q][i..]);
        }
        for r in 0..R {
            let xv = S::load(&xs[r][i..]);
            for q in 0..O {
                acc[r][q][0] = S::madd(xv, wv[q], acc[r][q][0]);
            }
        }
        i += 8;
    }
    // Loops rather than `array::from_fn`: a closure is not compiled with the caller's target
    // features, so its intrinsics would become calls.
    let mut out = [[0.0f32; O]; R];
    for r in 0..R {
        for q in 0..O {
            let mut tail = 0.0f32;
            for j in i..n {
                tail += xs[r][j] * ws[q][j];
            }
            let a = &acc[r][q];
            out[r][q] = sum_lanes::<S>(S::add(S::add(a[0], a[1]), S::add(a[2], a[3]))) + tail;
        }
    }
    out
}

/// `y += alpha * x`, eight lanes at a time.
#[inline(always)]
fn axpy<S: Lanes8>(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let full = n / 8 * 8;
    let a = S::splat(alpha);
    let mut i = 0;
    while i < full {
        let sum = S::madd(a, S::load(&x[i..]), S::load(&y[i..]));
        S::store(&mut y[i..], sum);
        i += 8;
    }
    for j in full..n {
        y[j] += alpha * x[j];
    }
}

/// `y[i] = x[i] . w[o] + b[o]` for a run of rows, in blocks of `R` rows and `O` outputs (as
/// many accumulators as the target's registers hold), then single rows and outputs.
#[inline(always)]
fn forward_rows<S: Lanes8, const R: usize, const O: usize>(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    k: usize,
) {
    let m = b.len();
    let rows = x.len() / k;
    let wrow = |o: usize| &w[o * k..(o + 1) * k];
    let mut i = 0;
    while i < rows {
        if i + R <= rows {
            let xs: [&[f32]; R] = std::array::from_fn(|r| &x[(i + r) * k..(i + r + 1) * k]);
            let mut o = 0;
            while o + O <= m {
                let d = dots::<S, R, O>(xs, std::array::from_fn(|q| wrow(o + q)), k);
                for (r, dr) in d.iter().enumerate() {
                    for (q, v) in dr.iter().enumerate() {
                        y[(i + r) * m + o + q] = v + b[o + q];
                    }
                }
                o += O;
            }
            for o in o..m {
                let d = dots::<S, R, 1>(xs, [wrow(o)], k);
                for (r, dr) in d.iter().enumerate() {
                    y[(i + r) * m + o] = dr[0] + b[o];
                }
            }
            i += R;
        } else {
            let xi = &x[i * k..(i + 1) * k];
            for o in 0..m {
                y[i * m + o] = dots::<S, 1, 1>([xi], [wrow(o)], k)[0][0] + b[o];
            }
            i += 1;
        }
    }
}

/// `dx[i] = sum_o g[i, o] w[o]` for a run of rows, in a fixed order.
#[inline(always)]
fn input_grad_rows<S: Lanes8>(g: &[f32], w: &[f32], dx: &mut [f32], k: usize, m: usize) {
    for (gi, dxi) in g.chunks_exact(m).zip(dx.chunks_exact_mut(k)) {
        dxi.fill(0.0);
        for (o, &go) in gi.iter().enumerate() {
            if go != 0.0 {
                axpy::<S>(go, &w[o * k..(o + 1) * k], dxi);
            }
        }
    }
}

/// One leaf's share of weight-gradient row `o` and of its bias: the leaf's rows summed in f64 in
/// order and rounded once, into `out` (`k` weights, then the bias).
#[inline(always)]
fn weight_grad_leaf(
    g: &[f32],
    x: &[f32],
    o: usize,
    (m, k): (usize, usize),
    runs: [Range<usize>; 2],
    acc: &mut [f64],
    out: &mut [f32],
) {
    let (mut bias, mut started) = (0.0f64, false);
    for i in runs.into_iter().flatten() {
        let go = f64::from(g[i * m + o]);
        if go == 0.0 {
            continue;
        }
        bias += go;
        let xi = &x[i * k..(i + 1) * k];
        if started {
            for (a, &xv) in acc.iter_mut().zip(xi) {
                *a += go * f64::from(xv);
            }
        } else {
            // The first product starts the sum, saving a pass that zeroes `acc` (0 + p would
            // differ only in the sign of a zero).
            for (a, &xv) in acc.iter_mut().zip(xi) {
                *a = go * f64::from(xv);
            }
            started = true;
        }
    }
    if started {
        for (d, a) in out.iter_mut().zip(acc.iter()) {
            *d = *a as f32;
        }
    } else {
        out[..k].fill(0.0);
    }
    out[k] = bias as f32;
}

/// The kernels compiled with the features `$features` enabled. The eight-lane code compiled with
/// AVX-512 enabled does the same operations (so gives the same bits) and lets the compiler widen
/// the f64 weight-gradient loops; these layers are a few percent of a step, too little to pay for
/// 16-lane versions of their own. The forward blocks `$rows x $outs` dot products: 4 chains
/// each, so 8 accumulators fit AVX2's 16 registers and 16 fit AVX-512's 32 (each block shares
/// its weight loads between rows and its input loads between outputs, where the forward of
/// test scoring was bound by loads).
#[cfg(target_arch = "x86_64")]
macro_rules! compiled_with {
    ($name:ident, $features:literal, $rows:literal, $outs:literal) => {
        mod $name {
            use super::super::simd::Avx2;

            #[target_feature(enable = $features)]
            pub(super) unsafe fn forward_rows(
                x: &[f32],
                w: &[f32],
                b: &[f32],
                y: &mut [f32],
                k: usize,
            ) {
                super::forward_rows::<Avx2, $rows, $outs>(x, w, b, y, k)
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn input_grad_rows(
                g: &[f32],
                w: &[f32],
                dx: &mut [f32],
                k: usize,
                m: usize,
            ) {
                super::input_grad_rows::<Avx2>(g, w, dx, k, m)
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn weight_grad_leaf(
                g: &[f32],
                x: &[f32],
                o: usize,
                mk: (usize, usize),
                runs: [std::ops::Range<usize>; 2],
                acc: &mut [f64],
                out: &mut [f32],
            ) {
                super::weight_grad_leaf(g, x, o, mk, runs, acc, out)
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
compiled_with!(avx2, "avx2,fma", 2, 1);
#[cfg(target_arch = "x86_64")]
compiled_with!(avx512, "avx512f,avx512vl,avx2,fma", 2, 2);

/// The op's name in errors.
const OP: &str = "batch_invariant_linear";

/// The layer as a Candle op over (input, weight, bias).
struct BatchInvariantLinear {
    /// The rows each leaf of the weight and bias gradients sums.
    groups: Grouping,
}

impl CustomOp3 for BatchInvariantLinear {
    fn name(&self) -> &'static str {
        "batch_invariant_linear"
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
        let (n, k) = l1.shape().dims2()?;
        let (m, k2) = l2.shape().dims2()?;
        if k != k2 || l3.shape().dims() != [m] {
            candle_core::bail!(
                "linear: input {:?}, weight {:?}, bias {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (x, w, b) = (
            storage_slice(s1, l1, OP, "input")?,
            storage_slice(s2, l2, OP, "weight")?,
            storage_slice(s3, l3, OP, "bias")?,
        );
        let mut y = vec![0.0f32; n * m];
        let path = KernelPath::current();
        y.par_chunks_mut(m * 16)
            .zip(x.par_chunks(k * 16))
            .for_each(|(yc, xc)| match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `KernelPath` chose this path only where the CPU has its features.
                KernelPath::Avx512 => unsafe { avx512::forward_rows(xc, w, b, yc, k) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                KernelPath::Avx2 => unsafe { avx2::forward_rows(xc, w, b, yc, k) },
                _ => forward_rows::<Scalar, 1, 1>(xc, w, b, yc, k),
            });
        Ok((CpuStorage::F32(y), Shape::from((n, m))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, w, grad) = (x.contiguous()?, w.contiguous()?, grad.contiguous()?);
        let (n, k) = x.dims2()?;
        let m = w.dim(0)?;
        let (xg, xl) = x.storage_and_layout();
        let (wg, wl) = w.storage_and_layout();
        let (gg, gl) = grad.storage_and_layout();
        let (xs, ws, gs) = (
            tensor_slice(&xg, xl, OP)?,
            tensor_slice(&wg, wl, OP)?,
            tensor_slice(&gg, gl, OP)?,
        );
        let path = KernelPath::current();
        let mut dx = vec![0.0f32; n * k];
        dx.par_chunks_mut(k * 16)
            .zip(gs.par_chunks(m * 16))
            .for_each(|(dxc, gc)| match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `KernelPath` chose this path only where the CPU has its features.
                KernelPath::Avx512 => unsafe { avx512::input_grad_rows(gc, ws, dxc, k, m) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                KernelPath::Avx2 => unsafe { avx2::input_grad_rows(gc, ws, dxc, k, m) },
                _ => input_grad_rows::<Scalar>(gc, ws, dxc, k, m),
            });
        let groups = self.groups;
        groups.check(n, OP)?;
        let leaves = groups.leaves();
        let mut dw = vec![0.0f32; m * k];
        let mut db = vec![0.0f32; m];
        // Parallel over output rows, each summing its own leaves and tree: no reduction crosses
        // threads, so the thread count cannot change a bit.
        dw.par_chunks_mut(k)
            .zip(db.par_iter_mut())
            .enumerate()
            .for_each_init(
                || (vec![0.0f64; k], vec![0.0f32; leaves * (k + 1)]),
                |(acc, sums), (o, (row, bias))| {
                    if leaves == 0 {
                        return;
                    }
                    for (leaf, out) in sums.chunks_exact_mut(k + 1).enumerate() {
                        let (runs, mk) = (groups.runs(leaf), (m, k));
                        match path {
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: `KernelPath` chose this path only where the CPU has its
                            // features.
                            KernelPath::Avx512 => unsafe {
                                avx512::weight_grad_leaf(gs, xs, o, mk, runs, acc, out)
                            },
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: as above.
                            KernelPath::Avx2 => unsafe {
                                avx2::weight_grad_leaf(gs, xs, o, mk, runs, acc, out)
                            },
                            _ => weight_grad_leaf(gs, xs, o, mk, runs, acc, out),
                        }
                    }
                    let root = sum_leaves(sums, k + 1);
                    row.copy_from_slice(&root[..k]);
                    *bias = root[k];
                },
            );
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, k), dev)?),
            Some(Tensor::from_vec(dw, (m, k), dev)?),
            Some(Tensor::from_vec(db, m, dev)?),
        ))
    }
}

/// `x w^T + b` for `x: [n, k]`, `w: [m, k]`, `b: [m]`; batch-invariant on the CPU, with weight
/// and bias gradients summed over `groups`' leaves and tree; Candle's matmul elsewhere.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, groups: Grouping) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.matmul(&w.t()?)?.broadcast_add(b);
    }
    let x = x.contiguous()?;
    let op = BatchInvariantLinear { groups };
    if x.track_op() || w.track_op() || b.track_op() {
        x.apply_op3(w, b, op)
    } else {
        x.apply_op3_no_bwd(w, b, &op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::tree::MicroBatches;
    use crate::model::kernel_path::{forced_pool, simd_paths};
    use crate::model::simd::portable_pool;
    use candle_core::{Device, Module, Var};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Forward and all three gradients against Candle's own layer, under `groups`.
    fn matches_candle(groups: Grouping) {
        let (dev, n) = (Device::Cpu, groups.rows());
        let x = Var::from_vec(values(n * 45, 1), (n, 45), &dev).unwrap();
        let w = Var::from_vec(values(13 * 45, 2), (13, 45), &dev).unwrap();
        let b = Var::from_vec(values(13, 3), 13, &dev).unwrap();
        let probe = Tensor::from_vec(values(n * 13, 4), (n, 13), &dev).unwrap();
        let ours = linear(&x, &w, &b, groups).unwrap();
        let theirs = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()))
            .forward(&x)
            .unwrap();
        assert!(diff(&ours, &theirs) < 1e-5);
        let g1 = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (theirs * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            assert!(diff(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-4);
        }
    }

    #[test]
    fn matches_candle_linear_and_its_gradients() {
        let groupings = [
            Grouping::flat(MicroBatches::whole(37)),
            Grouping::flat(MicroBatches::new(37, 5).unwrap()),
            Grouping::stacked(MicroBatches::new(19, 4).unwrap()),
        ];
        for groups in groupings {
            for path in simd_paths() {
                forced_pool(path, 2).install(|| matches_candle(groups));
            }
            portable_pool(2).install(|| matches_candle(groups));
        }
    }

    #[test]
    fn rejects_a_batch_its_grouping_does_not_describe() {
        let dev = Device::Cpu;
        let x = Var::from_vec(values(6 * 4, 1), (6, 4), &dev).unwrap();
        let w = Var::from_vec(values(2 * 4, 2), (2, 4), &dev).unwrap();
        let b = Var::from_vec(values(2, 3), 2, &dev).unwrap();
        let groups = Grouping::stacked(MicroBatches::new(2, 1).unwrap());
        let y = linear(&x, &w, &b, groups).unwrap();
        let err = y.sum_all().unwrap().backward().unwrap_err().to_string();
        assert!(err.contains("6 rows") && err.contains("2 pairs"), "{err}");
    }

    #[test]
    fn rows_do_not_depend_on_the_batch() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(values(64 * 84, 5), (64, 84), &dev).unwrap();
        // 11 outputs and odd batches: the forward's blocks of rows and outputs leave remainders.
        let w = Tensor::from_vec(values(11 * 84, 6), (11, 84), &dev).unwrap();
        let b = Tensor::from_vec(values(11, 7), 11, &dev).unwrap();
        let at = |n: usize| {
            linear(
                &x.narrow(0, 0, n).unwrap(),
                &w,
                &b,
                Grouping::flat(MicroBatches::whole(n)),
            )
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
        };
        let (whole, portable) = (at(64), portable_pool(1).install(|| at(64)));
        for n in [1, 3, 21] {
            assert_eq!(at(n)[..], whole[..n]);
            assert_eq!(portable_pool(1).install(|| at(n))[..], portable[..n]);
        }
    }
}
