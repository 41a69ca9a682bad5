//! libFuzzer entry of the `bundle` target; the checks are in `commons_fuzz::bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_fuzz::bundle(data));
