//! Test fixtures built by the project venv's Python: tiny TorchScript modules and the outputs PyTorch computes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The Python interpreter: `$VIRTUAL_ENV/bin/python` when that exists (xtask sets VIRTUAL_ENV), else `python3`.
pub fn python() -> PathBuf {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let p = Path::new(&venv).join("bin").join("python");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("python3")
}

const PREFIX: &str = "diem-metrics-torchscript-";

/// The folder holding the fixtures, built once per test binary. Panics (failing the test, never skipping it)
/// when no Python with torch and numpy is available.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale(root);
        let dir = root.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fixture folder");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("common").join("fixtures.py");
        let python = python();
        let output = Command::new(&python).arg(&script).arg(&dir).output().unwrap_or_else(|e| {
            panic!(
                "these tests need Python with torch and numpy to build TorchScript fixtures, but {} could not \
                 run ({e}); run them through `cargo xtask cargo test -p diem-metrics` (it sets VIRTUAL_ENV to the \
                 project venv) after the bootstrap",
                python.display()
            )
        });
        assert!(
            output.status.success(),
            "building the TorchScript fixtures with {} failed (the tests need torch and numpy in that Python; run \
             them through `cargo xtask cargo test -p diem-metrics`):\n{}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    })
}

/// Removes fixture folders of earlier runs older than an hour.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old && entry.file_name().to_string_lossy().starts_with(PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fixture file's path.
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Reads a fixture `.npy` file.
pub fn npy(name: &str) -> tch::Tensor {
    tch::Tensor::read_npy(fixture(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

/// Largest absolute difference of two tensors, in f64.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double)).abs().max().double_value(&[])
}
