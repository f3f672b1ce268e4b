//! The exponential moving average of the weights (`--ema`): a copy of the parameters that
//! trails the trained ones, `avg ← avg + (1 − decay)(w − avg)` after every optimizer step.
//! Evaluating it instead of the last step's weights smooths out the noise of the last few
//! hundred steps (Polyak averaging); it never feeds back into the gradients.

/// The range `--ema` accepts (0 turns it off).
pub const EMA_DECAYS: std::ops::Range<f64> = 0.9..1.0;

/// The average and how fast it forgets.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightAverage {
    /// How much of the average each step keeps.
    decay: f32,
    /// The averaged parameters, in the model's flat layout.
    pub params: Vec<f32>,
}

impl WeightAverage {
    /// An average starting at `params` (the run's initial weights).
    pub fn new(decay: f64, params: &[f32]) -> Self {
        WeightAverage {
            decay: decay as f32,
            params: params.to_vec(),
        }
    }

    /// Moves the average towards the weights after a step. One element-wise pass in a fixed
    /// order of operations, so every run of the same steps averages to the same bytes.
    pub fn update(&mut self, params: &[f32]) {
        let rate = 1.0 - self.decay;
        for (a, &w) in self.params.iter_mut().zip(params) {
            *a += rate * (w - *a);
        }
    }
}

/// An `--ema` decay: 0 (off), or at least 0.9 and under 1.
pub fn ema_decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v == 0.0 || EMA_DECAYS.contains(&v) => Ok(v),
        Ok(v) => Err(format!(
            "{v} is not an --ema decay (0 to turn it off, or {} to under {})",
            EMA_DECAYS.start, EMA_DECAYS.end
        )),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_trails_the_weights_by_its_decay() {
        let mut avg = WeightAverage::new(0.9, &[0.0, 10.0]);
        avg.update(&[1.0, 10.0]);
        assert!((avg.params[0] - 0.1).abs() < 1e-6, "{:?}", avg.params);
        // Held weights pull it in geometrically: after n more steps 1 - 0.9^(n+1) of the way.
        for _ in 0..9 {
            avg.update(&[1.0, 10.0]);
        }
        let expected = 1.0 - 0.9f32.powi(10);
        assert!((avg.params[0] - expected).abs() < 1e-6, "{:?}", avg.params);
        assert_eq!(avg.params[1], 10.0);
    }

    #[test]
    fn decays_out_of_range_are_refused_by_name() {
        assert_eq!(ema_decay("0"), Ok(0.0));
        assert_eq!(ema_decay("0.999"), Ok(0.999));
        for bad in ["0.5", "1", "1.5", "-0.9", "NaN", "inf"] {
            let e = ema_decay(bad).unwrap_err();
            assert!(e.contains("--ema decay"), "{bad}: {e}");
        }
        assert!(ema_decay("x").unwrap_err().contains("not a number"));
    }
}
