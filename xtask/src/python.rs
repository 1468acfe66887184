//! The Python package (`python/`, crate `diem-python`): `cargo xtask wheel` builds its wheel with maturin;
//! `cargo xtask test` builds a dev-profile wheel, installs it into a throwaway virtual environment and runs
//! pytest there; `cargo xtask bench python` compares `diem.posterior` with azula's MMPS on one PyTorch
//! module.
//!
//! Nothing downloads torch again: the throwaway environment is created by `.venv`'s interpreter and sees
//! `.venv`'s site-packages (torch, numpy, pytest) through a `.pth` file; only the wheel is installed into it,
//! with `--no-deps`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::summary::TestTotals;
use crate::torch::{self, Source, TorchEnv};

/// The maturin requirement (build tool of the wheel), installed into `.venv` on first use.
const MATURIN: &str = "maturin>=1.5,<2";
/// The pytest requirement, installed into `.venv` on first use.
const PYTEST: &str = "pytest>=7";

/// Arguments of `cargo xtask wheel`.
#[derive(clap::Args)]
pub struct WheelArgs {
    /// The cargo profile: `release` (default; what to install and benchmark) or `dev` (fast to build).
    #[arg(long, default_value = "release", value_parser = ["release", "dev"])]
    profile: String,
}

/// Arguments of `cargo xtask bench python`.
#[derive(clap::Args)]
pub struct BenchPythonArgs {
    /// Extra arguments for python/benchmarks/posterior.py (e.g. `-- --samples 256 --steps 64`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// The project's `.venv`, or why the Python package cannot be built here.
fn venv_of(env: &TorchEnv) -> Result<&Path> {
    match &env.source {
        Source::Venv(venv) => Ok(venv),
        Source::Libtorch(path) => bail!(
            "the Python package needs torch=={} in the project's .venv, but LIBTORCH={} is set (unset it so \
             that `cargo xtask setup` creates .venv)",
            torch::TORCH_VERSION,
            path.display()
        ),
    }
}

/// Installs `requirement` (distribution `name`) into the venv unless some version of it is there.
fn ensure(venv: &Path, name: &str, requirement: &str) -> Result<()> {
    if torch::installed_version(venv, name)?.is_none() {
        eprintln!("xtask: installing {requirement} into {}", venv.display());
        torch::pip_install(venv, requirement)?;
    }
    Ok(())
}

/// Builds the wheel in `profile` (`dev` or `release`) into `target/wheels/<profile>/` and returns its path.
pub fn build_wheel(root: &Path, env: &TorchEnv, profile: &str) -> Result<PathBuf> {
    let venv = venv_of(env)?;
    ensure(venv, "maturin", MATURIN)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let out = target.join("wheels").join(profile);
    if out.is_dir() {
        for entry in std::fs::read_dir(&out)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "whl") {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    let python = torch::venv_python(venv);
    let mut cmd = Command::new(venv.join("bin").join("maturin"));
    cmd.current_dir(root.join("python"))
        .args(["build", "--profile", profile, "--interpreter"])
        .arg(&python)
        .arg("--out")
        .arg(&out)
        .env("PYO3_PYTHON", &python);
    env.apply(&mut cmd)?;
    let status = cmd.status().context("cannot run maturin")?;
    if !status.success() {
        bail!("maturin build ({profile}) failed ({status})");
    }
    let wheel = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("maturin wrote no wheel into {}", out.display()))?;
    Ok(wheel)
}

/// A fresh virtual environment at `dir` made by `.venv`'s interpreter, seeing `.venv`'s packages through a
/// `.pth` file, with `wheel` installed (no dependencies: they are `.venv`'s). Returns its interpreter.
pub fn throwaway_venv(venv: &Path, dir: &Path, wheel: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let status = Command::new(torch::venv_python(venv))
        .args(["-m", "venv", "--without-pip"])
        .arg(dir)
        .status()
        .context("cannot run python -m venv")?;
    if !status.success() {
        bail!("creating the throwaway venv {} failed ({status})", dir.display());
    }
    let base = torch::site_packages_dirs(venv)?;
    let site = torch::site_packages_dirs(dir)?;
    let site = site.first().with_context(|| format!("{} has no site-packages", dir.display()))?;
    let lines: Vec<String> = base.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    std::fs::write(site.join("_diem_base_venv.pth"), lines.join("\n") + "\n")?;
    let python = torch::venv_python(dir);
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"])
        .arg(wheel)
        .status()
        .context("cannot run pip in the throwaway venv")?;
    if !status.success() {
        bail!("installing {} into {} failed ({status})", wheel.display(), dir.display());
    }
    Ok(python)
}

/// Adds pytest's closing line (`== 28 passed, 1 skipped in 3.1s ==`) to `totals`; returns whether it was one.
fn add_pytest_line(totals: &mut TestTotals, line: &str) -> bool {
    let text = line.trim().trim_matches('=').trim();
    if !(text.contains(" passed") || text.contains(" failed") || text.contains(" error"))
        || !text.contains(" in ")
    {
        return false;
    }
    let mut seen = false;
    for part in text.split(" in ").next().unwrap_or("").split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else { continue };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => totals.passed += n,
            "failed" | "error" | "errors" => totals.failed += n,
            "skipped" | "xfailed" | "deselected" => totals.ignored += n,
            _ => continue,
        }
        seen = true;
    }
    if seen {
        totals.suites += 1;
    }
    seen
}

