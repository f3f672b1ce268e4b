//! Summing the shards of a global batch and the mean over it.

use super::AggregationError;

/// Mean gradient of a batch from the summed-loss gradients of its shards: summed in f64 and
/// divided once, so every sharding of a batch gives the same result up to f64 rounding.
pub fn mean_gradient(shards: &[Vec<f32>], batch: usize) -> Vec<f32> {
    let mut sum = GradientSum::new(shards.first().map_or(0, Vec::len));
    for g in shards {
        // Non-finite values are the caller's to refuse; here they just propagate.
        let _ = sum.add(g);
    }
    sum.mean(batch)
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

/// A running f64 sum of shard gradients that checks each value as it adds it, so receiving a
/// gradient costs one pass over it instead of decode, check and sum.
pub struct GradientSum {
    total: Vec<f64>,
}

impl GradientSum {
    /// An empty sum of `n` values.
    pub fn new(n: usize) -> Self {
        GradientSum {
            total: vec![0.0; n],
        }
    }

    fn check_len(&self, got: usize) -> Result<(), AggregationError> {
        match got == self.total.len() {
            true => Ok(()),
            false => Err(AggregationError::WrongLength {
                got,
                want: self.total.len(),
            }),
        }
    }

    /// Adds a shard of the same length, refusing one of another length or with NaN or Inf
    /// (the sum is then unusable).
    pub fn add(&mut self, g: &[f32]) -> Result<(), AggregationError> {
        self.check_len(g.len())?;
        let mut finite = true;
        for (t, v) in self.total.iter_mut().zip(g) {
            *t += f64::from(*v);
            finite &= v.is_finite();
        }
        match finite {
            true => Ok(()),
            false => check_finite(g),
        }
    }

    /// Adds a shard given as little-endian f32 bytes, checked as in [`GradientSum::add`].
    pub fn add_le_bytes(&mut self, bytes: &[u8]) -> Result<(), AggregationError> {
        let (chunks, rest) = bytes.as_chunks::<4>();
        if !rest.is_empty() {
            return Err(AggregationError::WrongLength {
                got: bytes.len() / 4,
                want: self.total.len(),
            });
        }
        self.check_len(chunks.len())?;
        let mut finite = true;
        for (t, c) in self.total.iter_mut().zip(chunks) {
            let v = f32::from_le_bytes(*c);
            *t += f64::from(v);
            finite &= v.is_finite();
        }
        match finite {
            true => Ok(()),
            false => {
                let values: Vec<f32> = chunks.iter().map(|c| f32::from_le_bytes(*c)).collect();
                check_finite(&values)
            }
        }
    }

    /// The sum divided by the batch size.
    pub fn mean(self, batch: usize) -> Vec<f32> {
        let scale = 1.0 / batch.max(1) as f64;
        self.total.into_iter().map(|t| (t * scale) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_f64_and_refuses_bad_shards() {
        let mut s = GradientSum::new(2);
        s.add(&[1.0, 2.0]).unwrap();
        s.add_le_bytes(&[0, 0, 128, 63, 0, 0, 0, 64]).unwrap();
        assert_eq!(
            s.add(&[1.0]),
            Err(AggregationError::WrongLength { got: 1, want: 2 })
        );
        assert!(matches!(
            s.add(&[0.0, f32::NAN]),
            Err(AggregationError::NonFinite { index: 1, .. })
        ));
        assert_eq!(GradientSum::new(2).mean(4), [0.0, 0.0]);
        assert_eq!(
            mean_gradient(&[vec![1.0, 2.0], vec![3.0, 6.0]], 4),
            [1.0, 2.0]
        );
    }
}
