//! docs/method.md §12.1 item 11: Gaussian EM (`fit_moments`). Fully observed with tiny noise, one iteration recovers
//! the PPCA of the data; with masks, the fitted mean approaches the true mean over the iterations.

use diem_em::{fit_gaussian, fit_gaussian_with, GaussianEmConfig, GaussianPrior, SolverSpec};
use diem_linalg::ppca;
use diem_models::VeSchedule;
use diem_operators::{Identity, Mask, NoiseCov, Observation};
use tch::{Device, Kind, Tensor};

/// `S` samples of `N(mean, L Lᵀ)` in f64 from a seeded generator.
fn gaussian_data(s: i64, mean: &[f64], l: &[f64], seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let n = mean.len() as i64;
    let z = Tensor::randn([s, n], (Kind::Double, Device::Cpu));
    let l = Tensor::from_slice(l).reshape([n, n]);
    z.matmul(&l.tr()) + Tensor::from_slice(mean).unsqueeze(0)
}

fn config(rank: usize, n: usize, iterations: usize, steps: usize) -> GaussianEmConfig {
    GaussianEmConfig {
        rank,
        iterations,
        steps,
        solver: SolverSpec { rtol: Some(1e-8), ..GaussianEmConfig::spec(rank, n).solver },
        max_pairs: None,
        stride: 1,
        chunk_size: 128,
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn fully_observed_one_iteration_recovers_the_ppca_of_the_data() {
    tch::set_num_threads(1);
    let mean = [1.0, -0.5, 0.25, 2.0];
    let l = [1.0, 0.0, 0.0, 0.0, 0.5, 0.8, 0.0, 0.0, -0.3, 0.2, 0.6, 0.0, 0.1, 0.4, -0.2, 0.5];
    let x = gaussian_data(512, &mean, &l, 0);
    let obs = Observation::simulate(
        &x,
        Box::new(Identity::new(&[4]).unwrap()),
        NoiseCov::isotropic(1e-3).unwrap(),
        1,
    )
    .unwrap();
    let cfg = config(4, 4, 1, 64);
    let fit = fit_gaussian(&obs, &cfg, VeSchedule::manifold(), 7).unwrap();
    let (mu, cov) = ppca(&x, 4).unwrap();
    let dmean = max_abs(&(&fit.mean - &mu));
    let dcov = max_abs(&(fit.cov_dense() - cov.to_dense()));
    assert!(dmean < 5e-3, "mean differs from the data's PPCA by {dmean}");
    assert!(dcov < 2e-2, "covariance differs from the data's PPCA by {dcov}");
    // The starting prior N(0, I) is far from it: the test cannot pass by accident.
    assert!(max_abs(&mu) > 1.0);
    assert_eq!(fit.x_shape, vec![4]);
}

#[test]
fn with_masks_the_mean_approaches_the_true_mean() {
    tch::set_num_threads(1);
    let mean = [1.5, -1.0, 0.5];
    let l = [1.0, 0.0, 0.0, 0.7, 0.5, 0.0, -0.4, 0.3, 0.4];
    let s = 512;
    let x = gaussian_data(s, &mean, &l, 3);
    tch::manual_seed(4);
    let mask = Tensor::rand([s, 3], (Kind::Double, Device::Cpu)).gt(0.4).to_kind(Kind::Double);
    let obs = Observation::simulate(
        &x,
        Box::new(Mask::new(mask, &[3]).unwrap()),
        NoiseCov::isotropic(1e-2).unwrap(),
        5,
    )
    .unwrap();
    let truth = Tensor::from_slice(&mean);
    let mut errors = Vec::new();
    let cfg = config(3, 3, 8, 32);
    let fit = fit_gaussian_with(&obs, &cfg, VeSchedule::manifold(), 11, None, &mut |_, p: &GaussianPrior| {
        errors.push((&p.mean - &truth).square().sum(Kind::Double).sqrt().double_value(&[]));
        Ok(())
    })
    .unwrap();
    assert_eq!(errors.len(), 8);
    let last = *errors.last().unwrap();
    assert!(last < 0.5 * errors[0], "mean error did not shrink: {errors:?}");
    assert!(last < 0.15, "final mean error {last} (errors {errors:?})");
    // The fitted covariance is a valid (PSD) covariance.
    let eig = fit.cov_dense().linalg_eigvalsh("L");
    assert!(eig.min().double_value(&[]) > 0.0);
}

#[test]
fn rejects_a_rank_above_the_latent_size() {
    let x = Tensor::zeros([4, 2], (Kind::Double, Device::Cpu));
    let obs = Observation::simulate(
        &x,
        Box::new(Identity::new(&[2]).unwrap()),
        NoiseCov::isotropic(1e-2).unwrap(),
        0,
    )
    .unwrap();
    let err = fit_gaussian(&obs, &config(3, 2, 1, 4), VeSchedule::manifold(), 0).unwrap_err();
    assert!(err.to_string().contains("gaussian.rank"), "{err}");
}
