//! Evaluation: pair scores from embeddings computed once per image, and the figures of docs/spec.md.

use std::time::Instant;

use super::{Engine, ImageSplit, TrainError};
use crate::aggregation::OptimizerState;
use crate::data::TestAugment;
use crate::metrics::{class_means, nearest_class_mean_accuracy, pair_accuracy, roc_auc};
use crate::model::pair_loss;
use crate::pairs::Pair;
use crate::results::TestRecord;

/// Similarity of two embeddings under the learned unit `s = sigmoid(a d + b)`.
pub fn similarity(ea: &[f32], eb: &[f32], a: f32, b: f32) -> f32 {
    let d2: f32 = ea.iter().zip(eb).map(|(x, y)| (x - y) * (x - y)).sum();
    let z = a * (d2 + 1e-7).sqrt() + b;
    1.0 / (1.0 + (-z).exp())
}

/// Pairs scored from the embeddings of their distinct images.
pub struct ScoredPairs {
    /// Similarity per pair.
    pub scores: Vec<f32>,
    /// The distinct images embedded, sorted.
    pub images: Vec<u32>,
    /// Their embeddings, row-major in the order of `images`.
    pub embeddings: Vec<f32>,
}

/// The similarity unit's slope and offset, which close the flat parameter layout.
pub fn similarity_unit(params: &[f32]) -> (f32, f32) {
    match params {
        [.., a, b] => (*a, *b),
        _ => (0.0, 0.0),
    }
}

/// Embeds every distinct image of `pairs` once (at `state`'s weights, seen as `views` says),
/// then scores each pair.
pub fn score_pairs(
    engine: &mut dyn Engine,
    state: &OptimizerState,
    split: ImageSplit,
    pairs: &[Pair],
    views: TestAugment,
) -> Result<ScoredPairs, TrainError> {
    let unit = similarity_unit(&state.params);
    let mut images: Vec<u32> = pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    images.sort_unstable();
    images.dedup();
    let embeddings = engine.embed(split, &images, state, views)?;
    if images.is_empty() {
        return Ok(ScoredPairs {
            scores: Vec::new(),
            images,
            embeddings,
        });
    }
    let width = embeddings.len() / images.len();
    let row = |i: u32| -> &[f32] {
        // `images` holds every index of `pairs`, so the search always succeeds.
        let r = images.binary_search(&i).unwrap_or(0);
        &embeddings[r * width..(r + 1) * width]
    };
    let scores = pairs
        .iter()
        .map(|p| similarity(row(p.a), row(p.b), unit.0, unit.1))
        .collect();
    Ok(ScoredPairs {
        scores,
        images,
        embeddings,
    })
}

/// Loss, accuracy and AUC of scored pairs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairFigures {
    /// Mean contrastive loss.
    pub loss: f64,
    /// Pair accuracy.
    pub accuracy: f64,
    /// ROC AUC.
    pub auc: f64,
}

/// Figures of scored pairs.
pub fn pair_figures(scores: &[f32], pairs: &[Pair]) -> PairFigures {
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    let loss = if pairs.is_empty() {
        0.0
    } else {
        scores
            .iter()
            .zip(&same)
            .map(|(&s, &y)| f64::from(pair_loss(s, y)))
            .sum::<f64>()
            / pairs.len() as f64
    };
    PairFigures {
        loss,
        accuracy: pair_accuracy(scores, &same),
        auc: roc_auc(scores, &same),
    }
}

/// The test figures: a warm-up pass, a timed pass over the test pairs, and nearest-class-mean
/// accuracy against class means of the training pool's embeddings, every image seen as
/// `views` says; with every pair's similarity.
pub fn test_record(
    engine: &mut dyn Engine,
    state: &OptimizerState,
    test_pairs: &[Pair],
    test_labels: &[u8],
    (train_pool, train_labels): (&[u32], &[u8]),
    views: TestAugment,
) -> Result<(TestRecord, Vec<f32>), TrainError> {
    score_pairs(engine, state, ImageSplit::Test, test_pairs, views)?;
    let start = Instant::now();
    let scored = score_pairs(engine, state, ImageSplit::Test, test_pairs, views)?;
    let time_s = start.elapsed().as_secs_f64();
    let figures = pair_figures(&scored.scores, test_pairs);

    let width = if scored.images.is_empty() {
        0
    } else {
        scored.embeddings.len() / scored.images.len()
    };
    let train_emb = engine.embed(ImageSplit::Train, train_pool, state, views)?;
    let pool_labels: Vec<u8> = train_pool
        .iter()
        .map(|&i| train_labels[i as usize])
        .collect();
    let means = class_means(&train_emb, width, &pool_labels, 10);
    let labels: Vec<u8> = scored
        .images
        .iter()
        .map(|&i| test_labels[i as usize])
        .collect();
    let ncm = nearest_class_mean_accuracy(&means, &scored.embeddings, width, &labels);
    let record = TestRecord {
        pairs: test_pairs.len(),
        pair_accuracy: figures.accuracy,
        roc_auc: figures.auc,
        ncm_accuracy: ncm,
        time_s,
        images_per_s: scored.images.len() as f64 / time_s.max(1e-9),
    };
    Ok((record, scored.scores))
}
