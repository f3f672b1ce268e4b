//! Using a trained checkpoint end to end: `embed`, `compare`, `search` and `serve` on MNIST
//! test images written out as PNG, and a Python forward pass that matches `embed`. One model,
//! trained here by the real binary, serves every test of this binary.

mod cli;
mod interop;
mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use integration_tests::{bin, run_with_limit, shared_dataset};
use siamese_common::data::{ImageSet, load_idx_pair};

/// The trained model and the images the tests use.
pub struct Fixture {
    /// The run's checkpoint (its weights).
    pub weights: PathBuf,
    /// The MNIST test set.
    pub test: ImageSet,
    /// The MNIST test image file (for inputs by index).
    pub test_images: PathBuf,
    /// Folder of test images 0..GALLERY as `NNNN-L.png` (index, label).
    pub gallery: PathBuf,
    /// Folder for each test's own files.
    pub scratch: PathBuf,
}

/// Test images in the gallery.
pub const GALLERY: usize = 200;

/// Trains once (2 epochs on 12,000 images: about 95% test pair accuracy) and writes the PNGs.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inference-fixture");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let out = run_with_limit(
            Command::new(bin("coordinator"))
                .args(["--dataset", "mnist", "--workers", "0", "--threads", "2"])
                .args(["--epochs", "2", "--train-subset", "12000"])
                .args(["--val-pairs", "1000", "--test-pairs", "2000", "--quiet"])
                .arg("--data-dir")
                .arg(shared_dataset("mnist"))
                .arg("--out")
                .arg(root.join("run.json")),
            Duration::from_secs(300),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mnist = shared_dataset("mnist");
        let test_images = mnist.join("t10k-images-idx3-ubyte.gz");
        let test = load_idx_pair(&test_images, &mnist.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let gallery = root.join("gallery");
        std::fs::create_dir_all(&gallery).unwrap();
        for i in 0..GALLERY {
            write_png(
                &test,
                i,
                &gallery.join(format!("{i:04}-{}.png", test.label(i))),
            );
        }
        Fixture {
            weights: root.join("run.safetensors"),
            test,
            test_images,
            gallery,
            scratch: root,
        }
    })
}

/// Writes test image `i` as an 8-bit grey PNG.
pub fn write_png(set: &ImageSet, i: usize, path: &Path) {
    image::GrayImage::from_raw(28, 28, set.image(i).to_vec())
        .unwrap()
        .save(path)
        .unwrap();
}

/// Runs `coordinator ARGS` to completion.
pub fn coordinator(args: &[&str]) -> Output {
    run_with_limit(
        Command::new(bin("coordinator")).args(args),
        Duration::from_secs(120),
    )
}

/// stdout of a run that must succeed.
pub fn succeed(args: &[&str]) -> String {
    let out = coordinator(args);
    assert!(
        out.status.success(),
        "coordinator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// stderr of a run that must fail cleanly (status 1, no panic).
pub fn refuse(args: &[&str]) -> String {
    let out = coordinator(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A path as an argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}
