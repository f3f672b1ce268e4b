//! The fused conv stage's AVX-512 kernels: the parts of `conv_kernels` that gain from 16 lanes
//! and from masks, rewritten so that every output gets the same operations in the same order
//! as on the AVX2 path, hence the same bits (the tests compare the bytes); the rest is the AVX2
//! code compiled with AVX-512 enabled.
//!
//! - 16 output channels (LeNet-5's second layer): one 512-bit register per pixel instead of two
//!   256-bit ones, eight pixels at a time.
//! - 6 output channels (the first layer): AVX2 wastes two of its eight channel lanes; here the
//!   lanes are 16 pixels of a row instead, two conv rows at once, pooled in registers.
//! - The input gradient: on AVX2 each winner's 8-wide runs are loaded, updated and stored, and
//!   neighbouring winners overlap, so the loads wait on store forwarding (almost half of the
//!   AVX2 backward's time). Here one row of six input channels stays in registers while every
//!   channel's winners are added with FMAs masked to the lanes of their AVX2 run.
//! - The weight gradient stays the AVX2 code: its order over winners is fixed per lane, and
//!   16 lanes would only pair rows that are not contiguous in memory.

use std::arch::x86_64::{
    __m512, _mm256_castpd_ps, _mm256_storeu_ps, _mm512_castps_pd, _mm512_castps512_ps256,
    _mm512_extractf64x4_pd, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask3_fmadd_ps,
    _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_set1_ps, _mm512_setr_epi32,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::conv_geom::ConvGeom;
use super::conv_kernels::{
    EightLanes, Grads, InputGrad, Prepared, RUN, Run, Scratch, Winners, backward_generic,
    block_starts, forward_dispatch, pool,
};
use super::simd::{Avx2, Lanes8};

/// Pixels per block of the 16-channel forward where the row is not a multiple of
/// [`ROW_PIXELS`] (eight independent FMA chains).
const PIXELS: usize = 8;
/// Pixels per block where the conv row is a multiple of ten (LeNet-5's second layer on both
/// image sizes): a whole row per block, so no pixel is computed twice, where blocks of eight
/// would compute 16 pixels for 10.
const ROW_PIXELS: usize = 10;

/// Sixteen floats from the start of `s`.
#[inline(always)]
fn load16(s: &[f32]) -> __m512 {
    assert!(s.len() >= 16);
    // SAFETY: sixteen readable floats checked above; unaligned load; only called from
    // functions compiled with AVX-512F, after detection.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

/// Writes sixteen floats to the start of `s`.
#[inline(always)]
fn store16(s: &mut [f32], v: __m512) {
    assert!(s.len() >= 16);
    // SAFETY: sixteen writable floats checked above; as for `load16`.
    unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
}

/// Forward over a run of images, as `conv_kernels::forward`.
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) unsafe fn forward(
    g: &ConvGeom,
    p: &Prepared,
    x: &[f32],
    b: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
) {
    let taps = g.cin * g.k * g.k;
    if p.wt.len() == taps * 16 {
        if g.conv_w().is_multiple_of(ROW_PIXELS) {
            forward16::<ROW_PIXELS>(g, p, x, b, out, arg);
        } else {
            forward16::<PIXELS>(g, p, x, b, out, arg);
        }
    } else if g.cout == 6 && g.conv_w() >= 16 {
        forward_pixels::<6>(g, p, x, b, out, arg);
    } else {
        forward_dispatch::<Avx2>(g, p, x, b, out, arg);
    }
}

/// Up to 16 output channels, one register per pixel: the AVX2 kernel's two 8-lane halves side
/// by side, so the same FMAs in the same order; `P` pixels of a conv row per block.
#[inline(always)]
fn forward16<const P: usize>(
    g: &ConvGeom,
    p: &Prepared,
    x: &[f32],
    b: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
) {
    let (hc, wc, k) = (g.conv_h(), g.conv_w(), g.k);
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let mut xp = vec![0.0f32; p.padded_len(g)];
    let mut z = vec![0.0f32; hc * wc * 16];
    let starts = block_starts(wc, P);
    let width = P.min(wc);
    let mut bias_lanes = [0.0f32; 16];
    bias_lanes[..g.cout].copy_from_slice(b);
    for ((img, o), a) in x
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
        .zip(arg.chunks_exact_mut(out_len))
    {
        p.pad_into(g, img, &mut xp);
        for zy in 0..hc {
            for &zx in &starts {
                // SAFETY (all intrinsics below): compiled with AVX-512F, after detection.
                let mut acc = [unsafe { _mm512_setzero_ps() }; P];
                for ci in 0..g.cin {
                    for ky in 0..k {
                        let xrow = &xp[(ci * p.rows + zy + ky) * p.row + zx..][..P + k];
                        let wrows = &p.wt[(ci * k + ky) * k * 16..][..k * 16];
                        for kx in 0..k {
                            let wv = load16(&wrows[kx * 16..]);
                            for (j, accj) in acc.iter_mut().enumerate() {
                                // SAFETY: as above.
                                *accj = unsafe {
                                    _mm512_fmadd_ps(_mm512_set1_ps(xrow[j + kx]), wv, *accj)
                                };
                            }
                        }
                    }
                }
                for (j, accj) in acc.iter().enumerate().take(width) {
                    store16(&mut z[(zy * wc + zx + j) * 16..], *accj);
                }
            }
        }
        pool::<Avx2, 2>(g, &z, &bias_lanes, o, a);
    }
}

/// `C` output channels with 16 pixels of a conv row as the lanes: every output still sums its
/// taps in (ci, ky, kx) order with one FMA each (the product is the same with the operands
/// swapped), and the pool compares the four candidates in the AVX2 kernel's order.
#[inline(always)]
fn forward_pixels<const C: usize>(
    g: &ConvGeom,
    p: &Prepared,
    x: &[f32],
    b: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
) {
    let (k, wc, ho, wo) = (g.k, g.conv_w(), g.out_h(), g.out_w());
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let mut xp = vec![0.0f32; p.padded_len(g)];
    // Blocks start at even columns (wc is even and so is every step), so windows never straddle
    // two blocks; the last block overlaps the one before and rewrites the same values.
    let starts = block_starts(wc, 16);
    // SAFETY (all intrinsics in this function): compiled with AVX-512F, after detection.
    let (even, odd) = unsafe {
        (
            _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
            _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
        )
    };
    let (zero, idx_of) = (
        Avx2::zero(),
        [Avx2::splat(1.0), Avx2::splat(2.0), Avx2::splat(3.0)],
    );
    for ((img, o), a) in x
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
        .zip(arg.chunks_exact_mut(out_len))
    {
        p.pad_into(g, img, &mut xp);
        for oy in 0..ho {
            for &zx in &starts {
                // acc[r][c]: conv row 2 oy + r, channel c, 16 pixels from zx.
                // SAFETY: as above.
                let mut acc = [[unsafe { _mm512_setzero_ps() }; C]; 2];
                for ci in 0..g.cin {
                    for ky in 0..k {
                        let at = |r: usize| (ci * p.rows + 2 * oy + r + ky) * p.row + zx;
                        let rows = [&xp[at(0)..][..16 + k], &xp[at(1)..][..16 + k]];
                        for kx in 0..k {
                            let tap = (ci * k + ky) * k + kx;
                            let wt = &p.wt[tap * 8..][..8];
                            let xv = [load16(&rows[0][kx..]), load16(&rows[1][kx..])];
                            for c in 0..C {
                                // SAFETY: as above.
                                let wv = unsafe { _mm512_set1_ps(wt[c]) };
                                for r in 0..2 {
                                    // SAFETY: as above.
                                    acc[r][c] = unsafe { _mm512_fmadd_ps(xv[r], wv, acc[r][c]) };
                                }
                            }
                        }
                    }
                }
                for c in 0..C {
                    // Even and odd columns of both rows: the four candidates of 8 windows.
                    // SAFETY: as above.
                    let (e, od) = unsafe {
                        (
                            _mm512_permutex2var_ps(acc[0][c], even, acc[1][c]),
                            _mm512_permutex2var_ps(acc[0][c], odd, acc[1][c]),
                        )
                    };
                    // SAFETY: as above. (Plain calls, not a closure: a closure is not
                    // compiled with this function's target features, so its intrinsics would
                    // become calls. The upper half through f64: `extractf32x8` needs
                    // AVX-512DQ, which neither this function nor `KernelPath` asks for.)
                    let (e_lo, e_hi, od_lo, od_hi) = unsafe {
                        (
                            _mm512_castps512_ps256(e),
                            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e))),
                            _mm512_castps512_ps256(od),
                            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(od))),
                        )
                    };
                    let (mut best, mut win) = (e_lo, zero);
                    for (i, cand) in [od_lo, e_hi, od_hi].into_iter().enumerate() {
                        (best, win) = Avx2::take_greater(cand, best, idx_of[i], win);
                    }
                    let val = Avx2::max(Avx2::add(best, Avx2::splat(b[c])), zero);
                    let idx = (c * ho + oy) * wo + zx / 2;
                    Avx2::store(&mut o[idx..][..8], val);
                    let mut wins = [0.0f32; 8];
                    // SAFETY: eight writable floats; as above.
                    unsafe { _mm256_storeu_ps(wins.as_mut_ptr(), win) };
                    for (d, w) in a[idx..][..8].iter_mut().zip(wins) {
                        *d = w as u8;
                    }
                }
            }
        }
    }
}

