//! `cargo fuzz run observation_npz`: see `diem_fuzz::observation_npz` for the property (the normal test suite runs the same body).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diem_fuzz::observation_npz(data));
