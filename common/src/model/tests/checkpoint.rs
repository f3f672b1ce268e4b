//! Weights through the network and a safetensors checkpoint and back.

use candle_core::Device;

use crate::model::network::Network;
use crate::model::params::{Head, ModelSpec};

#[test]
fn weights_round_trip_through_network_and_checkpoint() {
    let spec = ModelSpec {
        channels: 3,
        size: 32,
        head: Head::Siamese { width: 10 },
    };
    let w = spec.init(1);
    let net = Network::new(spec, &w, &Device::Cpu).unwrap();
    assert_eq!(net.weights().unwrap(), w);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    spec.save(&w, &path).unwrap();
    assert_eq!(spec.load(&path).unwrap(), w);
    let other = ModelSpec {
        channels: 1,
        size: 28,
        head: Head::Siamese { width: 10 },
    };
    let err = other.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("conv1.weight") && err.contains("model.safetensors"),
        "{err}"
    );
}
