//! The arithmetic of the fused conv stage, on plain slices, for one run of images.
//!
//! Forward: each conv output pixel accumulates all output channels at once (channels are the
//! SIMD lanes, four pixels share every weight load), then the 2x2 pool keeps a one-byte argmax.
//! Backward: the pool leaves at most one non-zero per window and channel, so instead of dense
//! GEMMs over the whole conv output it walks those winners and updates 8-wide runs of the kernel
//! window (`k <= 8`), for the weight gradient and, when asked, the input gradient.
//!
//! The kernels are compiled three times: for the baseline target, with AVX2+FMA, and with
//! AVX-512, where `conv_avx512` replaces the parts that gain from 16 lanes and masks with
//! versions that give the same bits; [`KernelPath`] chooses at run time.

use super::conv_geom::ConvGeom;
use super::kernel_path::KernelPath;
#[cfg(target_arch = "x86_64")]
use super::simd::Avx2;
use super::simd::{Lanes8, Scalar};

/// Width of one kernel-row run: a k-wide window row padded with zero weights.
pub(super) const RUN: usize = 8;
/// Largest kernel side the backward keeps in registers.
const MAX_K: usize = 8;

/// Weights rearranged once per call for the two kernels.
pub(crate) struct Prepared {
    /// `[tap][lanes]`: tap = (ci, ky, kx), output channels as lanes, zero past `cout`.
    pub(super) wt: Vec<f32>,
    /// `[cout][cin][k][RUN]`: kernel rows padded to runs with zeros past `k`.
    pub(super) w8: Vec<f32>,
    /// Padded input row length (`w + 2 pad + RUN`), so every run stays in bounds.
    pub(super) row: usize,
    /// Padded input height.
    pub(super) rows: usize,
}

impl Prepared {
    /// Rearranges `w` (`[cout][cin][k][k]`).
    pub(crate) fn new(g: &ConvGeom, w: &[f32], lanes: usize) -> Self {
        let taps = g.cin * g.k * g.k;
        let mut wt = vec![0.0; taps * lanes];
        let mut w8 = vec![0.0; g.cout * g.cin * g.k * RUN];
        for c in 0..g.cout {
            for t in 0..taps {
                wt[t * lanes + c] = w[c * taps + t];
                let (row, kx) = (t / g.k, t % g.k);
                w8[(c * g.cin * g.k + row) * RUN + kx] = w[c * taps + t];
            }
        }
        Prepared {
            wt,
            w8,
            row: g.w + 2 * g.pad + RUN,
            rows: g.h + 2 * g.pad,
        }
    }

    /// Copies one image into a zero-bordered buffer so no kernel needs bounds logic.
    pub(super) fn pad_into(&self, g: &ConvGeom, img: &[f32], xp: &mut [f32]) {
        xp.fill(0.0);
        for ci in 0..g.cin {
            for y in 0..g.h {
                let dst = (ci * self.rows + y + g.pad) * self.row + g.pad;
                xp[dst..dst + g.w].copy_from_slice(&img[(ci * g.h + y) * g.w..][..g.w]);
            }
        }
    }

    pub(super) fn padded_len(&self, g: &ConvGeom) -> usize {
        g.cin * self.rows * self.row
    }
}

/// Lanes (output channels rounded up to the SIMD width) the forward uses for `cout`.
pub(crate) fn lanes_for(cout: usize) -> Option<usize> {
    match cout {
        1..=8 => Some(8),
        9..=16 => Some(16),
        _ => None,
    }
}

