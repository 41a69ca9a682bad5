//! libFuzzer entry of the `record` target; the checks are in `commons_fuzz::record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_fuzz::record(data));
