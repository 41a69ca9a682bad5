//! libFuzzer entry of the `control_frame` target; the checks are in `commons_fuzz::control_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_fuzz::control_frame(data));
