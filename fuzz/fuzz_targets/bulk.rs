//! libFuzzer entry of the `bulk` target; the checks are in `commons_fuzz::bulk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_fuzz::bulk(data));
