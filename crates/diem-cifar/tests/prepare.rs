//! Observation sets (docs/method.md §9b "Corruption"): deleted fraction ≈ ρ, masks shared by the channels,
//! `y = m ⊙ x + 1e-3 ε`, files that load back, and a deterministic, mergeable prepared folder.

use diem_cifar::{
    load_prepared, observation_file_name, observe, prepare, read_images_npy, synthetic_data, CifarData,
    PrepareConfig, PrepareSummary, SyntheticSpec, IMAGES_FILE, NOISE_STD, SUMMARY_FILE,
};
use diem_operators::Observation;
use tch::{Device, Kind, Tensor};

fn data() -> CifarData {
    synthetic_data(&SyntheticSpec { train_per_file: 40, test: 4, seed: 11 })
}

fn config(rhos: Vec<f64>) -> PrepareConfig {
    PrepareConfig { rhos, chunk: 64, ..PrepareConfig::default() }
}

/// The mask `[N, 3, 32, 32]` of an observation set (A applied to ones).
fn mask_of(obs: &Observation) -> Tensor {
    obs.operator.apply(&Tensor::ones(obs.y.size(), (Kind::Float, Device::Cpu)))
}

#[test]
fn observations_follow_the_corruption_model() {
    let data = data();
    let x = data.train.images();
    let n = x.size()[0];
    for rho in [0.25, 0.75] {
        let obs = observe(&x, rho, 5, NOISE_STD, 64, None).unwrap();
        assert_eq!(obs.y.size(), vec![n, 3, 32, 32]);
        assert_eq!(obs.operator.kind(), "mask");
        let m = mask_of(&obs);
        // Binary, shared by the three channels.
        assert!(bool::try_from(m.eq(0.0).logical_or(&m.eq(1.0)).all()).unwrap());
        assert!(bool::try_from(m.select(1, 0).eq_tensor(&m.select(1, 1)).all()).unwrap());
        assert!(bool::try_from(m.select(1, 0).eq_tensor(&m.select(1, 2)).all()).unwrap());
        // Deleted fraction ≈ ρ: binomial std sqrt(ρ(1−ρ)/(200·1024)) ≈ 1e-3.
        let deleted = 1.0 - m.mean(Kind::Double).double_value(&[]);
        assert!((deleted - rho).abs() < 0.006, "ρ = {rho}: deleted {deleted}");
        // y − m ⊙ x is the noise, on kept and deleted entries alike, with std 1e-3 and mean 0.
        let eps = (&obs.y - &m * &x).to_kind(Kind::Double);
        let kept = eps.masked_select(&m.gt(0.5));
        let gone = eps.masked_select(&m.lt(0.5));
        for (what, e) in [("kept", kept), ("deleted", gone)] {
            let std = e.std(false).double_value(&[]);
            let mean = e.mean(Kind::Double).double_value(&[]);
            assert!((std / NOISE_STD - 1.0).abs() < 0.02, "{what}: noise std {std}");
            assert!(mean.abs() < 1e-5, "{what}: noise mean {mean}");
            let max = e.abs().max().double_value(&[]);
            assert!(max < 7.0 * NOISE_STD, "{what}: max |ε| {max}");
        }
        assert!(matches!(obs.noise, diem_operators::NoiseCov::Isotropic { std } if std == NOISE_STD));
    }
}

#[test]
fn observe_is_deterministic_and_seed_dependent() {
    let x = data().train.head(70).images();
    let a = observe(&x, 0.5, 1, NOISE_STD, 32, None).unwrap();
    let b = observe(&x, 0.5, 1, NOISE_STD, 32, None).unwrap();
    let c = observe(&x, 0.5, 2, NOISE_STD, 32, None).unwrap();
    assert!(bool::try_from(a.y.eq_tensor(&b.y).all()).unwrap());
    assert!(!bool::try_from(mask_of(&a).eq_tensor(&mask_of(&c)).all()).unwrap());
    assert!(observe(&x.narrow(1, 0, 2), 0.5, 1, NOISE_STD, 32, None).is_err());
}

