//! InceptionNet, fid_is and Lpips against tiny TorchScript modules built by the venv's Python
//! (tests/common/fixtures.py), with PyTorch's own outputs and torch-fidelity's Inception Score as references.

mod common;

use common::{fixture, max_abs_diff, npy};
use diem_metrics::{
    fid_is, frechet_distance, inception_score, inception_score_shuffled, numpy_permutation, FeatureStats,
    InceptionNet, Lpips, MetricsError,
};
use tch::{Device, Kind, Tensor};

fn net(name: &str) -> InceptionNet {
    InceptionNet::load(fixture(&format!("{name}.pt")), Device::Cpu).expect("load the fixture network")
}

fn random_images(n: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    (Tensor::rand([n, 3, 12, 10], (Kind::Float, Device::Cpu)) * 255.0).round()
}

#[test]
fn features_and_logits_match_pytorch_for_any_batch_size() {
    let images = npy("images.npy");
    let (want_f, want_l) = (npy("features.npy"), npy("logits.npy"));
    let net = net("inception_full");
    for batch in [1, 5, 13, 100] {
        let (f, l) = net.features_and_logits(&images, batch).unwrap();
        let l = l.expect("the full module returns logits");
        assert_eq!(f.size(), [13, 16]);
        assert_eq!(l.size(), [13, 10]);
        assert!(
            max_abs_diff(&f, &want_f) < 1e-5,
            "features differ by {} at batch {batch}",
            max_abs_diff(&f, &want_f)
        );
        assert!(
            max_abs_diff(&l, &want_l) < 1e-5,
            "logits differ by {} at batch {batch}",
            max_abs_diff(&l, &want_l)
        );
    }
}

#[test]
fn fid_of_a_set_against_itself_is_zero_and_fid_is_symmetric() {
    let net = net("inception_full");
    let images = random_images(64, 1);
    let (features, _) = net.features_and_logits(&images, 16).unwrap();
    let stats = FeatureStats::from_features(&features).unwrap();
    assert_eq!(stats.count, 64);
    let report = fid_is(&net, &images, &stats, 16, 4).unwrap();
    let scale = stats.cov.trace().double_value(&[]);
    assert!(report.fid.abs() < 1e-9 * scale, "FID against itself = {} (tr Σ = {scale})", report.fid);
    assert_eq!(report.count, 64);
    assert!(report.is_mean.is_some() && report.is_std.is_some());

    let other =
        FeatureStats::from_features(&net.features_and_logits(&random_images(48, 2), 48).unwrap().0).unwrap();
    let (ab, ba) = (frechet_distance(&stats, &other).unwrap(), frechet_distance(&other, &stats).unwrap());
    assert!(ab > 0.0, "different sets give FID {ab}");
    assert!((ab - ba).abs() <= 1e-9 * ab, "FID not symmetric: {ab} vs {ba}");
    // Darker images move the features: a far larger distance than between two draws of the same distribution.
    let dark = (random_images(48, 3) * 0.2).round();
    let far = frechet_distance(
        &stats,
        &FeatureStats::from_features(&net.features_and_logits(&dark, 48).unwrap().0).unwrap(),
    )
    .unwrap();
    assert!(far > 3.0 * ab, "FID to dark images {far} not above FID between two draws {ab}");
}

#[test]
fn constant_logits_give_an_inception_score_of_one() {
    let net = net("inception_constant");
    let images = random_images(30, 4);
    let (features, _) = net.features_and_logits(&images, 7).unwrap();
    let report = fid_is(&net, &images, &FeatureStats::from_features(&features).unwrap(), 7, 3).unwrap();
    let (mean, std) = (report.is_mean.unwrap(), report.is_std.unwrap());
    assert!((mean - 1.0).abs() < 1e-12 && std.abs() < 1e-12, "IS = {mean} ± {std}");
}

