//! Evaluation metrics of docs/spec.md, "Reported figures": pair accuracy, ROC AUC, nearest class mean.

use std::cmp::Ordering;

/// Fraction of pairs with `(score > 0.5) == same`; 0 for no pairs.
///
/// # Panics
/// If the slices differ in length.
pub fn pair_accuracy(scores: &[f32], same: &[bool]) -> f64 {
    assert_eq!(scores.len(), same.len(), "one score per pair is needed");
    if scores.is_empty() {
        return 0.0;
    }
    let hits = scores
        .iter()
        .zip(same)
        .filter(|&(&s, &y)| (s > 0.5) == y)
        .count();
    hits as f64 / scores.len() as f64
}

/// Orders scores totally; -0.0 ties with 0.0 and every NaN ties with every NaN, above +inf.
fn score_cmp(x: f32, y: f32) -> Ordering {
    let canon = |s: f32| if s.is_nan() { f32::NAN } else { s + 0.0 };
    canon(x).total_cmp(&canon(y))
}

/// ROC AUC of `scores` for the positives `same` (Mann-Whitney U, tied scores get average rank).
///
/// Returns 0.5 when either class is absent, so the result is never NaN.
///
/// # Panics
/// If the slices differ in length.
pub fn roc_auc(scores: &[f32], same: &[bool]) -> f64 {
    assert_eq!(scores.len(), same.len(), "one score per pair is needed");
    let n_pos = same.iter().filter(|&&y| y).count();
    let n_neg = same.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return 0.5;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&i, &j| score_cmp(scores[i], scores[j]));
    // Sum of (1-based, tie-averaged) ranks of the positives.
    let mut pos_rank_sum = 0.0f64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len()
            && score_cmp(scores[order[start]], scores[order[end]]) == Ordering::Equal
        {
            end += 1;
        }
        let avg_rank = (start + 1 + end) as f64 / 2.0;
        let pos_in_group = order[start..end].iter().filter(|&&i| same[i]).count();
        pos_rank_sum += avg_rank * pos_in_group as f64;
        start = end;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    let u = pos_rank_sum - p * (p + 1.0) / 2.0;
    u / (p * n)
}

/// Mean embedding of each class (row-major `classes x dim`), summed in f64.
///
/// A class with no images gets NaN entries, which [`nearest_class_mean_accuracy`] skips.
///
/// # Panics
/// If `emb.len() != labels.len() * dim` or a label is `>= classes`.
pub fn class_means(emb: &[f32], dim: usize, labels: &[u8], classes: usize) -> Vec<f32> {
    assert_eq!(emb.len(), labels.len() * dim, "one embedding row per label");
    let mut sums = vec![0.0f64; classes * dim];
    let mut counts = vec![0usize; classes];
    for (row, &label) in emb.chunks_exact(dim.max(1)).zip(labels) {
        let c = label as usize;
        assert!(c < classes, "label {label} is not below {classes} classes");
        counts[c] += 1;
        for (s, &x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(row) {
            *s += f64::from(x);
        }
    }
    sums.iter()
        .enumerate()
        .map(|(k, &s)| (s / counts[k / dim] as f64) as f32)
        .collect()
}

/// Fraction of images whose nearest class mean (squared Euclidean) is their own class.
///
/// Ties go to the lower class; classes with non-finite means are never chosen. 0 for no images.
///
/// # Panics
/// If `dim == 0` or the slice lengths disagree with `dim` and `labels`.
pub fn nearest_class_mean_accuracy(means: &[f32], emb: &[f32], dim: usize, labels: &[u8]) -> f64 {
    assert!(dim > 0, "embedding dimension must be positive");
    assert_eq!(means.len() % dim, 0, "means must be whole rows of {dim}");
    assert_eq!(emb.len(), labels.len() * dim, "one embedding row per label");
    if labels.is_empty() {
        return 0.0;
    }
    let hits = emb
        .chunks_exact(dim)
        .zip(labels)
        .filter(|&(row, &label)| {
            let mut best: Option<(usize, f64)> = None;
            for (c, mean) in means.chunks_exact(dim).enumerate() {
                let d: f64 = row
                    .iter()
                    .zip(mean)
                    .map(|(&x, &m)| (f64::from(x) - f64::from(m)).powi(2))
                    .sum();
                // `d < best` is false for NaN, so empty (NaN) classes are never picked.
                if d.is_finite() && best.is_none_or(|(_, b)| d < b) {
                    best = Some((c, d));
                }
            }
            best.is_some_and(|(c, _)| c == label as usize)
        })
        .count();
    hits as f64 / labels.len() as f64
}

/// Linear-interpolation quantile `q` of sorted, non-empty `xs`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Median and half the interquartile range (linear interpolation); (NaN, NaN) for no values.
pub fn median_and_spread(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut sorted = xs.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let iqr = quantile(&sorted, 0.75) - quantile(&sorted, 0.25);
    (quantile(&sorted, 0.5), iqr / 2.0)
}

#[cfg(test)]
mod tests;
