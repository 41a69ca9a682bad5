//! libFuzzer entry of the `config_toml` target; the checks are in `commons_fuzz::config_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_fuzz::config_toml(data));
