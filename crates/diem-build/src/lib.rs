//! Build-script support for every diem crate that links libtorch.
//!
//! # Why this exists
//! rustc links ELF binaries with `--as-needed`: a shared library that satisfies no undefined symbol is
//! dropped from the binary's `DT_NEEDED` list. No Rust code (ours or tch's) references a symbol of
//! `libtorch_cuda.so`; libtorch's CUDA support registers itself from that library's static initializers
//! when the library is loaded. So without help every binary, test and example links `libtorch_cpu.so` and
//! `libc10.so` only, `tch::Cuda::is_available()` answers `false` on a GPU machine, and every CUDA path
//! silently runs on the CPU.
//!
//! [`link_torch_cuda`], called from a crate's `build.rs`, locates the libtorch that torch-sys links and,
//! when it ships `libtorch_cuda.so`, passes `-Wl,--push-state,--no-as-needed,-ltorch_cuda,--pop-state` to
//! the linker of every binary, test, example and bench of that crate. With a CPU-only libtorch nothing
//! changes. `cargo:rustc-link-arg` applies to the linking targets of the crate that emits it only, which is
//! why each crate that links libtorch has a one-line `build.rs`.
//!
//! # How libtorch is located (the same sources torch-sys uses)
//! 1. `DIEM_TORCH_LIB`: the directory holding `libtorch_cpu.so` (`cargo xtask` sets it);
//! 2. `LIBTORCH`: a libtorch distribution, whose `lib/` is used;
//! 3. `LIBTORCH_USE_PYTORCH=1`: the `torch/lib` folder of the Python package that
//!    `$VIRTUAL_ENV/bin/python` (else `python3`) imports.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming libtorch's library directory directly.
pub const TORCH_LIB_VAR: &str = "DIEM_TORCH_LIB";

/// The linker argument that keeps `libtorch_cuda.so` in `DT_NEEDED` whatever `--as-needed` says.
pub const NO_AS_NEEDED_TORCH_CUDA: &str = "-Wl,--push-state,--no-as-needed,-ltorch_cuda,--pop-state";

/// Emits the cargo instructions that link `libtorch_cuda.so` with `--no-as-needed` when the libtorch in use
/// has one (see the crate docs). Call it from `build.rs`; it never fails the build: with no libtorch found,
/// or on a platform other than Linux, it emits nothing but its `rerun-if-env-changed` lines (torch-sys
/// reports a missing libtorch itself).
pub fn link_torch_cuda() {
    for var in [TORCH_LIB_VAR, "LIBTORCH", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let Some(dir) = torch_lib_dir() else { return };
    if has_torch_cuda(&dir) {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-arg={NO_AS_NEEDED_TORCH_CUDA}");
    }
}

/// Whether the libtorch library directory `dir` holds `libtorch_cuda.so`.
pub fn has_torch_cuda(dir: &Path) -> bool {
    dir.join("libtorch_cuda.so").is_file()
}

/// The libtorch library directory from the sources listed in the crate docs, if one is found.
pub fn torch_lib_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(TORCH_LIB_VAR) {
        return Some(PathBuf::from(dir));
    }
    if let Some(root) = std::env::var_os("LIBTORCH") {
        return Some(PathBuf::from(root).join("lib"));
    }
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        return python_torch_lib();
    }
    None
}

/// Asks Python where its `torch` package lives, without importing it (fast): `<package>/lib`.
fn python_torch_lib() -> Option<PathBuf> {
    let python = match std::env::var_os("VIRTUAL_ENV") {
        Some(venv) => PathBuf::from(venv).join("bin").join("python"),
        None => PathBuf::from("python3"),
    };
    let script = "import importlib.util, os; s = importlib.util.find_spec('torch'); \
                  print(os.path.join(os.path.dirname(s.origin), 'lib') if s else '')";
    let out = Command::new(python).args(["-c", script]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.trim();
    (out.status.success() && !line.is_empty()).then(|| PathBuf::from(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_cuda_is_detected_by_its_library_file() {
        let dir = std::env::temp_dir().join(format!("diem-build-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!has_torch_cuda(&dir));
        std::fs::write(dir.join("libtorch_cuda.so"), b"").unwrap();
        assert!(has_torch_cuda(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
