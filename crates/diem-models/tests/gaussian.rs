//! The Gaussian denoiser against dense linear algebra (docs/method.md §7.2, §12.1 item 5).

use diem_linalg::Dplr;
use diem_models::{jacobian, tweedie_covariance, Denoiser, GaussianDenoiser};
use tch::{Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

fn check(n: i64, rank: i64, seed: i64) {
    tch::manual_seed(seed);
    let d = Tensor::rand([n], OPTS) + 0.2;
    let cov = if rank > 0 {
        Dplr::symmetric(d.shallow_clone(), Tensor::randn([n, rank], OPTS)).unwrap()
    } else {
        Dplr::diagonal(d.shallow_clone()).unwrap()
    };
    let sigma_dense = cov.to_dense();
    let mu = Tensor::randn([n], OPTS);
    let den = GaussianDenoiser::new(mu.shallow_clone(), cov).unwrap();
    let sig = [0.05f64, 0.5, 1.0, 4.0];
    let b = sig.len() as i64;
    let sigma = Tensor::from_slice(&sig);
    let x_t = Tensor::randn([b, n], OPTS) * 2.0;
    let out = den.denoise(&x_t, &sigma);
    let eye = Tensor::eye(n, OPTS);
    let closed = den.covariance(&sigma).unwrap();
    let jac = jacobian(&den, &x_t, &sigma).unwrap();
    let tweedie = tweedie_covariance(&den, &x_t, &sigma).unwrap();
    for (i, &s) in sig.iter().enumerate() {
        let i = i as i64;
        let noisy_inv = (&sigma_dense + &eye * (s * s)).inverse();
        // μ + Σ (Σ + σ² I)⁻¹ (x_t − μ), densely.
        let want =
            &mu + sigma_dense.matmul(&noisy_inv).matmul(&(x_t.get(i) - &mu).unsqueeze(1)).squeeze_dim(1);
        assert!(max_abs(&(out.get(i) - &want)) < 1e-10, "mean at σ = {s}");
        // J = I − σ² (Σ + σ² I)⁻¹, symmetric.
        let j_want = &eye - &noisy_inv * (s * s);
        let j = jac.get(i);
        assert!(max_abs(&(&j - &j_want)) < 1e-10, "Jacobian at σ = {s}");
        assert!(max_abs(&(&j - j.tr())) < 1e-12, "Jacobian not symmetric at σ = {s}");
        // Tweedie's σ² J equals the closed-form covariance, dense and DPLR.
        assert!(max_abs(&(tweedie.get(i) - closed.get(i))) < 1e-10);
        let dplr = den.covariance_dplr(s).unwrap().to_dense();
        assert!(max_abs(&(dplr - closed.get(i))) < 1e-10);
    }
}

#[test]
fn gaussian_denoiser_matches_dense_posterior_mean_and_jacobian() {
    check(6, 2, 0);
    check(5, 5, 1);
}

#[test]
fn diagonal_gaussian_denoiser_works_and_images_are_flattened() {
    check(7, 0, 2);
    tch::manual_seed(3);
    let den =
        GaussianDenoiser::new(Tensor::zeros([12], OPTS), Dplr::diagonal(Tensor::ones([12], OPTS)).unwrap())
            .unwrap();
    // Σ = I: E[x | x_t] = x_t / (1 + σ²), on [B, C, H, W] inputs too.
    let x = Tensor::randn([2, 3, 2, 2], OPTS);
    let out = den.denoise(&x, &Tensor::from_slice(&[1.0f64, 3.0]));
    assert_eq!(out.size(), x.size());
    assert!(max_abs(&(out.get(0) - x.get(0) / 2.0)) < 1e-12);
    assert!(max_abs(&(out.get(1) - x.get(1) / 10.0)) < 1e-12);
    assert!(GaussianDenoiser::new(
        Tensor::zeros([3], OPTS),
        Dplr::diagonal(Tensor::ones([12], OPTS)).unwrap()
    )
    .is_err());
}
