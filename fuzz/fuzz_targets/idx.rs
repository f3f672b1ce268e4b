//! Fuzz target `idx`: see `fuzz/harness.rs` for what it drives.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::idx(data));