/// Backward over a run of images, as `conv_kernels::backward`, with the input gradient from
/// [`input_grad_rows`] where a row's columns up to the right border fit in two registers.
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) unsafe fn backward(
    g: &ConvGeom,
    p: &Prepared,
    run: Run<'_>,
    gr: Grads<'_>,
    s: &mut Scratch,
) {
    // Only the columns left of the right border reach `dx` (the rest of a padded row takes the
    // runs' overhang), so only those need registers: one for LeNet-5's second layer. Input
    // channels go six (LeNet-5's second layer), three or one at a time.
    let regs = (g.pad + g.w).div_ceil(16);
    match (regs, g.cin.is_multiple_of(6), g.cin.is_multiple_of(3)) {
        (1, true, _) => backward_generic::<Avx2, Rows<1, 6>>(g, p, run, gr, s),
        (1, false, true) => backward_generic::<Avx2, Rows<1, 3>>(g, p, run, gr, s),
        (1, false, false) => backward_generic::<Avx2, Rows<1, 1>>(g, p, run, gr, s),
        (2, true, _) => backward_generic::<Avx2, Rows<2, 6>>(g, p, run, gr, s),
        (2, false, true) => backward_generic::<Avx2, Rows<2, 3>>(g, p, run, gr, s),
        (2, false, false) => backward_generic::<Avx2, Rows<2, 1>>(g, p, run, gr, s),
        _ => backward_generic::<Avx2, EightLanes<Avx2>>(g, p, run, gr, s),
    }
}

