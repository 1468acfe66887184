//! MPI for diem-dist's back ends: making Open MPI available to the build and the tests, and the cargo
//! arguments that compile, lint and test the MPI and NCCL code when it is.
//!
//! rsmpi (crate `mpi`) needs at build time `mpicc` (it asks it for the MPI include and library paths) and
//! libclang (bindgen generates its bindings), and the tests need `mpirun`. On Debian or Ubuntu, running as
//! root with `apt-get`, [`ensure`] installs `libopenmpi-dev openmpi-bin libclang-dev` when any is missing;
//! otherwise it says why the MPI tests are skipped and the build goes on without the feature.
//! `DIEM_NO_MPI=1` skips all of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::torch::TorchEnv;

/// The Debian packages that provide `mpicc`, `mpirun` and libclang.
pub const APT_PACKAGES: &[&str] = &["libopenmpi-dev", "openmpi-bin", "libclang-dev"];

/// The cargo features that build the distributed back ends (`nccl` implies `mpi`; NCCL builds without CUDA
/// and fails at run time, with a clear error, on machines without a GPU).
pub const FEATURES: &str = "diem-dist/nccl";

/// The variable that turns the MPI bootstrap off.
pub const OPT_OUT_VAR: &str = "DIEM_NO_MPI";

/// Whether the MPI back ends can be built and tested here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// `mpicc`, `mpirun` and libclang are all there.
    Available,
    /// They are not, for this reason.
    Skipped(String),
}

impl Support {
    /// The extra cargo arguments for `clippy`, `doc`, `test` and `build` (workspace-wide or per package):
    /// `--features diem-dist/nccl` when MPI is available, nothing otherwise.
    pub fn cargo_args(&self) -> Vec<String> {
        match self {
            Self::Available => vec!["--features".into(), FEATURES.into()],
            Self::Skipped(_) => Vec::new(),
        }
    }
}

/// What is missing for the MPI build and tests, by name; empty when nothing is.
pub fn missing() -> Vec<&'static str> {
    let mut missing = Vec::new();
    for tool in ["mpicc", "mpirun"] {
        if find_on_path(tool).is_none() {
            missing.push(tool);
        }
    }
    if find_libclang().is_none() {
        missing.push("libclang");
    }
    missing
}

/// Makes MPI available if it can (see the module docs) and says whether it is. Prints what it does; never
/// fails: a machine without MPI still builds and tests everything else.
pub fn ensure() -> Support {
    if std::env::var_os(OPT_OUT_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        return skipped(format!("{OPT_OUT_VAR} is set"));
    }
    let before = missing();
    if before.is_empty() {
        return Support::Available;
    }
    if let Err(why) = can_install() {
        return skipped(format!("{} not found, and {why}", before.join(", ")));
    }
    eprintln!(
        "xtask: {} not found: installing {} with apt-get (about a minute)",
        before.join(", "),
        APT_PACKAGES.join(" ")
    );
    if let Err(why) = apt_install() {
        return skipped(format!("{} not found and the install failed: {why}", before.join(", ")));
    }
    let after = missing();
    if after.is_empty() {
        eprintln!("xtask: MPI installed");
        Support::Available
    } else {
        skipped(format!("{} still not found after installing {}", after.join(", "), APT_PACKAGES.join(" ")))
    }
}

fn skipped(reason: String) -> Support {
    eprintln!("xtask: MPI tests skipped: {reason}");
    Support::Skipped(reason)
}

/// Why packages cannot be installed here, if they cannot: not Linux, not root, or no `apt-get`.
fn can_install() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("installing it is automated on Debian/Ubuntu only".into());
    }
    if find_on_path("apt-get").is_none() {
        return Err(format!("there is no apt-get to install {} with", APT_PACKAGES.join(" ")));
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Err(format!("installing needs root: run `sudo apt-get install {}`", APT_PACKAGES.join(" ")));
    }
    Ok(())
}

