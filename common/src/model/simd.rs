//! Eight-lane `f32` vectors for the hand-written kernels, with an AVX2 implementation and a
//! portable fallback (which one runs is [`KernelPath`](super::kernel_path::KernelPath)'s choice).

/// Eight `f32` lanes: AVX2 registers where the CPU has them, plain arrays elsewhere.
///
/// LLVM does not vectorise the lane loops on its own here (it unrolls them into scalar FMAs and
/// spills), so the AVX2 path spells the vector operations out.
pub(crate) trait Lanes8 {
    type V: Copy;
    /// All lanes zero.
    fn zero() -> Self::V;
    /// Every lane `x`.
    fn splat(x: f32) -> Self::V;
    /// Eight values from the start of `s` (at least eight long).
    fn load(s: &[f32]) -> Self::V;
    /// Writes eight values to the start of `s`.
    fn store(s: &mut [f32], v: Self::V);
    /// `a * b + c` per lane.
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b` per lane.
    fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Larger of `a` and `b` per lane.
    fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Per lane: where `cand > best`, `(cand, cand_idx)`, else `(best, best_idx)`.
    fn take_greater(
        cand: Self::V,
        best: Self::V,
        cand_idx: Self::V,
        best_idx: Self::V,
    ) -> (Self::V, Self::V);
}

/// The portable fallback.
pub(crate) struct Scalar;
impl Lanes8 for Scalar {
    type V = [f32; 8];
    #[inline(always)]
    fn zero() -> Self::V {
        [0.0; 8]
    }
    #[inline(always)]
    fn splat(x: f32) -> Self::V {
        [x; 8]
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self::V {
        let mut v = [0.0; 8];
        v.copy_from_slice(&s[..8]);
        v
    }
    #[inline(always)]
    fn store(s: &mut [f32], v: Self::V) {
        s[..8].copy_from_slice(&v);
    }
    #[inline(always)]
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // Rounded once, as the SIMD paths' FMA instructions round: `a * b + c` rounds twice,
        // and so trained other bits than AVX2 (a cluster mixing CPUs with and without AVX2, or
        // a run resumed on one, diverged).
        if cfg!(all(
            any(target_arch = "x86_64", target_arch = "x86"),
            not(target_feature = "fma")
        )) {
            // No FMA instruction: `f32::mul_add` would call libm's `fmaf` once a lane.
            std::array::from_fn(|i| super::fused_mul_add::fused_mul_add(a[i], b[i], c[i]))
        } else {
            std::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
        }
    }
    #[inline(always)]
    fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn max(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i].max(b[i]))
    }
    #[inline(always)]
    fn take_greater(cand: Self::V, best: Self::V, ci: Self::V, bi: Self::V) -> (Self::V, Self::V) {
        let gt: [bool; 8] = std::array::from_fn(|i| cand[i] > best[i]);
        (
            std::array::from_fn(|i| if gt[i] { cand[i] } else { best[i] }),
            std::array::from_fn(|i| if gt[i] { ci[i] } else { bi[i] }),
        )
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;
#[cfg(target_arch = "x86_64")]
impl Lanes8 for Avx2 {
    type V = std::arch::x86_64::__m256;
    #[inline(always)]
    fn zero() -> Self::V {
        // SAFETY: only reached from functions compiled with AVX2 enabled, after detection.
        unsafe { std::arch::x86_64::_mm256_setzero_ps() }
    }
    #[inline(always)]
    fn splat(x: f32) -> Self::V {
        // SAFETY: as above.
        unsafe { std::arch::x86_64::_mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self::V {
        assert!(s.len() >= 8);
        // SAFETY: eight readable floats checked above; unaligned load.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(s: &mut [f32], v: Self::V) {
        assert!(s.len() >= 8);
        // SAFETY: eight writable floats checked above; unaligned store.
        unsafe { std::arch::x86_64::_mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: FMA is detected together with AVX2 before this path is taken.
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn add(a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: only reached from functions compiled with AVX2 enabled, after detection.
        unsafe { std::arch::x86_64::_mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn max(a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: as above. `max_ps` returns its second operand when either is NaN, and
        // `f32::max` returns the non-NaN one; both give 0 for the ReLU of a NaN-free input.
        unsafe { std::arch::x86_64::_mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn take_greater(cand: Self::V, best: Self::V, ci: Self::V, bi: Self::V) -> (Self::V, Self::V) {
        use std::arch::x86_64::{_CMP_GT_OQ, _mm256_blendv_ps, _mm256_cmp_ps};
        // SAFETY: as above.
        unsafe {
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(cand, best);
            (
                _mm256_blendv_ps(best, cand, gt),
                _mm256_blendv_ps(bi, ci, gt),
            )
        }
    }
}

/// A rayon pool of `threads` threads on which the kernels run their portable path, so that the
/// tests reach it on a CPU with AVX2 (see [`forced_pool`](super::kernel_path::forced_pool)).
#[cfg(test)]
pub(crate) fn portable_pool(threads: usize) -> rayon::ThreadPool {
    super::kernel_path::forced_pool(super::kernel_path::KernelPath::Portable, threads)
}

/// Horizontal sum of the lanes in a fixed order.
#[inline(always)]
pub(crate) fn sum_lanes<S: Lanes8>(v: S::V) -> f32 {
    let mut l = [0.0f32; 8];
    S::store(&mut l, v);
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}
