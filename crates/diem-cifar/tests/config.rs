//! The presets encode docs/method.md §9b, §7.4 and §8, and the report carries the paper's Table 1.

use diem_cifar::{paper_rows, report_markdown, CifarConfig};
use diem_em::{Covariance, LapOrder, SamplerSpec};
use diem_models::{Batching, LrSchedule, NetworkConfig, UNetConfig};

#[test]
fn paper_preset_is_section_9b() {
    let c = CifarConfig::paper(0.75);
    c.validate().unwrap();
    let e = &c.em;
    assert_eq!(e.laps, 32);
    assert_eq!(e.order, LapOrder::SampleThenTrain);
    assert_eq!(e.network, NetworkConfig::Unet(UNetConfig::cifar()));
    assert_eq!(e.network.num_parameters(), 57_560_451);
    // 256 epochs of floor(50,000 / 256) = 195 steps.
    assert_eq!(e.mstep.steps, 49_920);
    assert_eq!(e.mstep.batch_size, 256);
    assert_eq!(e.mstep.batching, Batching::Epochs);
    assert_eq!(e.mstep.lr.init, 2e-4);
    assert_eq!(e.mstep.lr.schedule, LrSchedule::Constant);
    assert_eq!(e.mstep.clip_norm, Some(1.0));
    assert_eq!(e.mstep.ema_decay, Some(0.9999));
    assert_eq!((e.mstep.schedule.a, e.mstep.schedule.b), (1e-3, 1e2));
    let a = e.mstep.augment;
    assert!(a.hflip && a.hue == 0.01 && a.saturation == 0.05 && a.translate == 0);
    assert_eq!(e.estep.sampler, SamplerSpec::Ddpm { steps: 256 });
    let mmps = e.estep.posterior.mmps().expect("the paper's E-step is MMPS");
    assert_eq!(mmps.covariance, Covariance::Tweedie);
    assert_eq!(mmps.solver.iterations, 1);
    assert_eq!(mmps.solver.rtol, None);
    assert_eq!(e.estep.samples_per_observation, 1);
    let r = e.refit.unwrap();
    assert_eq!((r.rank, r.samples), (64, 16_384));
    assert_eq!((e.gaussian.rank, e.gaussian.iterations, e.gaussian.steps), (64, 16, 256));
    assert_eq!(e.gaussian.max_pairs, Some(16_384));
    assert_eq!(e.gaussian.solver.rtol, Some(1e-3));
    assert_eq!(e.filter_bound, None);
    assert_eq!((c.eval.samples, c.eval.prior_steps, c.eval.splits), (50_000, 256, 10));
    assert_eq!(c.images, None);
}

#[test]
fn every_preset_validates_and_small_ones_are_small() {
    for name in ["paper", "reduced", "tiny", "micro"] {
        let c = CifarConfig::preset(name, 0.5).unwrap();
        c.validate().unwrap();
        assert_eq!(c.preset, name);
    }
    assert!(CifarConfig::preset("huge", 0.5).is_err());
    let tiny = CifarConfig::tiny(0.75);
    assert!(tiny.em.network.num_parameters() < 100_000);
    assert!(tiny.synthetic.is_some());
    assert!(CifarConfig::micro(0.75).em.mstep.steps <= 20);
    let mut bad = CifarConfig::tiny(1.0);
    assert!(bad.validate().is_err());
    bad.rho = 0.5;
    bad.eval.splits = bad.eval.samples + 1;
    assert!(bad.validate().is_err());
}

#[test]
fn table_one_rows_and_report() {
    let rows = paper_rows(0.75);
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[0].fid, rows[0].is), (13.18, 8.14));
    assert_eq!(paper_rows(0.25)[0].fid, 5.88);
    assert_eq!(paper_rows(0.5)[0].is, 8.75);
    assert!(paper_rows(0.2).is_empty());
    let line = serde_json::json!({"lap": 0, "loss_mean": 0.5, "loss_std": 0.1, "fid": 12.5, "is_mean": 7.25,
        "is_std": 0.5, "estep_seconds": 1.0, "mstep_seconds": 2.0, "lap_seconds": 3.5});
    let md = report_markdown(&CifarConfig::paper(0.75), &[line], Some("inception.pt"));
    assert!(md.contains("| 0 | 0.5000 ± 0.1000 |"), "{md}");
    assert!(md.contains("12.50") && md.contains("7.25 ± 0.50") && md.contains("13.18"), "{md}");
    assert!(md.contains("lap-000/prior.png"));
}

/// The presets' JSON is frozen (`crates/diem-em/tests/fixtures/presets/`, captured before the posterior
/// vocabulary moved to diem-sampling): a change would change what existing run directories' configurations
/// mean. `DIEM_BLESS_PRESETS=1` rewrites the fixtures.
#[test]
fn presets_serialize_to_the_frozen_json_and_parse_back() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../diem-em/tests/fixtures/presets");
    for (name, preset) in [
        ("cifar-paper-0.75", CifarConfig::paper(0.75)),
        ("cifar-reduced-0.5", CifarConfig::reduced(0.5)),
        ("cifar-tiny-0.25", CifarConfig::tiny(0.25)),
        ("cifar-micro-0.75", CifarConfig::micro(0.75)),
    ] {
        let json = serde_json::to_string_pretty(&preset).unwrap();
        let path = dir.join(format!("{name}.json"));
        if std::env::var_os("DIEM_BLESS_PRESETS").is_some() {
            std::fs::write(&path, format!("{json}\n")).unwrap();
        } else {
            let want = std::fs::read_to_string(&path).unwrap();
            assert_eq!(json, want.trim_end(), "{name}: the preset's JSON changed");
        }
        let back: CifarConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, preset, "{name}");
    }
}
