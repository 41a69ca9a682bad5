//! libFuzzer entry of the `sync_frame` target; the checks are in `commons_fuzz::sync_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_fuzz::sync_frame(data));
