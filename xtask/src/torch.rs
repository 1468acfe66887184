//! Locating or installing libtorch, and the environment every cargo command needs to build and run against it.
//!
//! Two sources are supported:
//! - `LIBTORCH` set by the user: that libtorch is used as is (its `lib/` goes on the runtime library path);
//! - otherwise a project-local, git-ignored `.venv` holding `torch==2.11.0` from PyPI, the version that
//!   tch 0.24.0 binds. torch-sys is told to take libtorch from that Python install (`LIBTORCH_USE_PYTORCH=1`).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// The PyTorch release that tch 0.24.0 is built for, and the one on the lent GPU machines.
pub const TORCH_VERSION: &str = "2.11.0";

/// Name of the environment variable that overrides the interpreter used to create `.venv`.
pub const PYTHON_VAR: &str = "DIEM_PYTHON";

/// Where libtorch comes from, once located.
#[derive(Debug, Clone)]
pub enum Source {
    /// A libtorch distribution named by the user through `LIBTORCH`.
    Libtorch(PathBuf),
    /// PyTorch installed from PyPI into the project's virtual environment.
    Venv(PathBuf),
}

/// A located libtorch and the variables that make cargo builds and built binaries use it.
#[derive(Debug, Clone)]
pub struct TorchEnv {
    /// Where libtorch comes from.
    pub source: Source,
    /// The directory holding `libtorch_cpu` and `libc10`, put on the runtime library path.
    pub lib_dir: PathBuf,
}

/// The variable that tells the dynamic loader where shared libraries live on this platform.
pub fn library_path_var() -> &'static str {
    if cfg!(target_os = "macos") {
        "DYLD_LIBRARY_PATH"
    } else if cfg!(target_os = "windows") {
        "PATH"
    } else {
        "LD_LIBRARY_PATH"
    }
}

/// File name of libtorch's CPU library on this platform.
fn torch_cpu_lib() -> &'static str {
    if cfg!(target_os = "macos") {
        "libtorch_cpu.dylib"
    } else if cfg!(target_os = "windows") {
        "torch_cpu.dll"
    } else {
        "libtorch_cpu.so"
    }
}

/// Prepends `dir` to the path-list variable `var` as currently set in this process.
fn prepend_path(var: &str, dir: &Path) -> Result<OsString> {
    prepend_paths(var, &[dir.to_path_buf()])
}

/// Prepends `dirs`, in order, to the path-list variable `var` as currently set in this process.
fn prepend_paths(var: &str, dirs: &[PathBuf]) -> Result<OsString> {
    let mut parts = dirs.to_vec();
    if let Some(old) = std::env::var_os(var) {
        parts.extend(std::env::split_paths(&old).filter(|p| !dirs.contains(p)));
    }
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    std::env::join_paths(parts).with_context(|| format!("cannot add {} to {var}", names.join(", ")))
}

impl TorchEnv {
    /// The folder of the NCCL library that the PyTorch wheel ships (`nvidia/nccl/lib` in the site-packages
    /// holding `torch/lib`), when there is one: diem-dist's NCCL back end loads it from the runtime library
    /// path (see [`crate::mpi::link_nccl`]).
    pub fn nccl_lib_dir(&self) -> Option<PathBuf> {
        let site = self.lib_dir.parent()?.parent()?;
        let dir = site.join("nvidia").join("nccl").join("lib");
        dir.is_dir().then_some(dir)
    }

