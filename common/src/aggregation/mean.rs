//! The mean over the global batch and the check that every value is finite: the last two things
//! every mode does to a step's gradient before Adam.

use super::AggregationError;

/// The mean over a batch of `batch` pairs from the gradient of its summed loss: divided once,
/// in f64. Non-finite values are the optimizer's to refuse; here they just propagate.
pub fn mean_of_sum(sum: &[f32], batch: usize) -> Vec<f32> {
    let scale = 1.0 / batch.max(1) as f64;
    sum.iter().map(|&v| (f64::from(v) * scale) as f32).collect()
}

/// Refuses a vector holding NaN or Inf, naming the first such value.
pub fn check_finite(values: &[f32]) -> Result<(), AggregationError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(AggregationError::NonFinite {
            index,
            value: values[index],
        }),
    }
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
}
