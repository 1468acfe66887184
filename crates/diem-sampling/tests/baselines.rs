//! TMPD, PiGDM, DiffPIR and DPS in VE form (docs/method.md §5.3–5.6, §5.8) against closed forms.

mod common;

use common::*;
use diem_linalg::Dplr;
use diem_models::{Denoiser, GaussianDenoiser, VeSchedule};
use diem_operators::{NoiseCov, Projection};
use diem_sampling::{
    CountingDenoiser, DiffPir, DiffPirConfig, Dps, NoiseRng, Pgdm, PgdmConfig, Sampler, SolverConfig,
    TimeGrid, Tmpd, TmpdConfig,
};
use tch::{Device, Kind, Tensor};

fn problem(b: i64, d: i64, m: i64, seed: u64) -> (Projection, Tensor, Tensor, Tensor) {
    let op = Projection::random_sphere(b, m, d, seed).unwrap();
    let a = op.matrix().to_kind(Kind::Double);
    (op, a, randn(&[b, d], seed + 1), randn(&[b, m], seed + 2))
}

/// With a diagonal prior covariance, V = σ² J is diagonal, its row sums are its diagonal, and TMPD with a
/// converged GMRES is exact; it costs 1 forward and 2 VJPs.
#[test]
fn tmpd_is_exact_for_diagonal_gaussian_priors() {
    let (b, d, m, sigma, sigma_y) = (3, 5, 3, 0.7, 0.2);
    let diag = randn(&[d], 50).abs() + 0.2;
    let prior = GaussianDenoiser::new(randn(&[d], 51), Dplr::diagonal(diag).unwrap()).unwrap();
    let counted = CountingDenoiser::new(&prior);
    let (op, a, x_t, y) = problem(b, d, m, 52);
    let config = TmpdConfig { solver: SolverConfig::gmres(m as usize) };
    let tmpd = Tmpd::new(&counted, &op, &y, NoiseCov::isotropic(sigma_y).unwrap(), config).unwrap();
    let out = tmpd.try_denoise(&x_t, &Tensor::from(sigma)).unwrap();
    let exact = exact_posterior_mean(&prior, &a, &x_t, &y, sigma, sigma_y);
    assert!(rel_err(&out, &exact) < 1e-9, "error {}", rel_err(&out, &exact));
    let s = tmpd.stats();
    assert_eq!((s.forwards, s.vjps, counted.calls()), (1, 2, 1));
    // With correlations the row-sum approximation is not exact (the test can fail).
    let full = gaussian_prior(d, 2, 53);
    let tmpd = Tmpd::new(&full, &op, &y, NoiseCov::isotropic(sigma_y).unwrap(), config).unwrap();
    let exact = exact_posterior_mean(&full, &a, &x_t, &y, sigma, sigma_y);
    assert!(rel_err(&tmpd.try_denoise(&x_t, &Tensor::from(sigma)).unwrap(), &exact) > 1e-4);
}

/// PiGDM is MMPS with the `ones` heuristic: exact for the prior N(μ, I); 1 forward, 1 VJP.
#[test]
fn pgdm_is_exact_for_unit_covariance_priors() {
    let (b, d, m, sigma, sigma_y) = (3, 4, 2, 1.3, 0.1);
    let prior = GaussianDenoiser::new(randn(&[d], 60), Dplr::identity(d, Kind::Double, Device::Cpu)).unwrap();
    let (op, a, x_t, y) = problem(b, d, m, 61);
    let config = PgdmConfig { solver: SolverConfig::gmres(m as usize) };
    let pgdm = Pgdm::new(&prior, &op, &y, NoiseCov::isotropic(sigma_y).unwrap(), config).unwrap();
    let out = pgdm.try_denoise(&x_t, &Tensor::from(sigma)).unwrap();
    let exact = exact_posterior_mean(&prior, &a, &x_t, &y, sigma, sigma_y);
    assert!(rel_err(&out, &exact) < 1e-9, "error {}", rel_err(&out, &exact));
    assert_eq!((pgdm.stats().forwards, pgdm.stats().vjps), (1, 1));
    assert_eq!(PgdmConfig::default().solver, SolverConfig::gmres(5));
}

/// DiffPIR returns `argmin_x ||y − A x||²/(2σ_y²) + ||x − x̂||²/(2ρ)`, `ρ = σ²/λ`, with no VJP.
#[test]
fn diffpir_solves_its_proximal_problem() {
    let (b, d, m, sigma, sigma_y) = (3, 5, 3, 0.5, 0.05);
    let prior = gaussian_prior(d, 2, 70);
    let (op, a, x_t, y) = problem(b, d, m, 71);
    let config = DiffPirConfig { lambda: 8.0, solver: SolverConfig::gmres(d as usize) };
    let dp = DiffPir::new(&prior, &op, &y, NoiseCov::isotropic(sigma_y).unwrap(), config).unwrap();
    let out = dp.try_denoise(&x_t, &Tensor::from(sigma)).unwrap();
    let x_hat = prior.denoise(&x_t, &Tensor::from(sigma));
    let rho = sigma * sigma / 8.0;
    let at = a.transpose(1, 2);
    let h = Tensor::eye(d, F64).unsqueeze(0) + at.matmul(&a) * (rho / (sigma_y * sigma_y));
    let rhs = at.matmul(&(&y - a.matmul(&x_hat.unsqueeze(2)).squeeze_dim(2)).unsqueeze(2))
        * (rho / (sigma_y * sigma_y));
    let expected = &x_hat + Tensor::linalg_solve(&h, &rhs, true).squeeze_dim(2);
    assert!(rel_err(&out, &expected) < 1e-9, "error {}", rel_err(&out, &expected));
    assert_eq!((dp.stats().forwards, dp.stats().vjps), (1, 0));
    assert!(DiffPir::new(&prior, &op, &y, NoiseCov::isotropic(0.0).unwrap(), config).is_err());
    let bad = DiffPirConfig { lambda: 0.0, ..config };
    assert!(DiffPir::new(&prior, &op, &y, NoiseCov::isotropic(0.1).unwrap(), bad).is_err());
}

