//! Running the embedded Python scripts (h5py reads and writes the fastMRI HDF5 files; everything else is
//! Rust). The interpreter is `$VIRTUAL_ENV/bin/python` when `VIRTUAL_ENV` is set (the xtask wrapper sets it
//! to the project's venv), else `python3` on the `PATH`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{FastMriError, Result};

/// The extraction script (see its header for the protocol).
pub const EXTRACT_SCRIPT: &str = include_str!("python/extract.py");
/// The synthetic fixture script.
pub const FIXTURE_SCRIPT: &str = include_str!("python/fixture.py");

/// The interpreter to use: `$VIRTUAL_ENV/bin/python` when that exists, else `python3`.
pub fn default_python() -> PathBuf {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let p = PathBuf::from(venv).join("bin").join("python");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("python3")
}

/// Runs `python -c script args..`; lines `DIEM_TOTAL n` / `DIEM_PROGRESS i` on its stdout drive a progress
/// bar (hidden when `progress` is false).
///
/// # Errors
/// [`FastMriError::Python`] when the interpreter cannot start or a package is missing (with the fix:
/// `cargo xtask setup`) or the script fails unexpectedly; [`FastMriError::Hdf5`] naming the file the script
/// reported (`DIEM_ERROR`).
pub fn run_script(
    python: &Path,
    script: &str,
    args: &[String],
    what: &str,
    total: Option<u64>,
    progress: bool,
) -> Result<()> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FastMriError::Python {
            python: python.into(),
            reason: format!(
                "cannot start the interpreter ({e}); run `cargo xtask setup` (it installs the venv with numpy \
                 and h5py) and run through `cargo xtask`, or set VIRTUAL_ENV"
            ),
        })?;
    let bar = diem_models::progress::progress_bar(total.unwrap_or(0), what, progress);
    // stderr is drained on its own thread so a chatty script cannot block on a full pipe.
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text
        })
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
            if let Some(n) = line.strip_prefix("DIEM_TOTAL ").and_then(|n| n.trim().parse().ok()) {
                bar.set_length(n);
            } else if let Some(i) = line.strip_prefix("DIEM_PROGRESS ").and_then(|n| n.trim().parse().ok()) {
                bar.set_position(i);
            }
        }
    }
    let status = child.wait().map_err(|e| FastMriError::Python {
        python: python.into(),
        reason: format!("waiting for the script failed: {e}"),
    })?;
    bar.finish_and_clear();
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(script_error(python, &stderr, status.code()))
}

/// Maps the script's stderr and exit code to an error.
fn script_error(python: &Path, stderr: &str, code: Option<i32>) -> FastMriError {
    for line in stderr.lines() {
        if let Some(module) = line.strip_prefix("DIEM_MISSING ") {
            return FastMriError::Python {
                python: python.into(),
                reason: format!(
                    "the Python package `{}` is missing; run `cargo xtask setup` (it installs numpy and h5py \
                     into the project's venv) and run through `cargo xtask`",
                    module.trim()
                ),
            };
        }
        if let Some(json) = line.strip_prefix("DIEM_ERROR ") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
                let file = v.get("file").and_then(|f| f.as_str()).unwrap_or("?");
                let reason = v.get("reason").and_then(|f| f.as_str()).unwrap_or("unreadable");
                return FastMriError::Hdf5 { file: file.into(), reason: reason.into() };
            }
        }
    }
    let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    FastMriError::Python {
        python: python.into(),
        reason: format!("the script failed (exit code {code:?}):\n{}", tail.join("\n")),
    }
}
