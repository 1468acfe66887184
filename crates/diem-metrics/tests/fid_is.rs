//! FID, feature statistics and the Inception Score against closed forms (no network involved).

use diem_metrics::{
    frechet_distance, gaussian_w2_squared, inception_score, inception_score_shuffled, to_uint8_range,
    FeatureStats, MetricsError,
};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn stats(mean: Tensor, cov: Tensor) -> FeatureStats {
    FeatureStats { mean, cov, count: 100 }
}

fn vec(values: &[f64]) -> Tensor {
    Tensor::from_slice(values)
}

/// A random orthogonal matrix from the QR decomposition of a Gaussian matrix.
fn orthogonal(d: i64) -> Tensor {
    Tensor::linalg_qr(&Tensor::randn([d, d], F64), "reduced").0
}

fn spd(d: i64) -> Tensor {
    let a = Tensor::randn([d, d], F64);
    a.matmul(&a.tr()) + Tensor::eye(d, F64) * 0.1
}

#[test]
fn diagonal_covariances_follow_the_closed_form() {
    let (a, b) = ([1.0, 4.0, 0.25, 9.0], [2.0, 1.0, 0.25, 0.0]);
    let (m1, m2) = ([0.0, 1.0, -1.0, 2.0], [0.5, 1.0, 1.0, 0.0]);
    let s1 = stats(vec(&m1), Tensor::diag_embed(&vec(&a), 0, -2, -1));
    let s2 = stats(vec(&m2), Tensor::diag_embed(&vec(&b), 0, -2, -1));
    let mean_term: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y) * (x - y)).sum();
    let tr_term: f64 = a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum();
    let fid = frechet_distance(&s1, &s2).unwrap();
    assert!((fid - (mean_term + tr_term)).abs() < 1e-12, "{fid} vs {}", mean_term + tr_term);
}

#[test]
fn commuting_covariances_follow_the_closed_form() {
    tch::manual_seed(0);
    let d = 6;
    let q = orthogonal(d);
    let a = Tensor::rand([d], F64) * 3.0 + 0.1;
    let b = Tensor::rand([d], F64) * 3.0;
    let rotate = |v: &Tensor| q.matmul(&Tensor::diag_embed(v, 0, -2, -1)).matmul(&q.tr());
    let (m1, m2) = (Tensor::randn([d], F64), Tensor::randn([d], F64));
    let want = (&m1 - &m2).square().sum(Kind::Double).double_value(&[])
        + (a.sqrt() - b.sqrt()).square().sum(Kind::Double).double_value(&[]);
    let fid = frechet_distance(&stats(m1, rotate(&a)), &stats(m2, rotate(&b))).unwrap();
    assert!((fid - want).abs() < 1e-10 * want.max(1.0), "{fid} vs {want}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// For 2×2 covariances, tr (Σ1 Σ2)^{1/2} = sqrt(tr(Σ1 Σ2) + 2 sqrt(det Σ1 det Σ2)), commuting or not.
    #[test]
    fn two_by_two_covariances_follow_the_closed_form(seed in 0i64..10_000) {
        tch::manual_seed(seed);
        let (s1, s2) = (spd(2), spd(2));
        let (m1, m2) = (Tensor::randn([2], F64), Tensor::randn([2], F64));
        let det = |s: &Tensor| s.det().double_value(&[]);
        let cross = (s1.matmul(&s2).trace().double_value(&[]) + 2.0 * (det(&s1) * det(&s2)).sqrt()).sqrt();
        let want = (&m1 - &m2).square().sum(Kind::Double).double_value(&[])
            + s1.trace().double_value(&[]) + s2.trace().double_value(&[]) - 2.0 * cross;
        let fid = frechet_distance(&stats(m1, s1), &stats(m2, s2)).unwrap();
        prop_assert!((fid - want).abs() < 1e-9 * want.abs().max(1.0), "{} vs {}", fid, want);
    }

    /// FID is the squared 2-Wasserstein distance between the Gaussians; gaussian_w2_squared roots Σ2 instead.
    #[test]
    fn fid_equals_the_gaussian_w2_distance_and_is_symmetric(seed in 0i64..10_000, d in 1i64..8) {
        tch::manual_seed(seed);
        let (a, b) = (stats(Tensor::randn([d], F64), spd(d)), stats(Tensor::randn([d], F64), spd(d)));
        let fid = frechet_distance(&a, &b).unwrap();
        let w2 = gaussian_w2_squared(&a.mean, &a.cov, &b.mean, &b.cov).unwrap();
        prop_assert!((fid - w2).abs() < 1e-8 * w2.max(1.0), "{} vs {}", fid, w2);
        prop_assert!((fid - frechet_distance(&b, &a).unwrap()).abs() < 1e-8 * fid.max(1.0));
        prop_assert!(frechet_distance(&a, &a.clone()).unwrap().abs() < 1e-8 * a.cov.trace().double_value(&[]));
    }
}

#[test]
fn feature_stats_are_the_mean_and_unbiased_covariance() {
    let features = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.0, 2.0, 4.0]).reshape([3, 2]);
    let s = FeatureStats::from_features(&features).unwrap();
    assert_eq!(s.count, 3);
    assert_eq!(s.mean.kind(), Kind::Double);
    assert_eq!(Vec::<f64>::try_from(&s.mean).unwrap(), [2.0, 2.0]);
    // centred rows (−1, 0), (1, −2), (0, 2): scatter [[2, −2], [−2, 8]] over N − 1 = 2
    assert_eq!(Vec::<f64>::try_from(&s.cov.reshape([-1])).unwrap(), [1.0, -1.0, -1.0, 4.0]);
}

