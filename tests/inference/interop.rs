//! Interoperability: Python (numpy and `safetensors` from PyPI) reads the checkpoint by the
//! documented tensor names, runs its own forward pass on MNIST test images read from the IDX
//! file, and matches `coordinator embed` to 1e-5.

use std::process::Command;

use integration_tests::ops_util::{repo_root, venv_python};

use crate::{arg, fixture, succeed};

#[test]
fn a_python_forward_pass_from_the_checkpoint_matches_embed() {
    let f = fixture();
    let npy = f.scratch.join("interop.npy");
    let inputs = format!("{}#0..64", f.test_images.display());
    succeed(&[
        "embed",
        "--weights",
        arg(&f.weights),
        &inputs,
        "--out",
        arg(&npy),
    ]);
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/python/forward.py"))
        .args([arg(&f.weights), arg(&f.test_images), "0", "64", arg(&npy)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("interop: {report}");
    let diff = report["max_abs_diff"].as_f64().unwrap();
    assert!(diff <= 1e-5, "Python and Rust embeddings differ by {diff}");
    assert_eq!(report["images"], 64);
    assert_eq!(report["width"], 10);
    // The similarity unit read by its names gives the same similarity too.
    assert!(
        report["max_similarity_diff"].as_f64().unwrap() <= 1e-5,
        "{report}"
    );
}
