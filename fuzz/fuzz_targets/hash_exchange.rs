#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| btc::fuzzing::hash_exchange(data));
