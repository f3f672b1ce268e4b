//! Tests of the pair protocol (balance, validity, determinism, errors, speed).

use super::*;

/// Unevenly sized classes, deterministic: class c gets weight c + 1.
fn synthetic_labels(n: usize) -> Vec<u8> {
    let mut rng = PairRng::new(99, 0);
    (0..n)
        .map(|_| {
            let mut x = rng.below(55);
            let mut c = 0u8;
            while x > c as usize {
                x -= c as usize + 1;
                c += 1;
            }
            c
        })
        .collect()
}

fn check_valid(labels: &[u8], pool: &[u32], pairs: &[Pair]) {
    assert_eq!(pairs.len(), pool.len());
    for (k, p) in pairs.iter().enumerate() {
        assert_ne!(p.a, p.b, "pair {k} pairs an image with itself");
        assert_eq!(p.same, k % 2 == 0, "pair {k} breaks the alternation");
        let (la, lb) = (labels[p.a as usize], labels[p.b as usize]);
        assert_eq!(
            la == lb,
            p.same,
            "pair {k}: labels {la} {lb}, same = {}",
            p.same
        );
    }
    // Every pool image anchors exactly once; partners come from the pool.
    let mut anchors: Vec<u32> = pairs.iter().map(|p| p.a).collect();
    anchors.sort_unstable();
    let mut sorted_pool = pool.to_vec();
    sorted_pool.sort_unstable();
    assert_eq!(anchors, sorted_pool);
    assert!(
        pairs
            .iter()
            .all(|p| sorted_pool.binary_search(&p.b).is_ok())
    );
}

fn count_same(pairs: &[Pair]) -> usize {
    pairs.iter().filter(|p| p.same).count()
}

#[test]
fn training_pairs_are_balanced_and_valid() {
    let labels = synthetic_labels(6000);
    let pool = split(6000, 4800, 1200).unwrap().train;
    let pairs = training_pairs(&labels, &pool, 1, 1).unwrap();
    check_valid(&labels, &pool, &pairs);
    for n in (0..=pairs.len()).step_by(2) {
        assert_eq!(count_same(&pairs[..n]), n / 2, "prefix {n}");
    }
    for b in batches(&pairs, 64) {
        assert_eq!(count_same(b), b.len() / 2);
    }
}

#[test]
fn odd_pool_has_one_extra_same_pair() {
    let labels: Vec<u8> = (0..101).map(|i| (i % 10) as u8).collect();
    let pool: Vec<u32> = (0..101).collect();
    let pairs = validation_pairs(&labels, &pool, 3).unwrap();
    check_valid(&labels, &pool, &pairs);
    assert_eq!(count_same(&pairs), 51);
}

#[test]
fn test_pairs_exactly_half_and_every_anchor_once() {
    let labels = synthetic_labels(10_000);
    let pairs = test_pairs(&labels).unwrap();
    let pool: Vec<u32> = (0..10_000).collect();
    check_valid(&labels, &pool, &pairs);
    assert_eq!(count_same(&pairs), 5_000);
    assert_eq!(pairs.len() - count_same(&pairs), 5_000);
    // Shuffled anchors, so a prefix is a fair subset, and the list is fixed.
    assert_ne!(
        pairs[..20].iter().map(|p| p.a).collect::<Vec<_>>(),
        pool[..20]
    );
    assert_eq!(pairs, test_pairs(&labels.clone()).unwrap());
}

#[test]
fn deterministic_in_inputs_only() {
    let labels = synthetic_labels(3000);
    let pool = split(3000, 2000, 1000).unwrap().train;
    let e1 = training_pairs(&labels, &pool, 7, 1).unwrap();
    // No hidden state: other draws in between change nothing.
    let e2 = training_pairs(&labels, &pool, 7, 2).unwrap();
    let _ = validation_pairs(&labels, &pool, 7).unwrap();
    assert_eq!(
        e1,
        training_pairs(&labels.clone(), &pool.clone(), 7, 1).unwrap()
    );
    assert_ne!(e1, e2);
    let anchors = |ps: &[Pair]| ps.iter().map(|p| p.a).collect::<Vec<_>>();
    assert_ne!(
        anchors(&e1),
        anchors(&e2),
        "epochs must reorder the anchors"
    );
    assert_ne!(e1, training_pairs(&labels, &pool, 8, 1).unwrap());
    // Labels of images outside the pool are irrelevant.
    let mut relabelled = labels.clone();
    let in_pool: std::collections::HashSet<u32> = pool.iter().copied().collect();
    for (i, l) in relabelled.iter_mut().enumerate() {
        if !in_pool.contains(&(i as u32)) {
            *l = (*l + 1) % 10;
        }
    }
    assert_eq!(e1, training_pairs(&relabelled, &pool, 7, 1).unwrap());
}