/// [`input_grad_rows`] for `pad + w` of up to `16 C` columns, `CI` input channels at a time.
struct Rows<const C: usize, const CI: usize>;

impl<const C: usize, const CI: usize> InputGrad for Rows<C, CI> {
    #[inline(always)]
    fn dx_of(g: &ConvGeom, p: &Prepared, w: &Winners<'_>, dx: &mut [f32], _: &mut [f32]) {
        // SAFETY: only used by `backward`, which runs after `KernelPath` found the features.
        unsafe { input_grad_rows::<C, CI>(g, p, w, dx) }
    }
}

/// One image's input gradient, as `conv_kernels::input_grad`, where the columns left of the
/// right border fit in `C` registers: one padded row of `CI` input channels sits in registers
/// while every channel's winners whose window covers the row, in order, add to it with FMAs
/// masked to the 8 lanes of their run. Each element thus sees the same FMAs in the same order
/// as on the AVX2 path, from the same zero, and no update waits on a store (the `CI` planes are
/// independent FMA chains).
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn input_grad_rows<const C: usize, const CI: usize>(
    g: &ConvGeom,
    p: &Prepared,
    winners: &Winners<'_>,
    dx: &mut [f32],
) {
    let row = p.row;
    assert!(g.pad + g.w <= 16 * C && row <= 64 && g.cout <= 16 && g.cin.is_multiple_of(CI));
    // Each winner's row, and the lanes of the padded row its run covers (columns col..col + 8,
    // within `row`; bits past 16 C are right of the border, where no register is kept), computed
    // once rather than per row.
    PLACED.with_borrow_mut(|placed| {
        placed.clear();
        placed.extend(
            winners
                .all
                .iter()
                .map(|&(gv, at)| (gv, at / row, 0xFFu64 << (at % row))),
        );
        // SAFETY: this function's features, which the closure may not inherit.
        unsafe { add_rows::<C, CI>(g, p, winners.starts, placed, dx) }
    })
}