    /// The folders put on the runtime library path: libtorch's, then the wheel's NCCL folder if any.
    fn runtime_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.lib_dir.clone()];
        dirs.extend(self.nccl_lib_dir());
        dirs
    }

    /// The environment variables to set (name, value) for cargo and for binaries built against libtorch.
    pub fn vars(&self) -> Result<Vec<(String, OsString)>> {
        let mut vars = Vec::new();
        match &self.source {
            Source::Libtorch(path) => {
                vars.push(("LIBTORCH".to_string(), path.clone().into_os_string()));
            }
            Source::Venv(venv) => {
                vars.push(("LIBTORCH_USE_PYTORCH".to_string(), OsString::from("1")));
                vars.push(("VIRTUAL_ENV".to_string(), venv.clone().into_os_string()));
                vars.push(("PATH".to_string(), prepend_path("PATH", &venv.join("bin"))?));
            }
        }
        // The build scripts of the crates that link libtorch read this to decide whether to link
        // libtorch_cuda.so with --no-as-needed (crate diem-build).
        vars.push(("DIEM_TORCH_LIB".to_string(), self.lib_dir.clone().into_os_string()));
        let lib_var = library_path_var();
        if lib_var == "PATH" {
            // Windows: the loader searches PATH; merge with the venv entry above if any.
            let base = vars.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
            let mut parts = vec![self.lib_dir.clone()];
            if let Some(base) = base.or_else(|| std::env::var_os("PATH")) {
                parts.extend(std::env::split_paths(&base));
            }
            vars.retain(|(k, _)| k != "PATH");
            vars.push(("PATH".to_string(), std::env::join_paths(parts)?));
        } else {
            vars.push((lib_var.to_string(), prepend_paths(lib_var, &self.runtime_dirs())?));
        }
        Ok(vars)
    }

    /// Applies [`TorchEnv::vars`] to a command about to be spawned.
    pub fn apply(&self, cmd: &mut Command) -> Result<()> {
        for (k, v) in self.vars()? {
            cmd.env(k, v);
        }
        if matches!(self.source, Source::Libtorch(_)) {
            cmd.env_remove("LIBTORCH_USE_PYTORCH");
        }
        Ok(())
    }

    /// Shell `export` lines equivalent to [`TorchEnv::vars`], for people who run plain cargo.
    ///
    /// Path lists are written as prepends to the variable's value in the user's shell
    /// (`"$PATH"`), not as this process's value, which cargo has already extended.
    pub fn export_lines(&self) -> String {
        let mut out = String::new();
        match &self.source {
            Source::Libtorch(path) => {
                out.push_str(&format!("export LIBTORCH={}\n", shell_quote(&path.to_string_lossy())));
                out.push_str("unset LIBTORCH_USE_PYTORCH\n");
            }
            Source::Venv(venv) => {
                out.push_str("export LIBTORCH_USE_PYTORCH=1\n");
                out.push_str(&format!("export VIRTUAL_ENV={}\n", shell_quote(&venv.to_string_lossy())));
                out.push_str(&format!(
                    "export PATH={}\"$PATH\"\n",
                    shell_quote(&format!("{}:", venv.join("bin").to_string_lossy()))
                ));
            }
        }
        out.push_str(&format!("export DIEM_TORCH_LIB={}\n", shell_quote(&self.lib_dir.to_string_lossy())));
        let var = library_path_var();
        let dirs: Vec<String> =
            self.runtime_dirs().iter().map(|d| d.to_string_lossy().into_owned()).collect();
        out.push_str(&format!("export {var}={}\"${{{var}:+:${var}}}\"\n", shell_quote(&dirs.join(":"))));
        out
    }
}

/// Single-quotes a value for POSIX shells.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Locates libtorch, installing PyTorch into `<root>/.venv` first when needed.
///
/// Idempotent: when `.venv` already holds torch [`TORCH_VERSION`] (read from its installed metadata, not
/// inferred from the folder's existence) this returns at once.
pub fn setup(root: &Path) -> Result<TorchEnv> {
    if let Some(path) = std::env::var_os("LIBTORCH") {
        return from_libtorch(PathBuf::from(path));
    }
    let venv = root.join(".venv");
    let env = ensure_torch(&venv)?;
    ensure_extras(&venv)?;
    crate::mpi::link_nccl(&env);
    Ok(env)
}

