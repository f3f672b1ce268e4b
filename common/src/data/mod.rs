//! TEMPORARY stub until the data layer lands.
/// Dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
    Cifar10,
}
impl DatasetKind {
    /// Shape.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        match self {
            DatasetKind::Cifar10 => (3, 32, 32),
            _ => (1, 28, 28),
        }
    }
}