/// `apt-get update` and `apt-get install -y` of [`APT_PACKAGES`], non-interactively, output shown.
fn apt_install() -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        eprintln!("xtask: apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`apt-get {}` failed ({status})", args.join(" ")))
        }
    };
    run(&["update"])?;
    let mut install = vec!["install", "-y"];
    install.extend_from_slice(APT_PACKAGES);
    run(&install)
}

/// Links `libnccl.so -> libnccl.so.2` in the wheel's NCCL folder ([`TorchEnv::nccl_lib_dir`]) unless a
/// `libnccl.so` is there already: cudarc, diem-dist's NCCL loader, tries `libnccl.so` (and other names) but
/// not `libnccl.so.2`, the only name the PyTorch wheel ships. Prints a warning instead of failing.
pub fn link_nccl(env: &TorchEnv) {
    let Some(dir) = env.nccl_lib_dir() else { return };
    if let Err(e) = link_in(&dir, "libnccl.so.2", "libnccl.so") {
        eprintln!("xtask: warning: {e}; diem-dist's NCCL back end will not find NCCL");
    }
}

/// Creates the relative symlink `dir/name -> target` when `dir/target` exists and `dir/name` does not (a
/// dangling `name` is left alone). Returns whether it created one.
fn link_in(dir: &Path, target: &str, name: &str) -> Result<bool, String> {
    let link = dir.join(name);
    if !dir.join(target).is_file() || link.symlink_metadata().is_ok() {
        return Ok(false);
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, &link)
            .map_err(|e| format!("cannot create the symlink {} -> {target}: {e}", link.display()))?;
        eprintln!("xtask: linked {} -> {target} (cudarc loads NCCL under that name)", link.display());
        Ok(true)
    }
    #[cfg(not(unix))]
    {
        Ok(false)
    }
}

/// The first `name` in a folder of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A libclang shared library where clang-sys (bindgen) looks: `LIBCLANG_PATH`, then the usual system
/// folders, LLVM's versioned ones included.
pub fn find_libclang() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("LIBCLANG_PATH") {
        let p = PathBuf::from(p);
        // It may name the library itself rather than its folder.
        if p.is_file() {
            return Some(p);
        }
        dirs.push(p);
    }
    for base in [
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ] {
        dirs.push(PathBuf::from(base));
    }
    for base in ["/usr/lib", "/usr/local/opt", "/opt"] {
        if let Ok(entries) = std::fs::read_dir(base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("llvm") {
                    dirs.push(e.path().join("lib"));
                }
            }
        }
    }
    dirs.iter().find_map(|d| libclang_in(d))
}

/// A `libclang.so*` (or `.dylib`) file directly in `dir`.
fn libclang_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with("libclang")
                && !n.starts_with("libclang-cpp")
                && (n.contains(".so") || n.ends_with(".dylib"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_args_only_when_available() {
        assert_eq!(Support::Available.cargo_args(), vec!["--features".to_string(), FEATURES.to_string()]);
        assert!(Support::Skipped("no".into()).cargo_args().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn nccl_link_is_made_once_and_only_beside_the_library() {
        let dir = std::env::temp_dir().join(format!("xtask-nccl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(link_in(&dir, "libnccl.so.2", "libnccl.so"), Ok(false));
        std::fs::write(dir.join("libnccl.so.2"), b"x").unwrap();
        assert_eq!(link_in(&dir, "libnccl.so.2", "libnccl.so"), Ok(true));
        assert_eq!(std::fs::read_link(dir.join("libnccl.so")).unwrap(), PathBuf::from("libnccl.so.2"));
        assert_eq!(std::fs::read(dir.join("libnccl.so")).unwrap(), b"x");
        assert_eq!(link_in(&dir, "libnccl.so.2", "libnccl.so"), Ok(false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn libclang_is_recognized_by_name() {
        let dir = std::env::temp_dir().join(format!("xtask-libclang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libclang-cpp.so.14"), b"").unwrap();
        assert_eq!(libclang_in(&dir), None);
        std::fs::write(dir.join("libclang-14.so.1"), b"").unwrap();
        assert_eq!(libclang_in(&dir), Some(dir.join("libclang-14.so.1")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
