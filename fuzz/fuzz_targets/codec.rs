//! The value codecs' decode path: a frame from a peer, decoded within a limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peercache::fuzzing::codec(data));