#[test]
fn a_features_only_network_gives_fid_without_is() {
    let full = net("inception_full");
    let net = net("inception_features");
    let images = npy("images.npy");
    let (f, l) = net.features_and_logits(&images, 4).unwrap();
    assert!(l.is_none());
    assert!(max_abs_diff(&f, &npy("features.npy")) < 1e-5);
    let reference =
        FeatureStats::from_features(&full.features_and_logits(&random_images(20, 5), 20).unwrap().0).unwrap();
    let report = fid_is(&net, &images, &reference, 4, 10).unwrap();
    assert!(report.fid > 0.0 && report.is_mean.is_none() && report.is_std.is_none());
}

#[test]
fn inception_score_matches_torch_fidelity() {
    let logits = npy("is_logits.npy");
    let want = npy("is_shuffled.npy");
    let (mean, std) = inception_score_shuffled(&logits, 10, 2020).unwrap();
    assert!((mean - want.double_value(&[0])).abs() < 1e-12, "IS mean {mean} vs {}", want.double_value(&[0]));
    assert!((std - want.double_value(&[1])).abs() < 1e-12, "IS std {std} vs {}", want.double_value(&[1]));
    let want = npy("is_ordered.npy");
    let (mean, std) = inception_score(&logits, 7).unwrap();
    assert!((mean - want.double_value(&[0])).abs() < 1e-12 && (std - want.double_value(&[1])).abs() < 1e-12);
    // Without the shuffle the splits differ, and so does the score.
    let (unshuffled, _) = inception_score(&logits, 10).unwrap();
    assert!((unshuffled - npy("is_shuffled.npy").double_value(&[0])).abs() > 1e-9);
}

#[test]
fn numpy_permutation_matches_numpy() {
    for (name, n, seed) in [("permutation.npy", 1000, 2020), ("permutation_seed7.npy", 37, 7)] {
        let want = Vec::<i64>::try_from(npy(name)).unwrap();
        assert_eq!(numpy_permutation(n, seed), want, "{name}");
    }
}

#[test]
fn bad_networks_and_inputs_give_typed_errors() {
    let images = random_images(6, 6);
    let err = net("inception_triple").features_and_logits(&images, 4).unwrap_err();
    assert!(matches!(err, MetricsError::ModelOutput { .. }), "{err}");
    assert!(err.to_string().contains("inception_triple.pt") && err.to_string().contains("a tuple"), "{err}");
    let err = net("inception_wrong_batch").features_and_logits(&images, 4).unwrap_err();
    assert!(matches!(err, MetricsError::ModelOutput { .. }) && err.to_string().contains("[1, 16]"), "{err}");

    let full = net("inception_full");
    let err = full.features_and_logits(&(images.shallow_clone() / 127.5 - 1.0), 4).unwrap_err();
    assert!(matches!(err, MetricsError::Range { .. }), "{err}");
    let err = full.features_and_logits(&images.narrow(1, 0, 1), 4).unwrap_err();
    assert!(matches!(err, MetricsError::Shape { .. }), "{err}");
    let err = full.features_and_logits(&images, 0).unwrap_err();
    assert!(matches!(err, MetricsError::Parameter { name: "batch", .. }), "{err}");
    let nan = images.copy();
    let _ = nan.get(0).get(0).get(0).fill_(f64::NAN);
    assert!(matches!(full.features_and_logits(&nan, 4).unwrap_err(), MetricsError::NonFinite { .. }));
    let stats = FeatureStats::from_features(&full.features_and_logits(&images, 6).unwrap().0).unwrap();
    let err = fid_is(&full, &images, &stats, 4, 7).unwrap_err();
    assert!(matches!(err, MetricsError::TooFewSamples { needed: 7, got: 6, .. }), "{err}");
}

#[test]
fn missing_or_corrupt_torchscript_files_are_named() {
    let missing = fixture("no-such-network.pt");
    let err = InceptionNet::load(&missing, Device::Cpu).unwrap_err();
    assert!(
        matches!(err, MetricsError::ModelFile { .. }) && err.to_string().contains("no-such-network.pt"),
        "{err}"
    );
    let corrupt = fixture("corrupt.pt");
    std::fs::write(&corrupt, b"this is not a TorchScript archive").unwrap();
    for err in [
        InceptionNet::load(&corrupt, Device::Cpu).unwrap_err(),
        Lpips::load(&corrupt, Device::Cpu).unwrap_err(),
    ] {
        assert!(
            matches!(err, MetricsError::ModelFile { .. }) && err.to_string().contains("corrupt.pt"),
            "{err}"
        );
    }
}

