//! The bodies of diem's fuzz targets: one function per file parser, each taking arbitrary bytes.
//!
//! The property is the same everywhere: the parser returns a value that passes its own checks (finite
//! arrays, consistent shapes, a configuration that validates and round-trips) or an error with a message;
//! it never panics and never aborts on an allocation. A panic inside one of these functions is a bug.
//!
//! `cargo fuzz run <target>` drives them with libFuzzer (`fuzz/fuzz_targets/`); the normal test suite runs the
//! same functions on the seed corpus in `data/fuzz/` and on random mutations of it
//! (`crates/diem-em/tests/fuzz_bodies.rs` includes this file), so they stay exercised without nightly.

use std::path::Path;

use diem_operators::io::Format;
use tch::{Device, Kind, Tensor};

/// Every entry of a float tensor is finite (other dtypes pass).
fn all_finite(t: &Tensor) -> bool {
    !t.is_floating_point() || t.numel() == 0 || t.isfinite().all().int64_value(&[]) != 0
}

/// An accepted observation set is valid: at least one observation, finite `y`, an operator whose shapes fit
/// `y` and that maps an input of ones to a finite output (the loader refuses parameters so large that float32
/// overflows).
fn check_observation(obs: &diem_operators::Observation) {
    assert!(!obs.is_empty(), "an empty observation set was accepted");
    assert!(all_finite(&obs.y), "non-finite y was accepted");
    assert_eq!(obs.y.size()[1..], obs.operator.y_shape(), "y does not fit the operator");
    let mut shape = vec![obs.len()];
    shape.extend(obs.operator.x_shape());
    let x = Tensor::ones(shape.as_slice(), (Kind::Float, Device::Cpu));
    assert!(all_finite(&obs.operator.apply(&x)), "the operator maps ones to a non-finite output");
    let mut y_shape = vec![obs.len()];
    y_shape.extend(obs.operator.y_shape());
    let u = Tensor::ones(y_shape.as_slice(), (Kind::Float, Device::Cpu));
    assert!(all_finite(&obs.operator.adjoint(&u)), "the adjoint maps ones to a non-finite output");
    let _ = obs.unobserved();
}

fn observation(data: &[u8], format: Format) {
    match diem_operators::io::load_bytes(data, format, Device::Cpu) {
        Ok(obs) => check_observation(&obs),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// An `.npz` observation file ([`diem_operators::io::load_bytes`]).
pub fn observation_npz(data: &[u8]) {
    observation(data, Format::Npz);
}

/// A `.safetensors` observation file ([`diem_operators::io::load_bytes`]).
pub fn observation_safetensors(data: &[u8]) {
    observation(data, Format::Safetensors);
}

/// A run's `state.bin` ([`diem_em::io::RunState::from_bytes`]): an accepted state serializes back to a state
/// that reads the same.
pub fn run_state(data: &[u8]) {
    let path = Path::new("state.bin");
    match diem_em::io::RunState::from_bytes(path, data) {
        Ok(state) => {
            let bytes = state.to_bytes().expect("an accepted state serializes");
            let again = diem_em::io::RunState::from_bytes(path, &bytes).expect("a written state reads back");
            assert_eq!(again, state, "state.bin does not round-trip");
        }
        Err(e) => assert!(e.to_string().contains("state.bin"), "the error does not name the file: {e}"),
    }
}

/// A run's `config.json` ([`diem_em::EmConfig::from_json`]): an accepted configuration validates, differs
/// from itself in nothing, and round-trips through JSON.
pub fn em_config(data: &[u8]) {
    let path = Path::new("config.json");
    match diem_em::EmConfig::from_json(path, data) {
        Ok(config) => {
            config.validate().expect("an accepted configuration validates");
            let changes = diem_em::config::config_changes(&config, &config).expect("diff");
            assert!(changes.is_empty(), "a configuration differs from itself: {changes:?}");
            let text = serde_json::to_vec(&config).expect("serializes");
            let back = diem_em::EmConfig::from_json(path, &text).expect("round trip");
            assert_eq!(back, config, "config.json does not round-trip");
        }
        Err(e) => assert!(e.to_string().contains("config.json"), "the error does not name the file: {e}"),
    }
}

/// A samples `.npy` array ([`diem_em::io::read_npy_bytes`]): accepted arrays are float and finite.
pub fn samples_npy(data: &[u8]) {
    let path = Path::new("samples.npy");
    match diem_em::io::read_npy_bytes(path, data, Device::Cpu) {
        Ok(t) => {
            assert!(matches!(t.kind(), Kind::Float | Kind::Double), "a non-float array was accepted");
            assert!(all_finite(&t), "a non-finite array was accepted");
        }
        Err(e) => assert!(e.to_string().contains("samples.npy"), "the error does not name the file: {e}"),
    }
}

/// A checkpoint's `weights.safetensors` ([`diem_models::checkpoint::safetensors_from_bytes`]): accepted
/// tensors are finite.
pub fn checkpoint_safetensors(data: &[u8]) {
    let path = Path::new("weights.safetensors");
    match diem_models::checkpoint::safetensors_from_bytes(path, data, Device::Cpu) {
        Ok(tensors) => {
            for (name, t) in &tensors {
                assert!(all_finite(t), "tensor {name}: non-finite values were accepted");
            }
        }
        Err(e) => {
            assert!(e.to_string().contains("weights.safetensors"), "the error does not name the file: {e}")
        }
    }
}

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// The targets by name, for drivers that run them all (the normal test suite).
pub const TARGETS: &[(&str, Body)] = &[
    ("observation_npz", observation_npz),
    ("observation_safetensors", observation_safetensors),
    ("run_state", run_state),
    ("em_config", em_config),
    ("samples_npy", samples_npy),
    ("checkpoint_safetensors", checkpoint_safetensors),
];