/// Forward over a run of images: pooled, ReLU'd outputs and the winner of every window.
pub(crate) fn forward(
    g: &ConvGeom,
    p: &Prepared,
    x: &[f32],
    b: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
) {
    match KernelPath::current() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `KernelPath` chose this path only where the CPU has AVX-512F/VL, AVX2 and FMA.
        KernelPath::Avx512 => unsafe { super::conv_avx512::forward(g, p, x, b, out, arg) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU reports AVX2 and FMA, the only features the function enables.
        KernelPath::Avx2 => unsafe { forward_avx2(g, p, x, b, out, arg) },
        _ => forward_dispatch::<Scalar>(g, p, x, b, out, arg),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(
    g: &ConvGeom,
    p: &Prepared,
    x: &[f32],
    b: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
) {
    forward_dispatch::<Avx2>(g, p, x, b, out, arg);
}

#[inline(always)]
pub(super) fn forward_dispatch<S: Lanes8>(
    g: &ConvGeom,
    p: &Prepared,
    x: &[f32],
    b: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
) {
    if p.wt.len() == g.cin * g.k * g.k * 8 {
        forward_generic::<S, 1, 8>(g, p, x, b, out, arg);
    } else {
        forward_generic::<S, 2, 4>(g, p, x, b, out, arg);
    }
}

#[inline(always)]
fn forward_generic<S: Lanes8, const V: usize, const P: usize>(
    g: &ConvGeom,
    p: &Prepared,
    x: &[f32],
    b: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
) {
    let lanes = 8 * V;
    let (in_len, out_len) = (g.cin * g.h * g.w, g.out_len());
    let mut xp = vec![0.0f32; p.padded_len(g)];
    // Conv output of one image, pixel-major with channels as lanes.
    let mut z = vec![0.0f32; g.conv_h() * g.conv_w() * lanes];
    let starts = block_starts(g.conv_w(), P);
    let mut bias_lanes = vec![0.0f32; lanes];
    bias_lanes[..g.cout].copy_from_slice(b);
    for ((img, o), a) in x
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
        .zip(arg.chunks_exact_mut(out_len))
    {
        p.pad_into(g, img, &mut xp);
        conv_pixels::<S, V, P>(g, p, &xp, &starts, &mut z);
        pool::<S, V>(g, &z, &bias_lanes, o, a);
    }
}

/// First pixel of every block of `width` pixels along a conv-output row of `wc`; the last block
/// of a row overlaps the one before (recomputing a few pixels is cheaper than a scalar tail, and
/// gives the same values).
pub(super) fn block_starts(wc: usize, width: usize) -> Vec<usize> {
    if wc >= width {
        (0..wc - width)
            .step_by(width)
            .chain(std::iter::once(wc - width))
            .collect()
    } else {
        vec![0]
    }
}

/// The conv output of the padded image `xp` into `z` (`[pixel][8 V lanes]`), in blocks of P
/// pixels (P x V accumulators: enough independent FMA chains to hide latency). Every output
/// accumulates its taps in (ci, ky, kx) order, one FMA each, from zero.
#[inline(always)]
fn conv_pixels<S: Lanes8, const V: usize, const P: usize>(
    g: &ConvGeom,
    p: &Prepared,
    xp: &[f32],
    starts: &[usize],
    z: &mut [f32],
) {
    let lanes = 8 * V;
    let (hc, wc, k) = (g.conv_h(), g.conv_w(), g.k);
    let width = P.min(wc);
    for zy in 0..hc {
        for &zx in starts {
            let mut acc = [[S::zero(); V]; P];
            for ci in 0..g.cin {
                for ky in 0..k {
                    let xrow = &xp[(ci * p.rows + zy + ky) * p.row + zx..][..P + k];
                    let wrows = &p.wt[(ci * k + ky) * k * lanes..][..k * lanes];
                    for kx in 0..k {
                        let mut wv = [S::zero(); V];
                        for (v, w) in wv.iter_mut().enumerate() {
                            *w = S::load(&wrows[kx * lanes + 8 * v..]);
                        }
                        for (j, accj) in acc.iter_mut().enumerate() {
                            let xv = S::splat(xrow[j + kx]);
                            for v in 0..V {
                                accj[v] = S::madd(xv, wv[v], accj[v]);
                            }
                        }
                    }
                }
            }
            for (j, accj) in acc.iter().enumerate().take(width) {
                for v in 0..V {
                    S::store(&mut z[((zy * wc + zx + j) * V + v) * 8..], accj[v]);
                }
            }
        }
    }
}

/// 2x2 pool of `z` (`[pixel][8 V lanes]`) over all channel lanes at once, then bias and ReLU,
/// into one image's outputs `o` and winners `a`. The first maximum wins, as in the scalar
/// definition the tests hold this to.
#[inline(always)]
pub(super) fn pool<S: Lanes8, const V: usize>(
    g: &ConvGeom,
    z: &[f32],
    bias_lanes: &[f32],
    o: &mut [f32],
    a: &mut [u8],
) {
    let (wc, ho, wo) = (g.conv_w(), g.out_h(), g.out_w());
    let mut vals = [0.0f32; 16];
    let mut wins = [0.0f32; 16];
    let (zero, idx_of) = (S::zero(), [S::splat(1.0), S::splat(2.0), S::splat(3.0)]);
    for oy in 0..ho {
        for ox in 0..wo {
            for v in 0..V {
                let at = |dy: usize, dx: usize| {
                    S::load(&z[(((2 * oy + dy) * wc + 2 * ox + dx) * V + v) * 8..])
                };
                let (mut best, mut win) = (at(0, 0), zero);
                for (i, cand) in [at(0, 1), at(1, 0), at(1, 1)].into_iter().enumerate() {
                    (best, win) = S::take_greater(cand, best, idx_of[i], win);
                }
                let bias = S::load(&bias_lanes[8 * v..]);
                S::store(&mut vals[8 * v..], S::max(S::add(best, bias), zero));
                S::store(&mut wins[8 * v..], win);
            }
            for c in 0..g.cout {
                let idx = (c * ho + oy) * wo + ox;
                o[idx] = vals[c];
                a[idx] = wins[c] as u8;
            }
        }
    }
}

/// Gradients accumulated by [`backward`] for a run of images.
pub(crate) struct Grads<'a> {
    /// Input gradient of the run's images (empty when not wanted).
    pub dx: &'a mut [f32],
    /// Weight gradient in the padded `[cout][cin][k][RUN]` layout; see [`unpad_weight_grad`].
    pub dw8: &'a mut [f64],
    /// Bias gradient.
    pub db: &'a mut [f64],
}

/// Length of the padded weight-gradient accumulator.
pub(crate) fn dw8_len(g: &ConvGeom) -> usize {
    g.cout * g.cin * g.k * RUN
}

/// Folds the padded weight gradient back to `[cout][cin][k][k]`, rounded to f32, into `dw`.
pub(crate) fn unpad_weight_grad(g: &ConvGeom, dw8: &[f64], dw: &mut [f32]) {
    for (run, out) in dw8.chunks_exact(RUN).zip(dw.chunks_exact_mut(g.k)) {
        for (o, &v) in out.iter_mut().zip(&run[..g.k]) {
            *o = v as f32;
        }
    }
}

/// What the backward reads for a run of images: the inputs, the forward's pooled outputs and
/// argmaxes, and the gradient arriving at those outputs.
pub(crate) struct Run<'a> {
    /// Input images.
    pub x: &'a [f32],
    /// Pooled, ReLU'd outputs.
    pub out: &'a [f32],
    /// Gradient of the loss at `out`.
    pub grad: &'a [f32],
    /// Winner of every pooling window.
    pub arg: &'a [u8],
}

