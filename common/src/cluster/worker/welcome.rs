//! What a worker checks in the coordinator's Welcome before it builds anything: a model layout
//! this build runs, for the images it loaded, and an aggregation it knows. Free of the session
//! so that the fuzz target (`fuzz/fuzz_targets/worker_inbound.rs`) runs the same checks.

use crate::aggregation::Aggregation;
use crate::cluster::protocol::proto::Welcome;
use crate::config::TrainConfig;
use crate::model::ModelSpec;
use crate::train::Noise;

/// The run as a Welcome describes it, once checked.
#[derive(Debug)]
pub struct WelcomedRun {
    /// The model layout to build.
    pub spec: ModelSpec,
    /// Where gradients meet.
    pub aggregation: Aggregation,
    /// The run's learning rate, for replicas that step Adam themselves.
    pub lr: Option<f64>,
    /// What training steps draw per pair (augmentation, dropout) and the seed of their keys.
    pub noise: Noise,
}

/// Checks `welcome` against the images this worker holds (`channels x height x width`);
/// the error says what in it cannot be run.
pub fn check_welcome(
    welcome: &Welcome,
    (c, h, w): (usize, usize, usize),
) -> Result<WelcomedRun, String> {
    let spec: ModelSpec = serde_json::from_str(&welcome.model_spec_json)
        .map_err(|e| format!("bad model spec: {e}"))?;
    spec.validate()
        .map_err(|e| format!("a model layout this worker will not run: {e}"))?;
    if (spec.channels, spec.size, spec.size) != (c, h, w) {
        return Err(format!(
            "a model for {}x{}x{} images, but the run's images are {c}x{h}x{w}",
            spec.channels, spec.size, spec.size,
        ));
    }
    let aggregation = Aggregation::from_name(&welcome.aggregation)
        .ok_or_else(|| format!("unknown aggregation {:?}", welcome.aggregation))?;
    let cfg: TrainConfig = serde_json::from_str(&welcome.config_json)
        .map_err(|e| format!("bad run configuration: {e}"))?;
    cfg.recipe
        .check()
        .map_err(|e| format!("a recipe this worker will not run: {e}"))?;
    // Replicas that step Adam themselves need the run's learning rate.
    let lr = match aggregation.replicated() {
        true => {
            if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
                return Err(format!("a learning rate of {}", cfg.lr));
            }
            Some(cfg.lr)
        }
        false => None,
    };
    Ok(WelcomedRun {
        spec,
        aggregation,
        lr,
        noise: Noise::of(&cfg),
    })
}
