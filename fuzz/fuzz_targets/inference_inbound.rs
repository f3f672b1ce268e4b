//! Fuzz target `inference_inbound`: see `fuzz/harness.rs` for what it drives.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::inference_inbound(data));
