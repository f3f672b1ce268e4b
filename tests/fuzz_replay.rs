//! Replays every fuzz corpus (`fuzz/corpus/<target>/`, grown by `scripts/fuzz.sh`) through the
//! same harness the fuzz targets use (`fuzz/harness.rs`), on the stable toolchain: an input that
//! once crashed a parser and was fixed stays fixed, and CI runs each one.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

/// Runs `run` on every file of the target's corpus, saying which file failed if one panics.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a readable corpus entry").path())
        .collect();
    files.sort();
    // A corpus that lost its files would make this test pass on nothing.
    assert!(
        files.len() >= 3,
        "{}: only {} inputs",
        dir.display(),
        files.len()
    );
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{} panicked on {}", target, file.display());
        }
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn idx_corpus() {
    replay("idx", harness::idx);
}

#[test]
fn cifar_corpus() {
    replay("cifar", harness::cifar);
}

#[test]
fn shm_header_corpus() {
    replay("shm_header", harness::shm_header);
}

#[test]
fn coordinator_inbound_corpus() {
    replay("coordinator_inbound", harness::coordinator_inbound);
}

#[test]
fn worker_inbound_corpus() {
    replay("worker_inbound", harness::worker_inbound);
}

#[test]
fn inference_inbound_corpus() {
    replay("inference_inbound", harness::inference_inbound);
}