#[test]
fn lpips_returns_one_distance_per_pair() {
    tch::manual_seed(7);
    let x = Tensor::rand([4, 3, 8, 6], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let y = Tensor::rand([4, 3, 8, 6], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let want = (&x - &y).square().mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
    for name in ["lpips_mse", "lpips_keepdim"] {
        let lpips = Lpips::load(fixture(&format!("{name}.pt")), Device::Cpu).unwrap();
        let d = lpips.distance(&x, &y).unwrap();
        assert_eq!(d.size(), [4], "{name}");
        assert!(max_abs_diff(&d, &want) < 1e-6, "{name}");
        assert!(lpips.distance(&x, &x).unwrap().abs().max().double_value(&[]) == 0.0);
    }
}

#[test]
fn lpips_rejects_bad_shapes_ranges_and_outputs() {
    let x = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
    let lpips = Lpips::load(fixture("lpips_mse.pt"), Device::Cpu).unwrap();
    let err = lpips.distance(&x, &Tensor::zeros([2, 3, 4, 5], (Kind::Float, Device::Cpu))).unwrap_err();
    assert!(matches!(err, MetricsError::Shape { .. }), "{err}");
    let err = lpips.distance(&x.narrow(1, 0, 1), &x.narrow(1, 0, 1)).unwrap_err();
    assert!(matches!(err, MetricsError::Shape { .. }), "{err}");
    let err = lpips.distance(&x, &(x.ones_like() * 2.0)).unwrap_err();
    assert!(matches!(err, MetricsError::Range { input: "y", .. }), "{err}");
    let bad = Lpips::load(fixture("lpips_per_channel.pt"), Device::Cpu).unwrap();
    let err = bad.distance(&x, &x).unwrap_err();
    assert!(matches!(err, MetricsError::ModelOutput { .. }) && err.to_string().contains("[2, 3]"), "{err}");
    let err = Lpips::load(fixture("missing-lpips.pt"), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("missing-lpips.pt"), "{err}");
}

#[test]
fn cuda_features_match_cpu() {
    if !tch::Cuda::is_available() {
        eprintln!("skipping cuda_features_match_cpu: CUDA is not available");
        return;
    }
    let images = npy("images.npy");
    let gpu = InceptionNet::load(fixture("inception_full.pt"), Device::Cuda(0)).unwrap();
    let (f, l) = gpu.features_and_logits(&images, 5).unwrap();
    assert_eq!(f.device(), Device::Cpu);
    assert!(max_abs_diff(&f, &npy("features.npy")) < 1e-4);
    assert!(max_abs_diff(&l.unwrap(), &npy("logits.npy")) < 1e-4);
    let lpips = Lpips::load(fixture("lpips_mse.pt"), Device::Cuda(0)).unwrap();
    let x = images / 127.5 - 1.0;
    let d = lpips.distance(&x, &x.flip([0i64])).unwrap();
    let want = (&x - x.flip([0i64])).square().mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
    assert!(max_abs_diff(&d, &want) < 1e-5);
}

#[test]
fn feature_stats_read_numpy_written_files() {
    let (mu, sigma) = (npy("numpy_mu.npy"), npy("numpy_sigma.npy"));
    let stats = FeatureStats::load(fixture("numpy_stats.npz")).unwrap();
    assert!(stats.mean.equal(&mu) && stats.cov.equal(&sigma) && stats.count == 77);
    let compressed = FeatureStats::load(fixture("numpy_stats_compressed.npz")).unwrap();
    assert!(compressed.mean.equal(&mu) && compressed.cov.equal(&sigma) && compressed.count == 0);
}
