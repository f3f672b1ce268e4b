//! What the coordinator checks in a worker's answers before it uses them, free of the engine's
//! state so that the fuzz target (`fuzz/fuzz_targets/coordinator_inbound.rs`) runs the very
//! same checks on arbitrary bytes.

use crate::aggregation::check_finite;
use crate::cluster::protocol::proto::GradientResult;
use crate::cluster::protocol::wire::decode_f32;

/// Why a gradient answer's figures cannot be true of a task of `pairs` pairs, if they cannot.
pub fn figures_problem(r: &GradientResult, pairs: usize) -> Option<String> {
    if r.pairs as usize != pairs {
        Some(format!("it covers {} pairs, its task had {pairs}", r.pairs))
    } else if r.correct > r.pairs {
        Some(format!(
            "{} of its {} pairs are correct",
            r.correct, r.pairs
        ))
    } else if !(r.loss_sum.is_finite() && r.loss_sum >= 0.0) {
        Some(format!("its loss sum is {}", r.loss_sum))
    } else if !(r.compute_s.is_finite() && r.compute_s >= 0.0) {
        Some(format!("its compute time is {} s", r.compute_s))
    } else {
        None
    }
}

/// A vector a worker sent, once it is `n` finite values (`None`: bytes not a multiple of 4).
pub fn checked_vector(values: Option<Vec<f32>>, n: usize) -> Result<Vec<f32>, String> {
    let values = match values {
        Some(v) if v.len() == n => v,
        Some(v) => return Err(format!("it has {} values, the model has {n}", v.len())),
        None => return Err("its byte length is not a multiple of 4".into()),
    };
    check_finite(&values).map_err(|e| e.to_string())?;
    Ok(values)
}

/// `images` embeddings of `width` finite values each, from an Embedding's bytes.
pub fn checked_embeddings(bytes: &[u8], images: usize, width: usize) -> Result<Vec<f32>, String> {
    match decode_f32(bytes) {
        Some(v) if Some(v.len()) == images.checked_mul(width) => match check_finite(&v) {
            Ok(()) => Ok(v),
            Err(_) => Err("embeddings holding NaN or Inf".into()),
        },
        _ => Err(format!("not {images} x {width} embeddings")),
    }
}
