//! The paper's figures, copied from SPEC.md's "What the paper reports", so every table can print
//! them beside ours. `None` where the paper gives nothing.

use serde::{Deserialize, Serialize};

use crate::data::DatasetKind;

/// The paper's row for one dataset (accuracies as fractions, times in seconds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaperDataset {
    /// Epochs it trained for (CIFAR-10: 1,000 + 500).
    pub epochs: usize,
    /// Final training pair accuracy.
    pub train_accuracy: f64,
    /// Validation pair accuracy.
    pub val_accuracy: f64,
    /// Test pair accuracy.
    pub test_accuracy: f64,
    /// Training seconds per epoch (TensorFlow + CUDA on their desktop).
    pub seconds_per_epoch: f64,
    /// Seconds to test the 10,000 test images.
    pub test_time_s: f64,
}

/// SPEC.md's table of the paper's results per dataset.
pub fn paper_dataset(kind: DatasetKind) -> PaperDataset {
    let (train, val, test, s_epoch, test_time) = match kind {
        DatasetKind::Mnist => (0.9995, 0.9883, 0.9911, 17.36, 4.04),
        DatasetKind::FashionMnist => (0.9856, 0.9166, 0.9165, 18.73, 3.73),
        DatasetKind::Cifar10 => (0.8746, 0.8253, 0.8164, 27.32, 4.35),
    };
    PaperDataset {
        epochs: kind.paper_epochs(),
        train_accuracy: train,
        val_accuracy: val,
        test_accuracy: test,
        seconds_per_epoch: s_epoch,
        test_time_s: test_time,
    }
}

/// The dataset the paper's learning-rate and batch-size tables were measured on (MNIST, 50 epochs).
pub const SENSITIVITY_DATASET: DatasetKind = DatasetKind::Mnist;

/// Learning rates of the paper's sensitivity table with its training accuracy for each.
pub const PAPER_LR_TABLE: [(f64, f64); 3] = [(1e-4, 0.9975), (1e-3, 0.9995), (1e-2, 0.9810)];

/// Batch sizes of the paper's table with its training accuracy and seconds per epoch for each.
pub const PAPER_BATCH_TABLE: [(u32, f64, f64); 3] = [
    (32, 0.9993, 34.76),
    (64, 0.9995, 17.36),
    (96, 0.9983, 16.80),
];

/// The paper's MNIST classifier comparison: (method, test accuracy).
pub const PAPER_CLASSIFIERS: [(&str, f64); 6] = [
    ("LeNet-5", 0.9905),
    ("HOG+PCA", 0.9839),
    ("HOG+SVM", 0.9725),
    ("CNN", 0.9899),
    ("CNN+SVM", 0.9910),
    ("SN-LeNet-5", 0.9911),
];

/// The paper's test time of a plain LeNet-5 on the 10,000 MNIST test images.
pub const PAPER_LENET_TEST_TIME_S: f64 = 9.37;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_spec_md() {
        let m = paper_dataset(DatasetKind::Mnist);
        assert_eq!(
            (m.epochs, m.test_accuracy, m.test_time_s),
            (50, 0.9911, 4.04)
        );
        let f = paper_dataset(DatasetKind::FashionMnist);
        assert_eq!(
            (f.epochs, f.train_accuracy, f.seconds_per_epoch),
            (100, 0.9856, 18.73)
        );
        let c = paper_dataset(DatasetKind::Cifar10);
        assert_eq!(
            (c.epochs, c.val_accuracy, c.test_time_s),
            (1500, 0.8253, 4.35)
        );
        assert_eq!(PAPER_LR_TABLE[1], (1e-3, m.train_accuracy));
        assert_eq!(PAPER_BATCH_TABLE[1].2, m.seconds_per_epoch);
    }
}