/// The pytest step of `cargo xtask test`: dev wheel → throwaway venv → `pytest python/tests`. Adds pytest's
/// counts to `totals`; prints why it is skipped where it cannot run (no `.venv`: LIBTORCH is set). An error
/// (a build or install failure) fails the test run.
pub fn pytest(root: &Path, env: &TorchEnv, totals: &mut TestTotals) -> Result<bool> {
    let venv = match venv_of(env) {
        Ok(v) => v,
        Err(why) => {
            println!("xtask: python tests skipped: {why:#}");
            return Ok(true);
        }
    };
    ensure(venv, "pytest", PYTEST)?;
    eprintln!("xtask: building the dev wheel of the Python package");
    let wheel = build_wheel(root, env, "dev")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let python = throwaway_venv(venv, &target.join("pytest-venv"), &wheel)?;
    let mut cmd = Command::new(&python);
    // From target/ so that python/diem (the sources, without the extension) is not what `import diem` finds.
    cmd.current_dir(&target)
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"])
        .arg(root.join("python").join("tests"))
        .stdout(Stdio::piped());
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", "1");
    }
    eprintln!("xtask: pytest python/tests (wheel {})", wheel.display());
    let mut child = cmd.spawn().context("cannot run pytest")?;
    let stdout = child.stdout.take().context("pytest stdout was not captured")?;
    use std::io::BufRead;
    let mut counted = false;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading pytest output")?;
        println!("{line}");
        counted |= add_pytest_line(totals, &line);
    }
    let status = child.wait().context("pytest did not finish")?;
    if !counted {
        totals.failed += 1;
        println!("xtask: pytest printed no result line ({status})");
    }
    Ok(status.success())
}

/// `cargo xtask wheel`.
pub fn wheel(root: &Path, args: &WheelArgs) -> Result<std::process::ExitCode> {
    let env = torch::setup(root)?;
    let wheel = build_wheel(root, &env, &args.profile)?;
    println!("{}", wheel.display());
    Ok(std::process::ExitCode::SUCCESS)
}

/// `cargo xtask bench python`: the release wheel in a throwaway venv, azula installed into `.venv`, then
/// python/benchmarks/posterior.py (interleaved runs of `diem.posterior` and azula's MMPS on one module),
/// whose report goes to runs/bench-python/.
pub fn bench(root: &Path, args: &BenchPythonArgs) -> Result<std::process::ExitCode> {
    let env = torch::setup(root)?;
    let venv = venv_of(&env)?;
    if torch::installed_version(venv, "azula")?.as_deref() != Some(crate::experiments::AZULA_VERSION) {
        // torchvision first, pinned to the build for our torch, so that azula's dependencies upgrade nothing.
        torch::pip_install(venv, &format!("torchvision=={}", crate::experiments::TORCHVISION_VERSION))?;
        torch::pip_install(venv, &format!("azula=={}", crate::experiments::AZULA_VERSION))?;
    }
    let wheel = build_wheel(root, &env, "release")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let python = throwaway_venv(venv, &target.join("bench-venv"), &wheel)?;
    let out = root.join("runs").join("bench-python");
    std::fs::create_dir_all(&out)?;
    let status = Command::new(&python)
        .current_dir(&target)
        .arg(root.join("python").join("benchmarks").join("posterior.py"))
        .arg("--out")
        .arg(out.join("report.md"))
        .args(&args.args)
        .status()
        .context("cannot run the benchmark")?;
    Ok(if status.success() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_closing_lines_are_counted() {
        let mut t = TestTotals::default();
        assert!(add_pytest_line(&mut t, "======= 28 passed, 2 skipped in 1.36s ======="));
        assert!(add_pytest_line(&mut t, "1 failed, 3 passed, 1 error in 0.5s"));
        assert!(!add_pytest_line(&mut t, "collected 28 items"));
        assert!(!add_pytest_line(&mut t, "tests/test_fit.py::test_a_tiny_fit PASSED in the middle"));
        assert_eq!((t.passed, t.failed, t.ignored, t.suites), (31, 2, 2, 2));
    }
}