/// Python packages the tests and harnesses use beside torch, pinned for reproducibility: numpy writes the
/// observation files that the interop tests read; h5py reads fastMRI's HDF5 files (`prepare-fastmri`) and
/// writes the tests' HDF5 fixtures.
pub const PYTHON_EXTRAS: &[(&str, &str)] = &[("numpy", "2.3.5"), ("h5py", "3.16.0")];

/// Installs torch [`TORCH_VERSION`] into the venv unless its metadata says it is there already.
fn ensure_torch(venv: &Path) -> Result<TorchEnv> {
    match installed_torch(venv)? {
        Some(found) if found.version_matches() => {
            return Ok(TorchEnv { source: Source::Venv(venv.to_path_buf()), lib_dir: found.lib_dir });
        }
        Some(found) => eprintln!(
            "xtask: .venv holds torch {} but tch 0.24.0 needs {TORCH_VERSION}; reinstalling",
            found.version
        ),
        None => eprintln!("xtask: no torch {TORCH_VERSION} in {}; installing it from PyPI", venv.display()),
    }
    create_venv(venv)?;
    pip_install(venv, &format!("torch=={TORCH_VERSION}"))?;
    match installed_torch(venv)? {
        Some(found) if found.version_matches() => {
            eprintln!("xtask: torch {} ready in {}", found.version, venv.display());
            Ok(TorchEnv { source: Source::Venv(venv.to_path_buf()), lib_dir: found.lib_dir })
        }
        Some(found) => bail!(
            "pip installed torch {} into {} but {TORCH_VERSION} was requested; remove .venv and retry",
            found.version,
            venv.display()
        ),
        None => bail!(
            "pip reported success but no torch {TORCH_VERSION} with {} is found under {}",
            torch_cpu_lib(),
            venv.display()
        ),
    }
}

/// Installs each of [`PYTHON_EXTRAS`] whose pinned version is not in the venv yet.
fn ensure_extras(venv: &Path) -> Result<()> {
    for (name, version) in PYTHON_EXTRAS {
        if installed_version(venv, name)?.as_deref() != Some(*version) {
            pip_install(venv, &format!("{name}=={version}"))?;
        }
    }
    Ok(())
}

/// The version of a distribution installed in the venv, read from its `<name>-<version>.dist-info` folder.
pub fn installed_version(venv: &Path, name: &str) -> Result<Option<String>> {
    let prefix = format!("{}-", name.replace('-', "_"));
    for site in site_packages_dirs(venv)? {
        let entries = std::fs::read_dir(&site).with_context(|| format!("cannot list {}", site.display()))?;
        for entry in entries {
            let file = entry?.file_name().to_string_lossy().into_owned();
            if let Some(version) = file.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".dist-info")) {
                return Ok(Some(version.to_string()));
            }
        }
    }
    Ok(None)
}

/// Uses a user-provided libtorch directory.
fn from_libtorch(path: PathBuf) -> Result<TorchEnv> {
    let lib_dir = path.join("lib");
    let lib = lib_dir.join(torch_cpu_lib());
    if !lib.is_file() {
        bail!(
            "LIBTORCH={} does not look like a libtorch distribution: {} is missing \
             (unset LIBTORCH to use the project's .venv instead)",
            path.display(),
            lib.display()
        );
    }
    Ok(TorchEnv { source: Source::Libtorch(path), lib_dir })
}

/// What an existing virtual environment holds.
struct InstalledTorch {
    version: String,
    lib_dir: PathBuf,
}

impl InstalledTorch {
    /// Accepts `2.11.0` and local variants such as `2.11.0+cpu` or `2.11.0+cu130`.
    fn version_matches(&self) -> bool {
        self.version == TORCH_VERSION || self.version.starts_with(&format!("{TORCH_VERSION}+"))
    }
}

