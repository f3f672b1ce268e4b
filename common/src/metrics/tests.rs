//! Tests of the evaluation metrics against hand-computed cases.

use super::*;

const T: bool = true;
const F: bool = false;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn pair_accuracy_counts_threshold_at_half() {
    // 0.5 itself is "different" (strict >).
    let s = [0.9, 0.5, 0.2, 0.7, 0.51];
    let y = [T, T, F, F, T];
    assert!(close(pair_accuracy(&s, &y), 3.0 / 5.0));
    assert_eq!(pair_accuracy(&[], &[]), 0.0);
    assert_eq!(pair_accuracy(&[f32::NAN], &[F]), 1.0);
}

#[test]
fn auc_extremes_and_ties() {
    let y = [F, F, T, T];
    assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &y), 1.0);
    assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &y), 0.0);
    assert_eq!(roc_auc(&[0.3; 4], &y), 0.5);
    assert_eq!(roc_auc(&[0.1, 0.9], &[T, T]), 0.5);
    assert_eq!(roc_auc(&[], &[]), 0.5);
    // -0.0 and 0.0 are one score.
    assert_eq!(roc_auc(&[-0.0, 0.0], &[F, T]), 0.5);
}

#[test]
fn auc_mixed_case_by_hand() {
    // Scores: neg {0.1, 0.4, 0.4}, pos {0.4, 0.6, 0.35}.
    // Pos-neg comparisons: 0.4 vs (0.1 win, 0.4 tie, 0.4 tie) = 2;
    // 0.6 beats all = 3; 0.35 beats 0.1 only = 1. AUC = 6 / 9.
    let s = [0.1, 0.4, 0.4, 0.4, 0.6, 0.35];
    let y = [F, F, F, T, T, T];
    assert!(close(roc_auc(&s, &y), 6.0 / 9.0), "{}", roc_auc(&s, &y));
    // Order of the input must not matter.
    let s2 = [0.35, 0.4, 0.6, 0.4, 0.1, 0.4];
    let y2 = [T, F, T, T, F, F];
    assert!(close(roc_auc(&s2, &y2), 6.0 / 9.0));
}

#[test]
fn auc_matches_brute_force_and_is_nan_free() {
    let s: Vec<f32> = (0..200).map(|i| ((i * 37) % 23) as f32 / 23.0).collect();
    let y: Vec<bool> = (0..200).map(|i| (i * 13) % 7 < 3).collect();
    let mut wins = 0.0;
    let mut total = 0.0;
    for (i, _) in y.iter().enumerate().filter(|(_, y)| **y) {
        for (j, _) in y.iter().enumerate().filter(|(_, y)| !**y) {
            total += 1.0;
            wins += match s[i].partial_cmp(&s[j]).unwrap() {
                Ordering::Greater => 1.0,
                Ordering::Equal => 0.5,
                Ordering::Less => 0.0,
            };
        }
    }
    assert!(close(roc_auc(&s, &y), wins / total));
    let with_nan = roc_auc(&[f32::NAN, 0.2, -f32::NAN, 0.4], &[T, F, F, T]);
    assert!(with_nan.is_finite());
}

#[test]
fn class_means_and_ncm_by_hand() {
    // dim 2; class 0 at (0,0) and (2,0) -> mean (1,0); class 1 at (0,4) -> mean (0,4).
    let emb = [0.0, 0.0, 2.0, 0.0, 0.0, 4.0];
    let labels = [0, 0, 1];
    let means = class_means(&emb, 2, &labels, 3);
    assert_eq!(means[..4], [1.0, 0.0, 0.0, 4.0]);
    assert!(means[4].is_nan() && means[5].is_nan(), "empty class 2");
    // (0,1.9): d0 = 1 + 3.61, d1 = 4.41 -> class 1. (0,2.1): d0 = 5.41, d1 = 3.61 -> class 1.
    // (3,3): d0 = 13, d1 = 10 -> class 1. (1,1): class 0.
    let test = [0.0, 1.9, 0.0, 2.1, 3.0, 3.0, 1.0, 1.0];
    let truth = [0, 1, 0, 0];
    assert!(close(
        nearest_class_mean_accuracy(&means, &test, 2, &truth),
        0.5
    ));
    assert!(close(
        nearest_class_mean_accuracy(&means, &emb, 2, &labels),
        1.0
    ));
    assert_eq!(nearest_class_mean_accuracy(&means, &[], 2, &[]), 0.0);
    // An empty class first in line must still never win.
    let shifted = [1, 1, 2];
    let means = class_means(&emb, 2, &shifted, 3);
    assert!(means[0].is_nan());
    assert!(close(
        nearest_class_mean_accuracy(&means, &emb, 2, &shifted),
        1.0
    ));
}

#[test]
fn median_and_spread_by_hand() {
    assert_eq!(median_and_spread(&[3.0]), (3.0, 0.0));
    assert_eq!(median_and_spread(&[4.0, 1.0]), (2.5, 0.75));
    // Sorted 1,2,3,4,100: q1 = 2, median = 3, q3 = 4.
    assert_eq!(median_and_spread(&[100.0, 2.0, 4.0, 1.0, 3.0]), (3.0, 1.0));
    let (m, s) = median_and_spread(&[]);
    assert!(m.is_nan() && s.is_nan());
}
