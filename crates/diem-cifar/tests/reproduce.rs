//! The whole pipeline end to end on the `micro` preset: synthetic CIFAR-format data (read back from its
//! `.tar.gz`), observations, Gaussian initialization, one DiEM lap, grids, FID/IS with a tiny TorchScript
//! Inception made by the project's Python, report, resume; and the binary's `prepare` on a folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use diem_cifar::{
    run_experiment, write_synthetic, CifarConfig, CifarError, RunOptions, SyntheticSpec, GAUSSIAN_GRID_FILE,
    POSTERIOR_GRID_FILE, PRIOR_GRID_FILE, REFERENCE_STATS_FILE, REPORT_FILE,
};
use serde_json::Value;

/// The venv's python (`$VIRTUAL_ENV/bin/python`, set by xtask), else `python3`.
fn python() -> PathBuf {
    std::env::var_os("VIRTUAL_ENV")
        .map(|v| PathBuf::from(v).join("bin").join("python"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Writes the tiny Inception stand-in; `None` (with the reason printed) when Python or torch is missing.
fn tiny_inception(dir: &Path) -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_tiny_inception.py");
    let out = dir.join("tiny-inception.pt");
    match Command::new(python()).arg(&script).arg(&out).output() {
        Ok(o) if o.status.success() && out.is_file() => Some(out),
        Ok(o) => {
            eprintln!("skipping FID/IS: {} failed: {}", script.display(), String::from_utf8_lossy(&o.stderr));
            None
        }
        Err(e) => {
            eprintln!("skipping FID/IS: cannot run {}: {e}", python().display());
            None
        }
    }
}

fn finite(line: &Value, key: &str) -> f64 {
    let v = line.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
    assert!(v.is_finite(), "{key} = {:?} in {line}", line.get(key));
    v
}

#[test]
fn micro_run_writes_checkpoints_grids_metrics_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let inception = tiny_inception(dir.path());
    let options = RunOptions { inception: inception.clone(), ..RunOptions::default() };
    let config = CifarConfig::micro(0.5);
    let summary = run_experiment(&config, &out, &options).unwrap();

    assert_eq!(summary.metrics.len(), 1);
    let line = &summary.metrics[0];
    assert_eq!(line.get("lap").and_then(Value::as_u64), Some(0));
    finite(line, "loss_mean");
    finite(line, "eval_seconds");
    // The test split is the validation set: its loss is recorded during the M-step.
    assert!(finite(line, "val_loss_last") > 0.0);
    assert!(out.join("lap-000/validation.jsonl").is_file());
    // The observation residual of posterior samples is at the noise level 1e-3 (kept pixels match y).
    assert!(finite(line, "obs_residual_rms") < 0.01);
    if inception.is_some() {
        assert!(finite(line, "fid") >= 0.0);
        assert!(finite(line, "is_mean") >= 1.0 - 1e-9);
        finite(line, "is_std");
        assert_eq!(line.get("eval_samples").and_then(Value::as_i64), Some(config.eval.samples as i64));
        assert!(out.join(REFERENCE_STATS_FILE).is_file());
    }

    let data = out.join("data");
    assert!(data.join("cifar-10-binary.tar.gz").is_file());
    assert!(data.join("prepared/observations-rho0.50.npz").is_file());
    assert!(data.join("prepared/train-images-uint8.npy").is_file());
    assert!(out.join(GAUSSIAN_GRID_FILE).is_file());
    let lap = out.join("lap-000");
    for f in [PRIOR_GRID_FILE, POSTERIOR_GRID_FILE, "weights.safetensors", "ema.safetensors", "samples.npy"] {
        assert!(lap.join(f).is_file(), "missing lap-000/{f}");
    }
    let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    assert!(report.contains("| 0 |"), "{report}");
    assert!(report.contains("Corrupted CIFAR-10, ρ = 0.5 (micro)"), "{report}");
    assert!(report.contains("6.76"), "the paper's ρ = 0.5 row: {report}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1);

    // An existing run is neither silently reused nor overwritten; resuming a finished run does nothing.
    let err = run_experiment(&config, &out, &options).unwrap_err();
    assert!(matches!(err, CifarError::Config { .. }), "{err:?}");
    let resumed = run_experiment(&config, &out, &RunOptions { resume: true, ..options.clone() }).unwrap();
    assert_eq!(resumed.metrics, summary.metrics);
}

#[test]
fn binary_prepares_a_folder_and_reports_missing_data() {
    let exe = env!("CARGO_BIN_EXE_diem-cifar");
    let dir = tempfile::tempdir().unwrap();
    write_synthetic(
        dir.path(),
        &dir.path().join("archive"),
        &SyntheticSpec { train_per_file: 4, test: 2, seed: 1 },
    )
    .unwrap();
    let out = dir.path().join("prepared");
    let status = Command::new(exe)
        .args(["prepare", "--quiet", "--rho", "0.25,0.5", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("ρ = 0.25: 20 observations") && stdout.contains("ρ = 0.5: 20 observations"),
        "{stdout}"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("prepare.json")).unwrap()).unwrap();
    assert_eq!(summary["sets"].as_array().unwrap().len(), 2);
    assert!(summary["source"].as_str().unwrap().ends_with("cifar-10-batches-bin"));

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let failed = Command::new(exe).args(["prepare", "--quiet", "--data"]).arg(&empty).output().unwrap();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("no CIFAR-10 binary data set") && stderr.contains("--download"), "{stderr}");
}
