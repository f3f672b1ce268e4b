//! Generators of small dataset files and a tiny HTTP server, shared by the tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;

/// IDX image file bytes: magic, count, rows, cols, pixels.
pub fn idx_images(magic: u32, count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [magic, count, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

/// IDX label file bytes: magic, count, labels.
pub fn idx_labels(magic: u32, count: u32, labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&magic.to_be_bytes());
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// Gzip-compresses bytes.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Deterministic pixels for `n` images of `len` bytes.
pub fn pixels(n: usize, len: usize, seed: u8) -> Vec<u8> {
    (0..n * len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The four MNIST-like files (gzip) for `n_train`/`n_test` images: name -> bytes.
pub fn mnist_files(n_train: usize, n_test: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (prefix, n, seed) in [("train", n_train, 1u8), ("t10k", n_test, 2)] {
        let px = pixels(n, 784, seed);
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let img = idx_images(0x803, n as u32, 28, 28, &px);
        let lab = idx_labels(0x801, n as u32, &labels);
        out.push((format!("{prefix}-images-idx3-ubyte.gz"), gz(&img)));
        out.push((format!("{prefix}-labels-idx1-ubyte.gz"), gz(&lab)));
    }
    out
}

/// One CIFAR-10 batch of `n` records with labels `i % 10` and deterministic pixels.
pub fn cifar_batch(n: usize, seed: u8) -> Vec<u8> {
    let px = pixels(n, 3072, seed);
    let mut v = Vec::new();
    for (i, img) in px.chunks(3072).enumerate() {
        v.push((i % 10) as u8);
        v.extend_from_slice(img);
    }
    v
}

/// The six CIFAR-10 batch files, `n` records each: name -> bytes.
pub fn cifar_files(n: usize) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = (1..=5)
        .map(|b| (format!("data_batch_{b}.bin"), cifar_batch(n, b as u8)))
        .collect();
    out.push(("test_batch.bin".to_string(), cifar_batch(n, 9)));
    out
}

/// A `cifar-10-binary.tar.gz` lookalike holding `cifar-10-batches-bin/` with `n` records per batch.
pub fn cifar_tar_gz(n: usize) -> Vec<u8> {
    let enc = GzEncoder::new(Vec::new(), Compression::fast());
    let mut tar = tar::Builder::new(enc);
    for (name, bytes) in cifar_files(n) {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            &bytes[..],
        )
        .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Writes `(name, bytes)` pairs into `dir`.
pub fn write_all(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Hex md5 of bytes.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    super::images::to_hex(&Md5::digest(bytes))
}

/// Serves `files` at `/name` over HTTP/1.1 on 127.0.0.1 (404 otherwise); returns the base URL.
pub fn serve(files: Vec<(String, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(files.into_iter().collect());
    // The thread outlives the test on purpose; the test process ends it.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = Arc::clone(&files);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(n) if n > 2 => continue,
                        _ => break,
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                let name = path.trim_start_matches('/');
                let (status, body): (&str, &[u8]) = match files.get(name) {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", b"not found"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            });
        }
    });
    format!("http://127.0.0.1:{port}/")
}

/// A base URL whose port refuses connections.
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// Names of everything in `dir`, sorted, including hidden files.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
