//! The registry protocol: a run of calls from the input on its handlers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peercache::fuzzing::registry(data));