#[test]
fn large_samples_of_one_gaussian_are_close_and_chunking_is_exact() {
    tch::manual_seed(3);
    let (n, d) = (20_000, 4);
    let chol = spd(d).linalg_cholesky(false);
    let mu = Tensor::randn([d], F64);
    let draw = || Tensor::randn([n, d], F64).matmul(&chol.tr()) + &mu;
    let (x, y) = (draw(), draw());
    let (sx, sy) = (FeatureStats::from_features(&x).unwrap(), FeatureStats::from_features(&y).unwrap());
    // n > the 4096-row chunk: compare with the one-shot formula.
    let centred = &x - x.mean_dim([0i64].as_slice(), true, Kind::Double);
    let direct = centred.tr().matmul(&centred) / (n - 1) as f64;
    assert!((&sx.cov - direct).abs().max().double_value(&[]) < 1e-10);
    let same = frechet_distance(&sx, &sy).unwrap();
    assert!(same > 0.0 && same < 0.01, "FID between two draws of one Gaussian = {same}");
    // Shifting one sample by a unit vector adds ≈ 1.
    let shift = Tensor::from_slice(&[1.0, 0.0, 0.0, 0.0]);
    let shifted = FeatureStats::from_features(&(&y + shift)).unwrap();
    let moved = frechet_distance(&sx, &shifted).unwrap();
    assert!((moved - 1.0).abs() < 0.05, "FID after a unit shift = {moved}");
}

#[test]
fn bad_statistics_inputs_give_typed_errors() {
    let err = FeatureStats::from_features(&Tensor::ones([1, 3], F64)).unwrap_err();
    assert!(matches!(err, MetricsError::TooFewSamples { needed: 2, got: 1, .. }), "{err}");
    let err = FeatureStats::from_features(&Tensor::ones([4, 3, 1], F64)).unwrap_err();
    assert!(matches!(err, MetricsError::Shape { .. }), "{err}");
    let nan = Tensor::ones([4, 3], F64);
    let _ = nan.get(1).get(2).fill_(f64::INFINITY);
    assert!(matches!(FeatureStats::from_features(&nan).unwrap_err(), MetricsError::NonFinite { .. }));
    let a = stats(Tensor::zeros([3], F64), Tensor::eye(3, F64));
    let b = stats(Tensor::zeros([2], F64), Tensor::eye(2, F64));
    assert!(matches!(frechet_distance(&a, &b).unwrap_err(), MetricsError::Shape { .. }));
    let bad = stats(Tensor::zeros([3], F64), Tensor::eye(2, F64));
    assert!(matches!(frechet_distance(&bad, &a).unwrap_err(), MetricsError::Shape { .. }));
}

