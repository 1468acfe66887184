//! Shared helpers of the integration tests: the venv python and HDF5 files written by it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter the crate uses (`$VIRTUAL_ENV/bin/python`, else `python3`).
pub fn python() -> PathBuf {
    diem_fastmri::default_python()
}

/// Runs `python -c code args..` and panics with its stderr on failure.
pub fn run_python(code: &str, args: &[&str]) {
    let out = Command::new(python()).arg("-c").arg(code).args(args).output().expect("start python");
    assert!(
        out.status.success(),
        "python failed (run `cargo xtask setup` for h5py): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `path` with a `reconstruction_rss` dataset `[slices, size, size]` whose value at `[s, h, w]` is
/// [`value`] (exact in f32).
pub fn write_volume(path: &Path, slices: usize, size: usize) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let code = r#"
import sys, h5py, numpy as np
path, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s, h, w = np.meshgrid(np.arange(n), np.arange(size), np.arange(size), indexing="ij")
data = (s * 1000 + h * 10 + w * 0.5 + 0.25).astype(np.float32)
with h5py.File(path, "w") as f:
    f.create_dataset("reconstruction_rss", data=data)
    f.create_dataset("kspace", data=np.zeros((n, 2, 2), np.complex64))
"#;
    run_python(code, &[&path.display().to_string(), &slices.to_string(), &size.to_string()]);
}

/// The value [`write_volume`] stores at `[s, h, w]`.
pub fn value(s: usize, h: usize, w: usize) -> f32 {
    (s * 1000) as f32 + (h * 10) as f32 + w as f32 * 0.5 + 0.25
}