/// Buffers [`backward`] needs for one image, kept across calls so that a call per micro-batch
/// costs no allocations.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The zero-bordered input image.
    xp: Vec<f32>,
    /// Its gradient, zero-bordered likewise.
    dxp: Vec<f32>,
    /// The image's pool winners, channel after channel: (gradient, offset in a plane of `xp`).
    winners: Vec<(f32, usize)>,
    /// Where each channel's winners start in `winners`, and their end.
    starts: Vec<usize>,
}

/// The pool winners of one image, by channel: the only non-zeros of its conv-output gradient.
pub(super) struct Winners<'a> {
    /// (gradient, offset in a plane of the padded input), channel after channel, each channel's
    /// in (oy, ox) order.
    pub all: &'a [(f32, usize)],
    /// Where each channel's winners start in `all`, and their end (`cout + 1` entries).
    pub starts: &'a [usize],
}

impl Winners<'_> {
    /// Channel `c`'s winners.
    pub fn of(&self, c: usize) -> &[(f32, usize)] {
        &self.all[self.starts[c]..self.starts[c + 1]]
    }
}

/// Backward over a run of images, adding into `gr`.
pub(crate) fn backward(g: &ConvGeom, p: &Prepared, run: Run<'_>, gr: Grads<'_>, s: &mut Scratch) {
    match KernelPath::current() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `KernelPath` chose this path only where the CPU has AVX-512F/VL, AVX2 and FMA.
        KernelPath::Avx512 => unsafe { super::conv_avx512::backward(g, p, run, gr, s) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU reports AVX2 and FMA, the only features the function enables.
        KernelPath::Avx2 => unsafe { backward_avx2(g, p, run, gr, s) },
        _ => backward_generic::<Scalar, EightLanes<Scalar>>(g, p, run, gr, s),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_avx2(g: &ConvGeom, p: &Prepared, run: Run<'_>, gr: Grads<'_>, s: &mut Scratch) {
    backward_generic::<Avx2, EightLanes<Avx2>>(g, p, run, gr, s);
}

/// How a backward computes one image's input gradient.
///
/// A trait rather than a closure or function pointer: its method is inlined into the caller
/// compiled with the path's target features, where a `Fn` shim would be compiled without them
/// (and call every intrinsic out of line).
pub(super) trait InputGrad {
    /// Writes one image's input gradient into `dx` from its winners; `dxp` is scratch of the
    /// padded input's size.
    fn dx_of(g: &ConvGeom, p: &Prepared, w: &Winners<'_>, dx: &mut [f32], dxp: &mut [f32]);
}

/// [`input_grad`] with lanes `S`.
pub(super) struct EightLanes<S>(std::marker::PhantomData<S>);

impl<S: Lanes8> InputGrad for EightLanes<S> {
    #[inline(always)]
    fn dx_of(g: &ConvGeom, p: &Prepared, w: &Winners<'_>, dx: &mut [f32], dxp: &mut [f32]) {
        input_grad::<S>(g, p, w, dx, dxp)
    }
}

/// The backward for lanes `S`, with `D` writing each image's input gradient.
#[inline(always)]
pub(super) fn backward_generic<S: Lanes8, D: InputGrad>(
    g: &ConvGeom,
    p: &Prepared,
    run: Run<'_>,
    gr: Grads<'_>,
    scratch: &mut Scratch,
) {
    let Run { x, out, grad, arg } = run;
    let Scratch {
        xp,
        dxp,
        winners,
        starts,
    } = scratch;
    let (ho, wo, k) = (g.out_h(), g.out_w(), g.k);
    let in_len = g.cin * g.h * g.w;
    let out_len = g.cout * ho * wo;
    let want_dx = !gr.dx.is_empty();
    // `pad_into` rewrites all of `xp`, and `D` clears what it uses.
    xp.resize(p.padded_len(g), 0.0);
    if want_dx {
        dxp.resize(p.padded_len(g), 0.0);
    }
    let n = x.len() / in_len;
    for i in 0..n {
        p.pad_into(g, &x[i * in_len..(i + 1) * in_len], xp);
        let (o, gs, a) = (
            &out[i * out_len..][..out_len],
            &grad[i * out_len..][..out_len],
            &arg[i * out_len..][..out_len],
        );
        winners.clear();
        starts.clear();
        for c in 0..g.cout {
            starts.push(winners.len());
            let first = winners.len();
            // The bias gradient's running sum in a register, in the same order as adding to
            // `db[c]` in memory (which waited on a store per winner: 8% of the backward).
            let mut db = gr.db[c];
            for oy in 0..ho {
                for ox in 0..wo {
                    let idx = (c * ho + oy) * wo + ox;
                    let gv = gs[idx];
                    // ReLU passes the gradient only where the pooled value was positive.
                    if o[idx] > 0.0 && gv != 0.0 {
                        let win = a[idx] as usize;
                        let at = (2 * oy + win / 2) * p.row + 2 * ox + win % 2;
                        winners.push((gv, at));
                        db += f64::from(gv);
                    }
                }
            }
            gr.db[c] = db;
            for ci in 0..g.cin {
                let plane = ci * p.rows * p.row;
                let rows = ((c * g.cin + ci) * k) * RUN;
                // The weight gradient of one (channel, input channel) stays in registers across
                // all winners: a load and store per update would serialise on store forwarding.
                let mut acc = [S::zero(); MAX_K];
                for &(gv, at) in winners[first..].iter() {
                    let gsplat = S::splat(gv);
                    for (ky, accy) in acc.iter_mut().enumerate().take(k) {
                        *accy = S::madd(gsplat, S::load(&xp[plane + at + ky * p.row..]), *accy);
                    }
                }
                for (ky, accy) in acc.iter().enumerate().take(k) {
                    let row = rows + ky * RUN;
                    // Summed over the micro-batch's images in f64 and rounded once per
                    // micro-batch (see `aggregation::tree`).
                    let mut lanes = [0.0f32; RUN];
                    S::store(&mut lanes, *accy);
                    for (d, v) in gr.dw8[row..row + RUN].iter_mut().zip(lanes) {
                        *d += f64::from(v);
                    }
                }
            }
        }
        starts.push(winners.len());
        if want_dx {
            let w = Winners {
                all: winners,
                starts,
            };
            D::dx_of(g, p, &w, &mut gr.dx[i * in_len..(i + 1) * in_len], dxp);
        }
    }
}

/// One image's input gradient from its winners: every winner adds its gradient times the kernel
/// to the 8-wide runs under its window, channel after channel, in `dxp`, which is then copied
/// to `dx` without its border. Each element thus sums, from zero, one FMA per (channel, winner)
/// whose run covers it, in that order: the AVX-512 version keeps exactly this.
#[inline(always)]
pub(super) fn input_grad<S: Lanes8>(
    g: &ConvGeom,
    p: &Prepared,
    winners: &Winners<'_>,
    dx: &mut [f32],
    dxp: &mut [f32],
) {
    let k = g.k;
    dxp.fill(0.0);
    for c in 0..g.cout {
        for ci in 0..g.cin {
            let plane = ci * p.rows * p.row;
            let rows = ((c * g.cin + ci) * k) * RUN;
            for &(gv, at) in winners.of(c) {
                let gsplat = S::splat(gv);
                for ky in 0..k {
                    let d = &mut dxp[plane + at + ky * p.row..];
                    let w = S::load(&p.w8[rows + ky * RUN..]);
                    let sum = S::madd(gsplat, w, S::load(d));
                    S::store(d, sum);
                }
            }
        }
    }
    for ci in 0..g.cin {
        for y in 0..g.h {
            let src = (ci * p.rows + y + g.pad) * p.row + g.pad;
            dx[(ci * g.h + y) * g.w..][..g.w].copy_from_slice(&dxp[src..src + g.w]);
        }
    }
}
