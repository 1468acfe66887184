//! `cargo fuzz run checkpoint_safetensors`: see `diem_fuzz::checkpoint_safetensors` for the property (the normal test suite runs the same body).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diem_fuzz::checkpoint_safetensors(data));
