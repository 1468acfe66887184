//! `cargo fuzz run samples_npy`: see `diem_fuzz::samples_npy` for the property (the normal test suite runs the same body).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diem_fuzz::samples_npy(data));
