//! Adam (Kingma & Ba) over one flat parameter vector, with the paper's constants.
//!
//! One fused pass over all ~62k parameters costs well under a millisecond; the state is plain
//! vectors so it can be checkpointed and replicated bit-for-bit.

use serde::{Deserialize, Serialize};

use super::LrSchedule;
use crate::model::kernel_path::lane_kernel;

/// Adam's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay (AdamW): each step also subtracts `lr x this x weight`; 0 in the
    /// paper.
    #[serde(default)]
    pub weight_decay: f64,
    /// How the rate moves with the step count.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// The steps the schedule spans (the run's planned steps; unused by the constant one).
    #[serde(default)]
    pub total_steps: u64,
}

impl AdamConfig {
    /// Refuses settings no run of this project makes (from a peer or a file): a rate that is
    /// not finite and positive, decays outside [0, 1), a guard that is not positive.
    pub fn check(&self) -> Result<(), String> {
        let finite = [self.lr, self.beta1, self.beta2, self.eps, self.weight_decay]
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(format!("Adam settings that are not finite: {self:?}"));
        }
        if self.lr <= 0.0 || self.lr > 10.0 {
            return Err(format!("a learning rate of {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(format!("Adam decays {} and {}", self.beta1, self.beta2));
        }
        if self.eps <= 0.0 || !(0.0..=1.0).contains(&self.weight_decay) {
            return Err(format!(
                "eps {} and weight decay {}",
                self.eps, self.weight_decay
            ));
        }
        Ok(())
    }
}

impl Default for AdamConfig {
    /// The paper's Table 2: lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            total_steps: 0,
        }
    }
}

/// Adam's state for one parameter vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    /// Hyperparameters.
    pub config: AdamConfig,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Steps taken so far.
    pub t: u64,
}

impl Adam {
    /// The paper's Adam constants with learning rate `lr`, for `n` parameters.
    pub fn with_lr(lr: f64, n: usize) -> Self {
        Adam::new(
            AdamConfig {
                lr,
                ..AdamConfig::default()
            },
            n,
        )
    }

    /// Fresh state for `n` parameters.
    pub fn new(config: AdamConfig, n: usize) -> Self {
        Adam {
            config,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update `params -= lr * m_hat / (sqrt(v_hat) + eps)` at the schedule's rate for this
    /// step, with the decoupled weight decay first when there is one (as PyTorch's AdamW);
    /// `grad` must match `params`.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) {
        assert_eq!(
            params.len(),
            self.m.len(),
            "Adam state was built for another model"
        );
        assert_eq!(
            grad.len(),
            params.len(),
            "gradient length differs from the parameters"
        );
        let c = self.config;
        let lr_factor = c.schedule.factor(self.t, c.total_steps);
        self.t += 1;
        let t = self.t as i32;
        // Bias corrections folded into the step size, as in the paper's Algorithm 1.
        let lr = c.lr * lr_factor;
        if c.weight_decay != 0.0 {
            let keep = (1.0 - lr * c.weight_decay) as f32;
            params.iter_mut().for_each(|p| *p *= keep);
        }
        let step = (lr * (1.0 - c.beta2.powi(t)).sqrt() / (1.0 - c.beta1.powi(t))) as f32;
        let eps = (c.eps * (1.0 - c.beta2.powi(t)).sqrt()) as f32;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        update(params, grad, &mut self.m, &mut self.v, [b1, b2, step, eps]);
    }
}

lane_kernel! {
    /// Adam's element-wise update with `[beta1, beta2, step, eps]`.
    fn update(params: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], k: [f32; 4]) -> () = update_lanes
}

