//! End to end: the `micro` preset on its synthetic HDF5 fixture through `reproduce` (prepare, Gaussian init,
//! one lap, figures, checkpoint, metrics, report), then the run-directory guards and resume.

use diem_fastmri::{reproduce, FastMriConfig, FastMriError, RunOptions};
use serde_json::Value;

#[test]
fn micro_reproduce_writes_figures_checkpoints_metrics_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = FastMriConfig::micro();
    let summary = reproduce(&config, None, &out, None, &RunOptions::default()).unwrap();
    for file in [
        "report.md",
        "metrics.jsonl",
        "gaussian.png",
        "zero-filled.png",
        "fastmri.json",
        "data/prepare.json",
        "lap-000/prior.png",
        "lap-000/posterior.png",
        "lap-000/weights.safetensors",
        "lap-000/ema.safetensors",
        "lap-000/samples.npy",
        "lap-000/validation.jsonl",
    ] {
        assert!(out.join(file).is_file(), "{file} is missing");
    }
    assert_eq!(summary.metrics.len(), 1);
    let line = &summary.metrics[0];
    // 8 training pairs × 2 samples, batch 8, 2 epochs.
    assert_eq!(line["samples"], Value::from(16));
    for key in
        ["loss_mean", "val_loss_last", "psnr_r4", "ssim_r4", "psnr_zf_r8", "ssim_zf_r8", "estep_seconds"]
    {
        let v = line.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        assert!(v.is_finite(), "{key} = {v}");
    }
    let report = std::fs::read_to_string(&summary.report).unwrap();
    assert!(
        report.contains("preset `micro`")
            && report.contains("PSNR")
            && report.contains("lap-000/posterior.png")
            && report.contains("validation loss")
    );
    let samples = diem_em::read_npy(&out.join("lap-000/samples.npy"), tch::Device::Cpu).unwrap();
    assert_eq!(samples.size(), [16, 1, 16, 16]);
    assert!(samples.isfinite().all().int64_value(&[]) == 1);

    // An existing run is neither overwritten nor resumed silently.
    let err = reproduce(&config, None, &out, None, &RunOptions::default()).unwrap_err();
    assert!(matches!(err, FastMriError::Config { .. }), "{err}");
    // Resuming a finished run does nothing more and keeps its metrics.
    let resumed =
        reproduce(&config, None, &out, None, &RunOptions { resume: true, ..RunOptions::default() }).unwrap();
    assert_eq!(resumed.metrics, summary.metrics);
}