thread_local! {
    /// [`input_grad_rows`]' winners with their rows and run masks, kept so that an image costs
    /// no allocation.
    static PLACED: std::cell::RefCell<Vec<(f32, usize, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The body of [`input_grad_rows`], given each winner's (gradient, row, run mask) by channel.
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn add_rows<const C: usize, const CI: usize>(
    g: &ConvGeom,
    p: &Prepared,
    starts: &[usize],
    placed: &[(f32, usize, u64)],
    dx: &mut [f32],
) {
    let k = g.k;
    let mut cursor = [0usize; 16];
    for ci0 in (0..g.cin).step_by(CI) {
        cursor.fill(0);
        for y in g.pad..g.pad + g.h {
            let mut acc = [[_mm512_setzero_ps(); C]; CI];
            for (c, first) in cursor.iter_mut().enumerate().take(g.cout) {
                let ws = &placed[starts[c]..starts[c + 1]];
                // Windows only move down along a channel (a winner's row is 2 oy or 2 oy + 1,
                // and oy never decreases), so those that end above this row can be dropped.
                while *first < ws.len() && (ws[*first].1 | 1) + k <= y {
                    *first += 1;
                }
                for &(gv, r, run) in &ws[*first..] {
                    if r & !1 > y {
                        break;
                    }
                    if y < r || y >= r + k {
                        continue;
                    }
                    let gs = _mm512_set1_ps(gv);
                    let col = run.trailing_zeros() as usize;
                    for (i, acci) in acc.iter_mut().enumerate() {
                        let at = ((c * g.cin + ci0 + i) * k + y - r) * RUN;
                        let w = p.w8[at..at + RUN].as_ptr();
                        for (q, accq) in acci.iter_mut().enumerate() {
                            let m = (run >> (16 * q)) as u16;
                            // Lane l of register q is column 16 q + l, which reads w[16 q + l -
                            // col]: the mask enables exactly the lanes where that is in 0..8.
                            let src = w.wrapping_add(16 * q).wrapping_sub(col);
                            // SAFETY: the enabled lanes read the run `w` points to, in bounds;
                            // masked-off lanes are not accessed (AVX-512 masked loads suppress
                            // their faults), so an empty mask reads nothing.
                            let wv = unsafe { _mm512_maskz_loadu_ps(m, src) };
                            *accq = _mm512_mask3_fmadd_ps(gs, wv, *accq, m);
                        }
                    }
                }
            }
            for (i, acci) in acc.iter().enumerate() {
                let mut lanes = [0.0f32; 32];
                for (q, accq) in acci.iter().enumerate() {
                    store16(&mut lanes[16 * q..], *accq);
                }
                dx[((ci0 + i) * g.h + y - g.pad) * g.w..][..g.w]
                    .copy_from_slice(&lanes[g.pad..g.pad + g.w]);
            }
        }
    }
}