#[test]
fn validation_is_its_own_stream() {
    let labels = synthetic_labels(2000);
    let pool: Vec<u32> = (0..2000).collect();
    let val = validation_pairs(&labels, &pool, 5).unwrap();
    check_valid(&labels, &pool, &val);
    assert_eq!(val, validation_pairs(&labels, &pool, 5).unwrap());
    for epoch in 0..5 {
        assert_ne!(val, training_pairs(&labels, &pool, 5, epoch).unwrap());
    }
    assert_eq!(
        training_pairs(&labels, &pool, 5, VALIDATION_STREAM),
        Err(PairError::ReservedEpoch { epoch: u64::MAX })
    );
}

#[test]
fn partners_are_uniform() {
    // Class 0 = {0, 1, 2}, class 1 = {3, 4}, class 2 = {5, 6}.
    let labels = [0, 0, 0, 1, 1, 2, 2];
    let pool: Vec<u32> = (0..7).collect();
    let mut same_of_0 = [0usize; 7];
    let mut diff_class_of_0 = [0usize; 3];
    for epoch in 0..4000 {
        for (k, p) in training_pairs(&labels, &pool, 11, epoch)
            .unwrap()
            .iter()
            .enumerate()
        {
            if p.a == 0 && k % 2 == 0 {
                same_of_0[p.b as usize] += 1;
            } else if p.a == 0 {
                diff_class_of_0[labels[p.b as usize] as usize] += 1;
            }
        }
    }
    // Image 0 is a same-class anchor in ~4/7 of epochs: ~1140 each for partners 1 and 2.
    assert_eq!(same_of_0[0], 0);
    let (s1, s2) = (same_of_0[1] as f64, same_of_0[2] as f64);
    assert!((s1 / (s1 + s2) - 0.5).abs() < 0.05, "{same_of_0:?}");
    assert_eq!(diff_class_of_0[0], 0);
    let (d1, d2) = (diff_class_of_0[1] as f64, diff_class_of_0[2] as f64);
    assert!((d1 / (d1 + d2) - 0.5).abs() < 0.06, "{diff_class_of_0:?}");
}

#[test]
fn errors_say_what_is_wrong() {
    let labels = [0, 0, 1, 1, 2, 12];
    assert_eq!(
        training_pairs(&labels, &[], 0, 0),
        Err(PairError::EmptyPool)
    );
    assert_eq!(
        training_pairs(&labels, &[0, 1, 9], 0, 0),
        Err(PairError::IndexOutOfRange { index: 9, len: 6 })
    );
    assert_eq!(
        training_pairs(&labels, &[0, 1, 2, 5], 0, 0),
        Err(PairError::LabelOutOfRange {
            index: 5,
            label: 12
        })
    );
    assert_eq!(
        training_pairs(&labels, &[0, 1, 1, 2], 0, 0),
        Err(PairError::DuplicateIndex { index: 1 })
    );
    assert_eq!(
        training_pairs(&labels, &[0, 1], 0, 0),
        Err(PairError::TooFewClasses { found: 1 })
    );
    let err = training_pairs(&labels, &[0, 1, 2, 3, 4], 0, 0).unwrap_err();
    assert_eq!(err, PairError::ClassTooSmall { class: 2, count: 1 });
    assert!(
        err.to_string().contains("class 2 has only 1 image"),
        "{err}"
    );
    assert!(test_pairs(&labels).is_err());
    assert!(training_pairs(&labels, &[0, 1, 2, 3], 0, 0).is_ok());
}

#[test]
fn serde_derives_are_present() {
    fn is_serde<T: Serialize + for<'de> Deserialize<'de>>() {}
    is_serde::<Pair>();
}
