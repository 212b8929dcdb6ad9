//! The peer gRPC handlers: a few decoded requests from the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peercache::fuzzing::peer(data));
