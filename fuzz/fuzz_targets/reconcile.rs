//! libFuzzer entry of the `reconcile` target; the checks are in `commons_fuzz::reconcile`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_fuzz::reconcile(data));