/// Finds `torch-<version>.dist-info` and `torch/lib/libtorch_cpu.*` in the venv's site-packages.
fn installed_torch(venv: &Path) -> Result<Option<InstalledTorch>> {
    for site in site_packages_dirs(venv)? {
        let lib_dir = site.join("torch").join("lib");
        if lib_dir.join(torch_cpu_lib()).is_file() {
            return Ok(installed_version(venv, "torch")?.map(|version| InstalledTorch { version, lib_dir }));
        }
    }
    Ok(None)
}

/// `<venv>/lib/python3.X/site-packages` (POSIX) or `<venv>/Lib/site-packages` (Windows), those that exist.
pub fn site_packages_dirs(venv: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let windows = venv.join("Lib").join("site-packages");
    if windows.is_dir() {
        dirs.push(windows);
    }
    let lib = venv.join("lib");
    if lib.is_dir() {
        for entry in std::fs::read_dir(&lib).with_context(|| format!("cannot list {}", lib.display()))? {
            let path = entry?.path().join("site-packages");
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    Ok(dirs)
}

/// The interpreter inside a virtual environment.
pub fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(target_os = "windows") {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// Creates the virtual environment unless its interpreter is already there.
fn create_venv(venv: &Path) -> Result<()> {
    if venv_python(venv).is_file() {
        return Ok(());
    }
    let python = std::env::var_os(PYTHON_VAR).unwrap_or_else(|| OsString::from("python3"));
    eprintln!("xtask: creating {} with {}", venv.display(), python.to_string_lossy());
    let status = Command::new(&python).arg("-m").arg("venv").arg(venv).status().with_context(|| {
        format!(
            "cannot run `{}`: install Python 3.10+ (or point {PYTHON_VAR} at one), or set LIBTORCH to an \
             existing libtorch",
            python.to_string_lossy()
        )
    })?;
    if !status.success() {
        bail!(
            "`{} -m venv {}` failed ({status}); on Debian/Ubuntu install the python3-venv package",
            python.to_string_lossy(),
            venv.display()
        );
    }
    Ok(())
}

/// Installs a requirement into the venv with pip, streaming pip's output as progress.
pub fn pip_install(venv: &Path, requirement: &str) -> Result<()> {
    let python = venv_python(venv);
    let mut child = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", requirement])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {} -m pip", python.display()))?;
    let stderr = child.stderr.take().context("pip stderr was not captured")?;
    let err_reader = std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")
    });
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] pip install {prefix}: {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(requirement.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    let stdout = child.stdout.take().context("pip stdout was not captured")?;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if bar.is_hidden() {
            eprintln!("pip: {line}");
        } else {
            bar.set_message(line);
        }
    }
    let status = child.wait().context("pip did not finish")?;
    bar.finish_and_clear();
    let err_text = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "`{} -m pip install {requirement}` failed ({status}); the package registry may be unreachable. \
             pip said:\n{err_text}",
            python.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_match_accepts_local_tags_only_for_the_pinned_release() {
        let make = |v: &str| InstalledTorch { version: v.to_string(), lib_dir: PathBuf::new() };
        assert!(make("2.11.0").version_matches());
        assert!(make("2.11.0+cu130").version_matches());
        assert!(!make("2.11.1").version_matches());
        assert!(!make("2.1.0").version_matches());
        assert!(!make("2.11.01").version_matches());
    }

    #[test]
    fn installed_torch_reads_metadata_not_just_the_folder() {
        let dir = std::env::temp_dir().join(format!("xtask-venv-test-{}", std::process::id()));
        let site = dir.join("lib").join("python3.11").join("site-packages");
        std::fs::create_dir_all(site.join("torch").join("lib")).unwrap();
        // A torch folder without its library is an incomplete install.
        assert!(installed_torch(&dir).unwrap().is_none());
        std::fs::write(site.join("torch").join("lib").join(torch_cpu_lib()), b"").unwrap();
        std::fs::create_dir_all(site.join("torch-2.10.0.dist-info")).unwrap();
        let found = installed_torch(&dir).unwrap().unwrap();
        assert_eq!(found.version, "2.10.0");
        assert!(!found.version_matches());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn export_lines_quote_values() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
