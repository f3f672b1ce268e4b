//! The device a worker's replica runs on.

use candle_core::Device;

use crate::cluster::ClusterError;

/// Parses `cpu` / `cuda:K` into a Candle device.
pub fn parse_device(name: &str) -> Result<Device, ClusterError> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(ordinal) = name
        .strip_prefix("cuda:")
        .and_then(|k| k.parse::<usize>().ok())
    else {
        return Err(ClusterError::Setup(format!(
            "unknown device {name:?}: use cpu or cuda:K"
        )));
    };
    if !cfg!(feature = "cuda") {
        return Err(ClusterError::Setup(format!(
            "device {name} needs CUDA, but this build has none: rebuild with `cargo build --release --features cuda` (see ../shared/gpu/README.md)"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| ClusterError::Setup(format!("opening {name}: {e}")))
}
