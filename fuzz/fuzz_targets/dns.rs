#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| btc::fuzzing::dns(data));
