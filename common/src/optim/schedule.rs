//! Learning-rate schedules: the factor on the configured rate at each optimizer step, a
//! function of the step count alone so that every replica stepping Adam computes the same.

use serde::{Deserialize, Serialize};

/// How the learning rate moves over the run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// `--lr` throughout (the paper).
    #[default]
    Constant,
    /// Half a cosine from `--lr` down to 0 over the `--epochs` planned (per step).
    Cosine,
}

impl LrSchedule {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        }
    }

    /// The factor on `--lr` for the step that follows `done` steps of a run planned at
    /// `total` steps. Exactly 1 for the constant schedule, so that the paper's arithmetic is
    /// unchanged bit for bit.
    pub fn factor(self, done: u64, total: u64) -> f64 {
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let progress = done as f64 / total.max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_runs_from_one_to_zero_and_constant_is_exactly_one() {
        let c = LrSchedule::Cosine;
        assert_eq!(c.factor(0, 100), 1.0);
        assert!((c.factor(50, 100) - 0.5).abs() < 1e-12);
        assert!(c.factor(100, 100).abs() < 1e-12);
        assert!(
            c.factor(200, 100).abs() < 1e-12,
            "past the plan it stays at 0"
        );
        assert!(c.factor(30, 100) > c.factor(31, 100));
        assert_eq!(LrSchedule::Constant.factor(7, 10).to_bits(), 1f64.to_bits());
    }
}
