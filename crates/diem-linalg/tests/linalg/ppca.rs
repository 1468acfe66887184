//! PPCA fit (docs/method.md §7.3, §12.1 item 10).

use crate::common::{max_abs, randn, rng};
use diem_linalg::ppca::PpcaPath;
use diem_linalg::{ppca, ppca_with, LinalgError, PpcaMethod, PpcaParams};
use tch::{Kind, Tensor};

/// Draws `s` samples of `N(mu, d I + U Uᵀ)`.
fn planted(seed: u64, s: i64, mu: &Tensor, u: &Tensor, d: f64) -> Tensor {
    let mut g = rng(seed);
    let (n, r) = (u.size()[0], u.size()[1]);
    let z = randn(&mut g, &[s, r], 1.0);
    let e = randn(&mut g, &[s, n], d.sqrt());
    z.matmul(&u.transpose(0, 1)) + e + mu
}

/// Tolerances: with S = 40,000 samples in N = 8 dims, the sample covariance errs by about ||Σ|| √(N/S) ≈ 0.015
/// ||Σ||, so we ask for the mean within 0.03 (max abs), `U Uᵀ` within 6% (relative Frobenius) and D within 0.02.
#[test]
fn ppca_recovers_planted_low_rank_covariance() {
    let mut g = rng(42);
    let (n, r, d) = (8, 2, 0.1);
    let mu = randn(&mut g, &[n], 1.0);
    let u = randn(&mut g, &[n, r], 1.0);
    let x = planted(1, 40_000, &mu, &u, d);
    let (mu_hat, cov) = ppca(&x, r as usize).expect("fit");
    assert!(max_abs(&(&mu_hat - &mu)) < 0.03, "mean error {}", max_abs(&(&mu_hat - &mu)));
    let uut = u.matmul(&u.transpose(0, 1));
    let u_hat = cov.u().expect("rank 2");
    let uut_hat = u_hat.matmul(&u_hat.transpose(0, 1));
    let rel = (&uut_hat - &uut).norm().double_value(&[]) / uut.norm().double_value(&[]);
    assert!(rel < 0.06, "U Uᵀ relative error {rel}");
    let d_hat = cov.d().double_value(&[0]);
    assert!((d_hat - d).abs() < 0.02, "D = {d_hat}");
    assert_eq!(cov.d().size(), vec![n]);
}

#[test]
fn ppca_gram_and_covariance_paths_agree() {
    let mut g = rng(5);
    for (s, n, r) in [(6, 10, 3), (20, 12, 4)] {
        let x = randn(&mut g, &[s, n], 1.0) + 0.5;
        let fit = |path| {
            let p = PpcaParams { method: PpcaMethod::Exact, path, ..PpcaParams::default() };
            ppca_with(&x, r, &p).expect("fit")
        };
        let (m1, c1) = fit(PpcaPath::Gram);
        let (m2, c2) = fit(PpcaPath::Covariance);
        assert!(max_abs(&(&m1 - &m2)) < 1e-12);
        assert!(max_abs(&(c1.to_dense() - c2.to_dense())) < 1e-8, "S = {s}, N = {n}");
    }
}

#[test]
fn ppca_subspace_iteration_matches_exact() {
    // A clear spectral gap: 5 strong directions in 300 dims.
    let mut g = rng(9);
    let n = 300;
    let u = randn(&mut g, &[n, 5], 1.0);
    let x = planted(3, 2000, &Tensor::zeros([n], (Kind::Double, tch::Device::Cpu)), &u, 0.01);
    let exact = PpcaParams { method: PpcaMethod::Exact, ..PpcaParams::default() };
    let sub = PpcaParams {
        method: PpcaMethod::Subspace { iterations: 8, oversample: 10 },
        ..PpcaParams::default()
    };
    let (_, c1) = ppca_with(&x, 5, &exact).expect("exact");
    let (_, c2) = ppca_with(&x, 5, &sub).expect("subspace");
    let (d1, d2) = (c1.to_dense(), c2.to_dense());
    let rel = (&d1 - &d2).norm().double_value(&[]) / d1.norm().double_value(&[]);
    assert!(rel < 1e-6, "relative difference {rel}");
}

#[test]
fn ppca_covariance_is_psd_and_full_rank_uses_floor() {
    let mut g = rng(11);
    let x = randn(&mut g, &[50, 5], 1.0).to_kind(Kind::Float);
    let (mu, cov) = ppca(&x, 5).expect("fit");
    assert_eq!(mu.kind(), Kind::Float);
    assert!((cov.d().double_value(&[0]) - 1e-6).abs() < 1e-9);
    let dense = cov.to_kind(Kind::Double).to_dense();
    let sample_cov = {
        let xc = x.to_kind(Kind::Double) - mu.to_kind(Kind::Double);
        xc.transpose(0, 1).matmul(&xc) / 50.0
    };
    // r = N: the fit reproduces the biased sample covariance (plus the 1e-6 floor).
    assert!(max_abs(&(&dense - &sample_cov)) < 1e-4);
    let eig = dense.linalg_eigvalsh("L");
    assert!(eig.min().double_value(&[]) > 0.0);
}

#[test]
fn ppca_rejects_bad_ranks_and_shapes() {
    let x = Tensor::ones([4, 6], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(ppca(&x, 7), Err(LinalgError::InvalidParameter { name: "rank", .. })));
    assert!(matches!(ppca(&x, 5), Err(LinalgError::InvalidParameter { name: "rank", .. })));
    let v = Tensor::ones([6], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(ppca(&v, 1), Err(LinalgError::Shape { .. })));
}
