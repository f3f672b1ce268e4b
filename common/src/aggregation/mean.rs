//! The mean over the global batch and the check that every value is finite: the last two things
//! every mode does to a step's gradient before Adam.

use super::AggregationError;
use crate::model::kernel_path::lane_kernel;

/// The mean over a batch of `batch` pairs from the gradient of its summed loss: divided once,
/// in f64. Non-finite values are the optimizer's to refuse; here they just propagate.
pub fn mean_of_sum(sum: &[f32], batch: usize) -> Vec<f32> {
    scaled(sum, 1.0 / batch.max(1) as f64)
}

lane_kernel! {
    /// Each value times `scale`, in f64, rounded back to f32.
    fn scaled(values: &[f32], scale: f64) -> Vec<f32> = scaled_lanes
}

#[inline(always)]
fn scaled_lanes(values: &[f32], scale: f64) -> Vec<f32> {
    values
        .iter()
        .map(|&v| (f64::from(v) * scale) as f32)
        .collect()
}

/// Refuses a vector holding NaN or Inf, naming the first such value.
pub fn check_finite(values: &[f32]) -> Result<(), AggregationError> {
    if all_finite(values) {
        return Ok(());
    }
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(AggregationError::NonFinite {
            index,
            value: values[index],
        }),
    }
}

/// The exponent bits of an f32: all ones in Inf and NaN only.
const EXPONENT: u32 = 0x7f80_0000;

lane_kernel! {
    /// Whether no value is Inf or NaN.
    fn all_finite(values: &[f32]) -> bool = all_finite_lanes
}

/// One pass with no early exit, so that it vectorizes: a stream of finite values (every step's
/// gradient) is the case to make fast; the first bad value is found afterwards.
#[inline(always)]
fn all_finite_lanes(values: &[f32]) -> bool {
    let bad = values.iter().fold(0u32, |bad, v| {
        bad | u32::from(v.to_bits() & EXPONENT == EXPONENT)
    });
    bad == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_once_and_names_the_first_bad_value() {
        assert_eq!(mean_of_sum(&[4.0, 8.0], 4), [1.0, 2.0]);
        assert_eq!(mean_of_sum(&[3.0], 0), [3.0]);
        assert!(check_finite(&[1.0, 2.0]).is_ok());
        assert_eq!(
            check_finite(&[0.0, f32::NAN, f32::INFINITY]).map_err(|e| e.to_string()),
            Err("value 1 is NaN".to_string())
        );
    }

    #[test]
    fn every_kernel_path_finds_the_same_bad_values_and_means() {
        use crate::model::kernel_path::on_every_path;
        let n = 1003;
        let base: Vec<f32> = (0..n).map(|i| (i as f32 - 500.0) * 1.7e-3).collect();
        let runs = on_every_path(|| {
            let mut found = Vec::new();
            for at in [0, 1, 15, 16, 17, 500, n - 2, n - 1] {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                    let mut v = base.clone();
                    v[at] = bad;
                    found.push(check_finite(&v).map_err(|e| e.to_string()));
                }
            }
            found.push(check_finite(&base).map_err(|e| e.to_string()));
            // The largest finite values are finite.
            found.push(
                check_finite(&[f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45])
                    .map_err(|e| e.to_string()),
            );
            let mean: Vec<u32> = mean_of_sum(&base, 7).iter().map(|v| v.to_bits()).collect();
            (found, mean)
        });
        let (_, (found, _)) = &runs[0];
        assert_eq!(found.iter().filter(|r| r.is_err()).count(), 32, "{found:?}");
        assert!(found[32..].iter().all(Result::is_ok));
        assert_eq!(found[0], Err("value 0 is NaN".to_string()));
        for (path, got) in &runs[1..] {
            assert!(
                got == &runs[0].1,
                "{path:?} checked or divided otherwise than the portable code"
            );
        }
    }
}