#[inline(always)]
fn update_lanes(params: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], k: [f32; 4]) {
    let [b1, b2, step, eps] = k;
    for (((p, g), m), v) in params.iter_mut().zip(grad).zip(m).zip(v) {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *p -= step * *m / (v.sqrt() + eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values over many magnitudes, both signs and exact zeros, `n` of them (not a multiple of
    /// any vector width, so the tails run too).
    fn spread(n: usize, salt: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i ^ salt).wrapping_mul(2_654_435_761);
                let mag = 10f32.powi((h % 13) as i32 - 9);
                let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
                if h.is_multiple_of(17) {
                    0.0
                } else {
                    sign * mag * (1.0 + (h >> 20) as f32 / 4096.0)
                }
            })
            .collect()
    }

    #[test]
    fn every_kernel_path_steps_to_the_same_bits() {
        use crate::model::kernel_path::on_every_path;
        let n = 1003;
        let runs = on_every_path(|| {
            let mut params = spread(n, 1);
            let config = AdamConfig {
                weight_decay: 0.05,
                ..AdamConfig::default()
            };
            let mut adam = Adam::new(config, n);
            for step in 0..4 {
                adam.step(&mut params, &spread(n, 100 + step));
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (bits(&params), bits(&adam.m), bits(&adam.v))
        });
        let (_, want) = &runs[0];
        for (path, got) in &runs[1..] {
            assert!(
                got == want,
                "{path:?} stepped Adam to other bits than the portable code"
            );
        }
    }

    #[test]
    fn first_step_matches_hand_computed_update() {
        // Step 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2, update = lr * g / (|g| + eps).
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = vec![0.5f32, -4.0, 0.0];
        let mut adam = Adam::new(AdamConfig::default(), 3);
        adam.step(&mut p, &g);
        let want = [
            1.0 - 1e-3 * 0.5 / (0.5 + 1e-8),
            -2.0 + 1e-3 * 4.0 / (4.0 + 1e-8),
            0.5,
        ];
        for (got, want) in p.iter().zip(want) {
            assert!((f64::from(*got) - want).abs() < 1e-7, "{got} vs {want}");
        }
    }

    #[test]
    fn second_step_matches_hand_computed_update() {
        // g1 = 1, g2 = 0.5; m2 = 0.9*0.1 + 0.1*0.5 = 0.14; v2 = 0.999*0.001 + 0.001*0.25 = 0.001249
        // m_hat = 0.14 / 0.19; v_hat = 0.001249 / 0.001999; p2 = p1 - lr * m_hat / (sqrt(v_hat) + eps).
        let mut p = vec![0.0f32];
        let mut adam = Adam::new(AdamConfig::default(), 1);
        adam.step(&mut p, &[1.0]);
        let p1 = -1e-3 * 1.0 / (1.0 + 1e-8);
        adam.step(&mut p, &[0.5]);
        let m_hat = 0.14 / 0.19;
        let v_hat: f64 = 0.001249 / 0.001999;
        let want = p1 - 1e-3 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!((f64::from(p[0]) - want).abs() < 1e-7, "{} vs {want}", p[0]);
    }

    #[test]
    fn weight_decay_shrinks_first_at_the_scheduled_rate() {
        // A zero gradient leaves only the decay: p * (1 - lr_t * wd), where the cosine over 4
        // steps gives lr_t = lr at step 1 and lr / 2 at step 3.
        let config = AdamConfig {
            weight_decay: 0.1,
            schedule: LrSchedule::Cosine,
            total_steps: 4,
            ..AdamConfig::default()
        };
        let mut p = vec![2.0f32];
        let mut adam = Adam::new(config, 1);
        adam.step(&mut p, &[0.0]);
        let mut want = 2.0 * (1.0 - 1e-4) as f32;
        assert_eq!(p, [want]);
        adam.step(&mut p, &[0.0]);
        adam.step(&mut p, &[0.0]);
        want *= (1.0 - 1e-3 * LrSchedule::Cosine.factor(1, 4) * 0.1) as f32;
        want *= (1.0 - 0.5e-4) as f32;
        assert_eq!(p, [want]);
    }

    #[test]
    fn check_refuses_settings_no_run_makes() {
        assert!(AdamConfig::default().check().is_ok());
        for bad in [
            AdamConfig {
                lr: f64::NAN,
                ..AdamConfig::default()
            },
            AdamConfig {
                lr: 0.0,
                ..AdamConfig::default()
            },
            AdamConfig {
                beta2: 1.0,
                ..AdamConfig::default()
            },
            AdamConfig {
                eps: 0.0,
                ..AdamConfig::default()
            },
            AdamConfig {
                weight_decay: 2.0,
                ..AdamConfig::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