#[test]
fn prepare_writes_loadable_files_and_merges_rates() {
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prepared");
    let s1 = prepare(&data, "synthetic", &out, &config(vec![0.5])).unwrap();
    assert_eq!(s1.sets.len(), 1);
    assert_eq!(s1.used_images, 200);
    assert_eq!((s1.train_images, s1.test_images), (200, 4));
    let s2 = prepare(&data, "synthetic", &out, &config(vec![0.75])).unwrap();
    let rhos: Vec<f64> = s2.sets.iter().map(|s| s.rho).collect();
    assert_eq!(rhos, vec![0.5, 0.75]);
    assert_eq!(PrepareSummary::load(&out).unwrap(), s2);
    assert!(out.join(SUMMARY_FILE).is_file());
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    let images = read_images_npy(&out.join(IMAGES_FILE)).unwrap();
    assert_eq!(images.size(), vec![200, 3, 32, 32]);
    assert_eq!(images.kind(), Kind::Uint8);
    assert!(bool::try_from(images.eq_tensor(&data.train.images_u8()).all()).unwrap());

    for set in &s2.sets {
        assert_eq!(set.file, observation_file_name(set.rho));
        let obs = Observation::load(out.join(&set.file), Device::Cpu).unwrap();
        assert_eq!(obs.len(), 200);
        let direct = observe(&data.train.images(), set.rho, 0, NOISE_STD, 64, None).unwrap();
        assert!(bool::try_from(obs.y.eq_tensor(&direct.y).all()).unwrap(), "ρ = {}", set.rho);
        let deleted = 1.0 - mask_of(&obs).mean(Kind::Double).double_value(&[]);
        assert!((deleted - set.deleted_fraction).abs() < 1e-9);
        assert!((deleted - set.rho).abs() < 0.01);
        // The test split is observed at the same rate with other masks and noise: the validation set.
        assert_eq!(set.test_count, 4);
        let test = Observation::load(out.join(set.test_file.as_ref().unwrap()), Device::Cpu).unwrap();
        assert_eq!(test.len(), 4);
        let kept = mask_of(&test);
        let y = test.y.to_kind(Kind::Double);
        let x = data.test.images().to_kind(Kind::Double);
        let resid = ((&y - &x * &kept) * &kept).square().mean(Kind::Double).double_value(&[]).sqrt();
        assert!(resid < 2.0 * NOISE_STD, "kept test pixels hold the image: residual {resid}");
        let same = observe(&data.test.images(), set.rho, 0, NOISE_STD, 64, None).unwrap();
        assert!(!bool::try_from(same.y.eq_tensor(&test.y).all()).unwrap(), "the test seed must differ");
    }

    let loaded = load_prepared(&out, 0.75, Device::Cpu, Some(17)).unwrap();
    assert_eq!(loaded.observations.len(), 17);
    assert_eq!(loaded.validation.as_ref().map(Observation::len), Some(4));
    assert_eq!(loaded.images.size(), vec![17, 3, 32, 32]);
    let err = load_prepared(&out, 0.25, Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("0.25") && err.contains("prepare"), "{err}");

    // A different seed starts the summary over.
    let s3 = prepare(&data, "synthetic", &out, &PrepareConfig { seed: 9, ..config(vec![0.25]) }).unwrap();
    assert_eq!(s3.sets.len(), 1);
}

#[test]
fn prepare_rejects_bad_rates_and_empty_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = data();
    assert!(prepare(&d, "x", dir.path(), &config(vec![1.0])).is_err());
    assert!(prepare(&d, "x", dir.path(), &config(vec![])).is_err());
    assert!(prepare(&CifarData::default(), "x", dir.path(), &config(vec![0.5])).is_err());
    let limited =
        prepare(&d, "x", dir.path(), &PrepareConfig { limit: Some(30), ..config(vec![0.5]) }).unwrap();
    assert_eq!(limited.sets[0].count, 30);
}
