//! What the `diem` binary's end-to-end tests share: the binary, the venv's Python, a numpy-written
//! observation file and the shipped tiny configuration shrunk to seconds of work.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `diem` binary under test.
pub const DIEM: &str = env!("CARGO_BIN_EXE_diem");

/// The project venv's Python (numpy writes the observation files), if `cargo xtask setup` made it.
pub fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    p.exists().then_some(p)
}

/// 128 points of a 1-D curve in 5-D, observed through random 2×5 projections (unit rows), σ_y = 1e-2, written
/// by numpy to `sys.argv[1]`.
pub const NUMPY_OBSERVATIONS: &str = r#"
import sys, numpy as np
rng = np.random.default_rng(0)
n = 128
z = rng.random(n)
x = np.stack([np.sin(2*np.pi*z), np.cos(2*np.pi*z), 2*z - 1, np.sin(4*np.pi*z), z*z], 1)
a = rng.standard_normal((n, 2, 5)); a /= np.linalg.norm(a, axis=2, keepdims=True)
y = np.einsum("nmd,nd->nm", a, x) + 0.01 * rng.standard_normal((n, 2))
np.savez(sys.argv[1], y=y.astype(np.float32), noise_std=np.float64(0.01),
         operator=np.frombuffer(b"projection", np.uint8), matrix=a.astype(np.float32),
         x_shape=np.array([5], dtype=np.int64))
"#;

/// The shipped tiny config shrunk to seconds of work: one lap, DDPM 8, CG 1, 16 M-step steps of 32, a
/// 16-wide MLP, Sinkhorn on 32 observations.
pub fn tiny_config() -> serde_json::Value {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/configs/manifold-tiny.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(shipped).unwrap()).unwrap();
    v["laps"] = 1.into();
    v["progress"] = false.into();
    v["gaussian"]["iterations"] = 2.into();
    v["gaussian"]["steps"] = 8.into();
    v["estep"]["sampler"] = serde_json::json!({ "ddpm": { "steps": 8 } });
    v["estep"]["posterior"]["solver"]["iterations"] = 1.into();
    v["mstep"]["steps"] = 16.into();
    v["mstep"]["batch_size"] = 32.into();
    v["mstep"]["log_every"] = 8.into();
    v["network"]["mlp"]["hidden"] = serde_json::json!([16]);
    v["diagnostics"]["sinkhorn_subsample"] = 32.into();
    v
}