/// DPS's guidance is `−∇_{x_t} ||y − A d(x_t)||₂` per sample (unsquared, per-sample norm): checked against the
/// dense Jacobian of the Gaussian denoiser, and one sample's observation does not affect another's guidance.
#[test]
fn dps_guidance_is_the_per_sample_unsquared_norm_gradient() {
    let (b, d, m, sigma) = (3, 4, 2, 0.9);
    let prior = gaussian_prior(d, 1, 80);
    let (op, a, x_t, y) = problem(b, d, m, 81);
    let dps = Dps::new(VeSchedule::default(), TimeGrid::uniform(10).unwrap(), &op, &y, 0.5).unwrap();
    let (g, x_hat) = dps.guidance(&prior, &x_t, &Tensor::from(sigma)).unwrap();
    let j = gaussian_jacobian(&prior, sigma);
    for i in 0..b {
        let r = y.get(i) - a.get(i).mv(&x_hat.get(i));
        let norm = f64::try_from(r.norm()).unwrap();
        let expected = j.tr().mv(&a.get(i).tr().mv(&r)) / norm;
        assert!(max_abs(&g.get(i), &expected) < 1e-10, "sample {i}");
    }
    let y2 = y.copy();
    let _ = y2.get(2).fill_(7.0);
    let dps2 = Dps::new(VeSchedule::default(), TimeGrid::uniform(10).unwrap(), &op, &y2, 0.5).unwrap();
    let (g2, _) = dps2.guidance(&prior, &x_t, &Tensor::from(sigma)).unwrap();
    assert!(max_abs(&g.narrow(0, 0, 2), &g2.narrow(0, 0, 2)) < 1e-14);
    assert!(max_abs(&g.get(2), &g2.get(2)) > 1e-3);
}

/// A DPS run costs 1 forward + 1 VJP per step (plus the plain final denoise), ends detached, and moves the
/// samples towards the observation compared with the unguided DDPM run from the same noise.
#[test]
fn dps_sampling_costs_and_pulls_towards_y() {
    let (b, d, m) = (64, 2, 1);
    let prior =
        GaussianDenoiser::new(Tensor::zeros([d], F64), Dplr::identity(d, Kind::Double, Device::Cpu)).unwrap();
    let counted = CountingDenoiser::new(&prior);
    let op = Projection::new(Tensor::from_slice(&[1.0f64, 0.0]).reshape([1, 1, 2]), &[d]).unwrap();
    let y = Tensor::full([b, m], 2.0, F64);
    let grid = TimeGrid::uniform(50).unwrap();
    let dps = Dps::new(VeSchedule::default(), grid.clone(), &op, &y, 1.0).unwrap();
    let x = dps.sample(&counted, &[b, d], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(3)).unwrap();
    assert!(!x.requires_grad());
    assert_eq!(counted.calls(), 51);
    assert_eq!(counted.grad_calls(), 50);
    let s = dps.stats();
    assert_eq!((s.calls, s.forwards, s.vjps), (50, 50, 50));
    let plain = diem_sampling::Ddpm::new(VeSchedule::default(), grid);
    let x0 = plain.sample(&prior, &[b, d], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(3)).unwrap();
    let dist = |x: &Tensor| f64::try_from((x.select(1, 0) - 2.0).abs().mean(Kind::Double)).unwrap();
    assert!(dist(&x) < dist(&x0) - 0.3, "DPS {} vs DDPM {}", dist(&x), dist(&x0));
    assert!(Dps::new(VeSchedule::default(), TimeGrid::uniform(3).unwrap(), &op, &y, -1.0).is_err());
}

/// Σ_y → ∞: every posterior denoiser returns the prior denoiser (docs/method.md §12.1 item 12).
#[test]
fn huge_noise_returns_the_prior_denoiser() {
    let (b, d, m, sigma) = (2, 4, 2, 0.8);
    let prior = gaussian_prior(d, 2, 90);
    let (op, _, x_t, y) = problem(b, d, m, 91);
    let x_hat = prior.denoise(&x_t, &Tensor::from(sigma));
    let noise = || NoiseCov::isotropic(1e8).unwrap();
    let s = Tensor::from(sigma);
    let outs = [
        Tmpd::new(&prior, &op, &y, noise(), TmpdConfig::default()).unwrap().try_denoise(&x_t, &s).unwrap(),
        Pgdm::new(&prior, &op, &y, noise(), PgdmConfig::default()).unwrap().try_denoise(&x_t, &s).unwrap(),
        DiffPir::new(&prior, &op, &y, noise(), DiffPirConfig::default())
            .unwrap()
            .try_denoise(&x_t, &s)
            .unwrap(),
    ];
    for (i, out) in outs.iter().enumerate() {
        assert!(max_abs(out, &x_hat) < 1e-9, "method {i}");
    }
}
