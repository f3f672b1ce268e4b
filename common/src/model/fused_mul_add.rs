//! `a * b + c` with one rounding, as an FMA instruction gives it, for the portable kernels on
//! x86 CPUs without FMA.
//!
//! The SIMD paths multiply-add with FMA instructions; the portable path must round the same way
//! or a worker without AVX2 trains other bits than one with it. `f32::mul_add` gives those bits
//! everywhere, but where the target has no FMA instruction it is a call into libm's `fmaf` per
//! element (a portable MNIST epoch 25 times AVX2's time); this computes the same value inline in
//! `f64` arithmetic, which the compiler vectorises (15 times; docs/benchmarks.md).

/// `a * b + c` rounded once to the nearest `f32` (ties to even), bit for bit `f32::mul_add`.
///
/// Why it is exact: the product of two `f32`s fits an `f64` exactly (24 + 24 significant bits,
/// and the exponents stay in range), so only the addition rounds. Rounding that sum to `f64` and
/// then to `f32` could round twice the wrong way at a tie; rounding it to odd instead (inexact
/// sums take the neighbour whose last bit is 1) keeps the information that it was inexact, and
/// a round to odd at 53 bits followed by a round to nearest at 24 or fewer (subnormals included)
/// is the correctly rounded result (Boldo and Melquiond, "Emulation of FMA and correctly
/// rounded sums: proved algorithms using rounding to odd", IEEE TC 2008).
#[inline(always)]
pub(crate) fn fused_mul_add(a: f32, b: f32, c: f32) -> f32 {
    let p = f64::from(a) * f64::from(b);
    let c = f64::from(c);
    let s = p + c;
    // Knuth's TwoSum: the exact error of the addition (no overflow is possible from f32 inputs).
    let bp = s - p;
    let err = (p - (s - bp)) + (c - bp);
    let bits = s.to_bits();
    // An inexact sum is never zero, so `s` has a sign; stepping its bit pattern up moves it away
    // from zero, down towards it. Non-finite sums (from non-finite inputs) are left alone.
    // Selects, not branches, so that the portable kernels' lane loops still vectorise.
    let to_odd = (err != 0.0) & (bits & 1 == 0) & s.is_finite();
    let stepped = if (err > 0.0) == (s > 0.0) {
        bits.wrapping_add(1)
    } else {
        bits.wrapping_sub(1)
    };
    f64::from_bits(if to_odd { stepped } else { bits }) as f32
}

#[cfg(test)]
mod tests {
    use super::fused_mul_add;
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};

    fn assert_fused(a: f32, b: f32, c: f32) {
        let (got, want) = (fused_mul_add(a, b, c), a.mul_add(b, c));
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "fused_mul_add({a:e}, {b:e}, {c:e}) = {got:e}, f32::mul_add gives {want:e}"
        );
    }

    #[test]
    fn ties_that_rounding_twice_gets_wrong_are_rounded_once() {
        let c = 1.0 + f32::EPSILON; // odd last bit
        let (a, b) = (1.0 + f32::EPSILON, 2f32.powi(-24) * (1.0 - f32::EPSILON));
        // a * b = 2^-24 - 2^-70: the sum lies just under the tie between c and c + 2^-23, so
        // the answer is c; rounded first to f64 it lands on the tie, and ties go to even.
        assert_eq!(fused_mul_add(a, b, c), c);
        assert_ne!((f64::from(a) * f64::from(b) + f64::from(c)) as f32, c);
        assert_fused(a, b, c);
        assert_fused(-a, b, -c);
        assert_fused(a, -b, c + f32::EPSILON);
        // The same among subnormals, where ties sit lower in the f64: c = 513 * 2^-149 and
        // a * b = 2^-150 - 2^-196, just under the tie between c and the next subnormal.
        let (a, b) = (a * 2f32.powi(-75), 2f32.powi(-75) * (1.0 - f32::EPSILON));
        for m in [513, 1025, 4097, 0x7f_ffff - 2] {
            let c = f32::from_bits(m);
            assert_eq!(fused_mul_add(a, b, c), c);
            assert_ne!((f64::from(a) * f64::from(b) + f64::from(c)) as f32, c);
            assert_fused(a, b, c);
            assert_fused(-a, b, -c);
        }
    }

    #[test]
    fn special_values_and_subnormals_match_mul_add() {
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x0040_0001),
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.0 + f32::EPSILON,
            2f32.powi(-75),
            3.0e-20,
        ];
        for a in specials {
            for b in specials {
                for c in specials {
                    assert_fused(a, b, c);
                }
            }
        }
    }

    /// Random bit patterns over the whole range, and sums built to sit a hair off a tie (the
    /// cases rounding twice gets wrong), at random scales and signs.
    #[test]
    fn random_operands_match_mul_add() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut near_ties = 0;
        for _ in 0..200_000 {
            let (a, b, c) = (
                f32::from_bits(rng.next_u32()),
                f32::from_bits(rng.next_u32()),
                f32::from_bits(rng.next_u32()),
            );
            assert_fused(a, b, c);
            // (1 + k eps) (1 - k eps) 2^-24 = 2^-24 - k^2 2^-70: half an ulp of a c in [1, 2),
            // less a tail too small for an f64 sum to keep.
            let k = (rng.next_u32() % 300 + 1) as f32;
            let scale = 2f32.powi((rng.next_u32() % 60) as i32 - 30);
            let sign = if rng.next_u32() & 1 == 0 { 1.0 } else { -1.0 };
            let a = 1.0 + k * f32::EPSILON;
            let b = 2f32.powi(-24) * (1.0 - k * f32::EPSILON) * scale * sign;
            let c = (1.0 + (rng.next_u32() >> 9) as f32 * f32::EPSILON) * scale * sign;
            let naive = (f64::from(a) * f64::from(b) + f64::from(c)) as f32;
            near_ties += usize::from(naive.to_bits() != a.mul_add(b, c).to_bits());
            assert_fused(a, b, c);
            assert_fused(a, -b, c);
        }
        assert!(
            near_ties > 1000,
            "only {near_ties} sums that rounding twice gets wrong"
        );
    }
}
