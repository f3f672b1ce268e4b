//! Which dataset a run uses, and the constants that go with it.

use std::fmt;
use std::str::FromStr;

use super::DataError;

/// The datasets the siamese LeNet-5 is trained on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
pub enum DatasetKind {
    /// MNIST handwritten digits, 1x28x28.
    #[serde(rename = "mnist")]
    #[value(name = "mnist")]
    Mnist,
    /// Fashion-MNIST clothing images, 1x28x28.
    #[serde(rename = "fashion-mnist")]
    #[value(name = "fashion-mnist")]
    FashionMnist,
    /// CIFAR-10 colour images, 3x32x32.
    #[serde(rename = "cifar10")]
    #[value(name = "cifar10")]
    Cifar10,
}

impl DatasetKind {
    /// All supported datasets.
    pub const ALL: [DatasetKind; 3] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Cifar10,
    ];

    /// Command-line and folder name of the dataset.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// Shape of one image as (channels, height, width).
    pub fn image_shape(self) -> (usize, usize, usize) {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => (1, 28, 28),
            DatasetKind::Cifar10 => (3, 32, 32),
        }
    }

    /// How the official training set is split into (train, validation) images.
    pub fn train_val_sizes(self) -> (usize, usize) {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => (48_000, 12_000),
            DatasetKind::Cifar10 => (40_000, 10_000),
        }
    }

    /// Number of epochs the paper trains for on this dataset.
    pub fn paper_epochs(self) -> usize {
        match self {
            DatasetKind::Mnist => 50,
            DatasetKind::FashionMnist => 100,
            DatasetKind::Cifar10 => 1500,
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| DataError::UnknownDataset(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_round_trip_through_fromstr_display_and_clap() {
        for kind in DatasetKind::ALL {
            assert_eq!(kind.name().parse::<DatasetKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
            assert_eq!(
                <DatasetKind as FromStr>::from_str(kind.name()).unwrap(),
                kind
            );
            let clap_name = kind.to_possible_value().unwrap();
            assert_eq!(clap_name.get_name(), kind.name());
            assert_eq!(
                <DatasetKind as ValueEnum>::from_str(kind.name(), false).unwrap(),
                kind
            );
        }
    }

    #[test]
    fn serde_uses_the_same_names() {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::Error;
        for kind in DatasetKind::ALL {
            let de = kind.name().into_deserializer();
            let back: Result<DatasetKind, Error> = DatasetKind::deserialize(de);
            assert_eq!(back.unwrap(), kind);
        }
    }

    #[test]
    fn unknown_name_is_rejected_with_the_choices() {
        let err = "svhn".parse::<DatasetKind>().unwrap_err().to_string();
        assert!(
            err.contains("svhn") && err.contains("fashion-mnist"),
            "{err}"
        );
    }

    #[test]
    fn constants_match_the_paper() {
        assert_eq!(DatasetKind::Mnist.image_shape(), (1, 28, 28));
        assert_eq!(DatasetKind::Cifar10.image_shape(), (3, 32, 32));
        assert_eq!(
            DatasetKind::FashionMnist.train_val_sizes(),
            (48_000, 12_000)
        );
        assert_eq!(DatasetKind::Cifar10.train_val_sizes(), (40_000, 10_000));
        assert_eq!(
            DatasetKind::ALL.map(DatasetKind::paper_epochs),
            [50, 100, 1500]
        );
    }
}
