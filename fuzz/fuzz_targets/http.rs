//! The HTTP API through the real router: one request from the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peercache::fuzzing::http(data));
