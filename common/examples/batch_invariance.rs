//! Debug: are per-image embeddings bitwise independent of the batch they are computed in?
use candle_core::Device;
use siamese_common::data::{DatasetKind, load_dataset};
use siamese_common::model::ModelSpec;
use siamese_common::train::Replica;

fn main() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .unwrap();
    let ds = load_dataset(
        DatasetKind::Mnist,
        std::path::Path::new("../shared/datasets/mnist"),
    )
    .unwrap();
    let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
    let mut r = Replica::new(spec, &spec.init(1), &Device::Cpu).unwrap();
    let idx: Vec<u32> = (0..128).collect();
    let whole = r.embed(&ds.train, &idx).unwrap();
    for n in [1usize, 3, 21, 43, 64] {
        let part = r.embed(&ds.train, &idx[..n]).unwrap();
        let same = part
            .iter()
            .zip(&whole)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        println!(
            "batch {n}: {same}/{} values bitwise equal to the batch-128 run",
            part.len()
        );
    }
}
