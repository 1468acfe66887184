//! `cargo fuzz run em_config`: see `diem_fuzz::em_config` for the property (the normal test suite runs the same body).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diem_fuzz::em_config(data));
