//! The RESP server: raw bytes or pipelined commands through one connection.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peercache::fuzzing::resp(data));