#[test]
fn feature_stats_round_trip_bit_exactly_and_corrupt_files_are_named() {
    tch::manual_seed(5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.npz");
    let s = FeatureStats::from_features(&(Tensor::randn([50, 7], F64) * 1.7)).unwrap();
    s.save(&path).unwrap();
    s.save(&path).unwrap(); // overwriting works
    let back = FeatureStats::load(&path).unwrap();
    assert!(back.mean.equal(&s.mean) && back.cov.equal(&s.cov) && back.count == 50);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["stats.npz"], "the temporary file was left behind");

    // pytorch-fid layout: f32 `mu` and `sigma`, no `count`.
    let fid_style = dir.path().join("pytorch-fid.npz");
    let (mu32, sigma32) = (s.mean.to_kind(Kind::Float), s.cov.to_kind(Kind::Float));
    Tensor::write_npz(&[("mu", &mu32), ("sigma", &sigma32)], &fid_style).unwrap();
    let loaded = FeatureStats::load(&fid_style).unwrap();
    assert_eq!(loaded.count, 0);
    assert!(loaded.cov.equal(&sigma32.to_kind(Kind::Double)));

    let only_mu = dir.path().join("only-mu.npz");
    Tensor::write_npz(&[("mu", &s.mean)], &only_mu).unwrap();
    let err = FeatureStats::load(&only_mu).unwrap_err();
    assert!(matches!(err, MetricsError::StatsFile { .. }) && err.to_string().contains("`sigma`"), "{err}");

    let wrong_shape = dir.path().join("wrong-shape.npz");
    Tensor::write_npz(&[("mu", &s.mean), ("sigma", &s.cov.narrow(0, 0, 3))], &wrong_shape).unwrap();
    assert!(matches!(FeatureStats::load(&wrong_shape).unwrap_err(), MetricsError::StatsFile { .. }));

    let garbage = dir.path().join("garbage.npz");
    std::fs::write(&garbage, b"definitely not a zip archive").unwrap();
    let err = FeatureStats::load(&garbage).unwrap_err();
    assert!(
        matches!(err, MetricsError::StatsFile { .. }) && err.to_string().contains("garbage.npz"),
        "{err}"
    );

    let truncated = dir.path().join("truncated.npz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(FeatureStats::load(&truncated).unwrap_err(), MetricsError::StatsFile { .. }));

    let err = FeatureStats::load(dir.path().join("missing.npz")).unwrap_err();
    assert!(err.to_string().contains("missing.npz"), "{err}");
}

#[test]
fn one_hot_logits_with_balanced_classes_score_the_class_count() {
    let (k, splits, per) = (7i64, 5usize, 3i64);
    let n = k * per * splits as i64;
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(k);
    let logits = labels.one_hot(k).to_kind(Kind::Double) * 40.0;
    // Each contiguous split holds every class `per` times: IS = exp(H(uniform)) = K.
    let (mean, std) = inception_score(&logits, splits).unwrap();
    assert!((mean - k as f64).abs() < 1e-9 && std < 1e-9, "IS = {mean} ± {std}");
    // One split sees all rows whatever the order.
    let (mean, _) = inception_score_shuffled(&logits, 1, 2020).unwrap();
    assert!((mean - k as f64).abs() < 1e-9);
    // Uniform predictions score 1.
    let (mean, _) = inception_score(&Tensor::zeros([20, 4], F64), 4).unwrap();
    assert!((mean - 1.0).abs() < 1e-12);
    // Extreme logits where one class is never predicted (p = 0, q = 0) keep 0 log 0 = 0 instead of NaN.
    let six = Tensor::arange(60, (Kind::Int64, Device::Cpu)).remainder(k - 1);
    let unused = six.one_hot(k).to_kind(Kind::Double) * 1e4;
    let (mean, _) = inception_score(&unused, 1).unwrap();
    assert!((mean - (k - 1) as f64).abs() < 1e-9, "IS = {mean}");
}

#[test]
fn inception_score_rejects_bad_arguments() {
    let logits = Tensor::zeros([6, 3], F64);
    let err = inception_score(&logits, 7).unwrap_err();
    assert!(matches!(err, MetricsError::TooFewSamples { needed: 7, got: 6, .. }), "{err}");
    assert!(matches!(
        inception_score(&logits, 0).unwrap_err(),
        MetricsError::Parameter { name: "splits", .. }
    ));
    assert!(matches!(
        inception_score(&logits.reshape([6, 3, 1]), 2).unwrap_err(),
        MetricsError::Shape { .. }
    ));
    let nan = logits.copy();
    let _ = nan.get(0).get(0).fill_(f64::NAN);
    assert!(matches!(inception_score(&nan, 2).unwrap_err(), MetricsError::NonFinite { .. }));
}

#[test]
fn to_uint8_range_quantizes_like_a_png() {
    let x = Tensor::from_slice(&[-2.0f32, -3.0, 2.0, 2.5, 0.0, -1.99, 1.99]).reshape([1, 1, 1, 7]);
    let q = Vec::<f32>::try_from(to_uint8_range(&x, -2.0, 2.0).reshape([-1])).unwrap();
    // 255 (x + 2) / 4 + 0.5, floored, clamped: 0, 0, 255, 255, 128, 1 (0.6375 + 0.5), 254 (254.3625 + 0.5)
    assert_eq!(q, [0.0, 0.0, 255.0, 255.0, 128.0, 1.0, 254.0]);
    // Ties round up, as torchvision's save_image (`mul(255).add_(0.5).clamp_(0, 255)`), not to even.
    let ties = Tensor::from_slice(&[0.5f32, 2.5, 254.5]).reshape([1, 1, 1, 3]);
    let q = Vec::<f32>::try_from(to_uint8_range(&ties, 0.0, 255.0).reshape([-1])).unwrap();
    assert_eq!(q, [1.0, 3.0, 255.0]);
    let nan = to_uint8_range(&x, 1.0, 1.0);
    assert!(bool::try_from(nan.isnan().all()).unwrap());
}
