//! `cargo fuzz run run_state`: see `diem_fuzz::run_state` for the property (the normal test suite runs the same body).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diem_fuzz::run_state(data));
