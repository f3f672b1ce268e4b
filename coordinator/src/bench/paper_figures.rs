//! The paper's figures (docs/spec.md, "The paper's figures"), so every table can print them
//! beside ours. `None` where the paper gives nothing.

use serde::{Deserialize, Serialize};

use siamese_common::data::DatasetKind;

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

/// The paper's results per dataset (docs/spec.md, section 7).
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

/// What the paper reports for one model on one dataset; `None` where it gives nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PaperFigures {
    /// Seconds for the 10,000 test items (TensorFlow + CUDA on their desktop).
    pub time_s: Option<f64>,
    /// Test accuracy as a fraction.
    pub accuracy: Option<f64>,
}

/// The paper's figures for SN-LeNet-5 and for the plain LeNet-5, in that order.
pub fn paper_figures(kind: DatasetKind) -> [PaperFigures; 2] {
    let (sn_time, sn_acc, lenet_time, lenet_acc) = match kind {
        DatasetKind::Mnist => (4.04, 0.9911, Some(9.37), Some(0.9905)),
        DatasetKind::FashionMnist => (3.73, 0.9165, None, None),
        DatasetKind::Cifar10 => (4.35, 0.8164, None, None),
    };
    [
        PaperFigures {
            time_s: Some(sn_time),
            accuracy: Some(sn_acc),
        },
        PaperFigures {
            time_s: lenet_time,
            accuracy: lenet_acc,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_the_papers_tables() {
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

    #[test]
    fn test_time_figures_match_the_papers_table() {
        let [sn, lenet] = paper_figures(DatasetKind::Mnist);
        assert_eq!((sn.time_s, sn.accuracy), (Some(4.04), Some(0.9911)));
        assert_eq!((lenet.time_s, lenet.accuracy), (Some(9.37), Some(0.9905)));
        let [sn, lenet] = paper_figures(DatasetKind::Cifar10);
        assert_eq!((sn.time_s, sn.accuracy), (Some(4.35), Some(0.8164)));
        assert_eq!(lenet, PaperFigures::default());
        assert_eq!(
            paper_figures(DatasetKind::FashionMnist)[0].accuracy,
            Some(0.9165)
        );
    }
}
