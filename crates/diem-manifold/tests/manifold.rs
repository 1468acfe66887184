//! End-to-end test of the manifold experiment (docs/method.md §9a) at tiny sizes: data, Gaussian initialization,
//! laps, evaluation, plots and report.

use diem_manifold::{
    run_experiment, stored_config, LapRecord, ManifoldConfig, ManifoldData, RunOptions, CURVE_FILE,
    GAUSSIAN_CORNER_FILE, LAP_CORNER_FILE, RECORDS_FILE, REPORT_FILE,
};
use tch::{Device, Kind};

fn finite(v: f64) -> bool {
    v.is_finite()
}

#[test]
fn tiny_run_writes_report_plots_and_finite_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut config = ManifoldConfig::tiny();
    config.em.laps = 2;
    let summary = run_experiment(&config, &out, &RunOptions::default()).unwrap();

    // One record for the Gaussian (lap −1) and one per lap, all finite and positive.
    let laps: Vec<i64> = summary.records.iter().map(|r| r.lap).collect();
    assert_eq!(laps, vec![-1, 0, 1]);
    for r in &summary.records {
        assert!(finite(r.sinkhorn) && r.sinkhorn >= 1e-6, "{r:?}");
        assert!((0.0..=1.0).contains(&r.kept), "{r:?}");
    }
    for r in &summary.records[1..] {
        assert!(r.loss_mean.is_some_and(finite), "{r:?}");
        assert!(r.sinkhorn_estep.is_some_and(finite), "{r:?}");
    }

    // Files: report, curve, records, corner plots (PNG signature), EM metrics with the observer's fields.
    let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    assert!(report.contains("| gaussian |") && report.contains("| 1 |"), "{report}");
    assert!(report.contains(CURVE_FILE));
    let png = |p: std::path::PathBuf| {
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(&bytes[..4], b"\x89PNG", "{}", p.display());
    };
    png(out.join(CURVE_FILE));
    png(out.join(GAUSSIAN_CORNER_FILE));
    png(out.join("lap-000").join(LAP_CORNER_FILE));
    png(out.join("lap-001").join(LAP_CORNER_FILE));
    let records: Vec<LapRecord> = std::fs::read_to_string(out.join(RECORDS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), summary.records.len());
    for (a, b) in records.iter().zip(&summary.records) {
        assert_eq!(a.lap, b.lap);
        assert!((a.sinkhorn - b.sinkhorn).abs() <= 1e-12 * b.sinkhorn.abs(), "{a:?} vs {b:?}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        for key in ["sinkhorn_prior", "sinkhorn_estep", "prior_kept_fraction", "loss_mean"] {
            let v = line.get(key).and_then(serde_json::Value::as_f64);
            assert!(v.is_some_and(finite), "{key} in {line}");
        }
    }
    assert_eq!(stored_config(&out).unwrap(), config);

    // A second call neither clobbers nor silently reuses the run; resuming a finished run keeps its records.
    assert!(run_experiment(&config, &out, &RunOptions::default()).is_err());
    let again = run_experiment(&config, &out, &RunOptions { resume: true, ..RunOptions::default() }).unwrap();
    let laps_again: Vec<i64> = again.records.iter().map(|r| r.lap).collect();
    assert_eq!(laps_again, laps);
    assert!(
        (again.records[2].sinkhorn - summary.records[2].sinkhorn).abs()
            <= 1e-12 * summary.records[2].sinkhorn
    );
}

#[test]
fn data_follow_the_spec() {
    let config = ManifoldConfig::tiny();
    let data = ManifoldData::generate(&config.data, 16, Device::Cpu).unwrap();
    assert_eq!(data.truth.size(), vec![128, 5]);
    // Every feature spans exactly [−2, 2].
    let lo = Vec::<f64>::try_from(data.truth.amin(0, false).to_kind(Kind::Double)).unwrap();
    let hi = Vec::<f64>::try_from(data.truth.amax(0, false).to_kind(Kind::Double)).unwrap();
    assert!(lo.iter().all(|v| (v + 2.0).abs() < 1e-5) && hi.iter().all(|v| (v - 2.0).abs() < 1e-5));
    // y = A x + noise with σ_y = 1e-2: the residual's std is close to 1e-2.
    let a = data.observation.operator.apply(&data.truth);
    let resid = (&data.observation.y - a).std(true).double_value(&[]);
    assert!((resid - 1e-2).abs() < 2e-3, "residual std {resid}");
    // u1 and u2 are the first and last 16 points: disjoint.
    assert_eq!(data.u1, data.truth.narrow(0, 0, 16));
    assert_eq!(data.u2, data.truth.narrow(0, 112, 16));
    // Too many metric points for disjoint sets is an error naming the field.
    let err = ManifoldData::generate(&config.data, 65, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("metric.points"), "{err}");
}

#[test]
fn mlp_flops_are_counted_per_linear_layer() {
    // docs/method.md §9a's MLP: [c_in x (5), emb (64)] → 256 → 256 → 256 → 5.
    let paper = ManifoldConfig::paper();
    let macs = diem_manifold::mlp_macs(&paper.em.network).unwrap();
    assert_eq!(macs, (69 * 256 + 256 * 256 + 256 * 256 + 256 * 5) as f64);
    let tiny = ManifoldConfig::tiny();
    assert_eq!(diem_manifold::mlp_macs(&tiny.em.network).unwrap(), (13 * 16 + 16 * 16 + 16 * 5) as f64);
}

#[test]
fn presets_validate_and_bad_values_name_the_field() {
    for name in ["paper", "reference", "ref", "demo", "tiny"] {
        ManifoldConfig::preset(name).unwrap().validate().unwrap();
    }
    assert!(ManifoldConfig::preset("nope").is_err());
    let mut c = ManifoldConfig::demo();
    c.metric.points = c.data.points;
    assert!(c.validate().unwrap_err().to_string().contains("metric.points"));
    let mut c = ManifoldConfig::demo();
    c.metric.lambda = 0.0;
    assert!(c.validate().unwrap_err().to_string().contains("metric.lambda"));
    let mut c = ManifoldConfig::demo();
    c.data.ambient_dim = 4;
    assert!(c.validate().unwrap_err().to_string().contains("features"));
}
