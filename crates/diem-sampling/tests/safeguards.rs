//! MMPS's solver safeguards on denoisers whose Jacobian is indefinite (issues 14 and 17): the curvature
//! fallback, the observation-space damping, their counters, and coupled (global) solves.

mod common;

use common::*;
use diem_models::{Denoiser, VeSchedule};
use diem_operators::{LinearOperator, NoiseCov, Projection};
use diem_sampling::{
    GuidanceStats, Mmps, MmpsConfig, NoiseRng, PredictorCorrector, Sampler, SolverConfig, TimeGrid,
};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

/// `d(x, σ) = x − 2 s (x·u) u + c s tanh(x W)` with `s = σ²/(1 + σ²)`: the identity at small σ (as a
/// denoiser must be), a partial reflection along the unit vector `u` whose Jacobian eigenvalue `1 − 2s` there
/// is negative for σ > 1 (so `σ² A J Aᵀ` is indefinite whenever `A u ≠ 0`), and for `c ≠ 0` a non-symmetric
/// smooth part.
struct Reflection {
    u: Tensor,
    w: Tensor,
    c: f64,
}

impl Reflection {
    fn new(d: i64, c: f64, seed: u64) -> Self {
        let u = randn(&[d], seed);
        let u = &u / u.norm();
        Self { u, w: randn(&[d, d], seed + 1) / (d as f64).sqrt(), c }
    }
}

impl Denoiser for Reflection {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let s2 = sigma.to_kind(x_t.kind()).square().reshape([-1, 1]);
        let s = &s2 / (&s2 + 1.0);
        let u = self.u.to_kind(x_t.kind());
        let along = x_t.matmul(&u.unsqueeze(1));
        let smooth = x_t.matmul(&self.w.to_kind(x_t.kind())).tanh() * self.c;
        x_t - along.matmul(&u.unsqueeze(0)) * (&s * 2.0) + smooth * &s
    }
}

/// `||y − A x||_2 / (σ_y √m)` per row.
fn residual_ratio(op: &dyn LinearOperator, y: &Tensor, x: &Tensor, sigma_y: f64) -> Vec<f64> {
    let m = y.size()[1] as f64;
    let r = (y - op.apply(x)).square().sum_dim_intlist(1, false, Kind::Double).sqrt() / (sigma_y * m.sqrt());
    Vec::<f64>::try_from(r).unwrap()
}

/// Posterior sampling with a prior whose Jacobian is indefinite for σ > 1: with plain CG (MMPS as written),
/// steps along negative curvature are rejected (that sample gets no guidance from the call) and steps along
/// near-zero curvature are arbitrarily long, and samples end away from their observations; with the curvature
/// fallback every sample fits its observation to the noise level (and with the damping too, the default).
#[test]
fn the_fallback_keeps_samples_consistent_where_rejection_does_not() {
    let (n, d, m, sigma_y) = (64, 4, 2, 1e-2);
    let prior = Reflection::new(d, 0.5, 1);
    let op = Projection::random_sphere(n, m, d, 2).unwrap();
    let x_true = randn(&[n, d], 3);
    let y = op.apply(&x_true) + randn(&[n, m], 4) * sigma_y;
    let noise = NoiseCov::isotropic(sigma_y).unwrap();
    let pc = PredictorCorrector::reference(VeSchedule::manifold(), TimeGrid::uniform(32).unwrap());
    let run = |config: MmpsConfig| {
        let mmps = Mmps::new(&prior, &op, &y, noise.clone(), config).unwrap();
        let x = pc.sample(&mmps, &[n, d], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(5)).unwrap();
        (residual_ratio(&op, &y, &x, sigma_y), x, mmps.stats())
    };
    let (plain, _, plain_stats) = run(MmpsConfig::cg(3).unguarded());
    let inconsistent = plain.iter().filter(|r| r.is_nan() || **r > 5.0).count();
    assert!(inconsistent >= 3, "plain CG: only {inconsistent} of {n} inconsistent rows");
    assert_eq!((plain_stats.fallbacks, plain_stats.damped), (0, 0));

    for config in [MmpsConfig::cg(3).with_damping(None), MmpsConfig::cg(3)] {
        let name = format!("{config:?}");
        let (ratios, x, stats) = run(config);
        let worst = ratios.iter().cloned().fold(0.0, f64::max);
        assert!(worst <= 5.0, "{name}: worst residual ratio {worst}");
        assert!(bool::try_from(x.isfinite().all()).unwrap());
        assert!(stats.fallbacks > 0, "{name}: the fallback must have been used: {stats:?}");
    }
}

/// One call at σ = 3, where the prior's Jacobian is indefinite along `u`, with CG(1): a row whose first
/// direction `r` has negative curvature gets no guidance at all from plain CG (its output is the prior's
/// estimate); the fallback takes the `cov_t` step along `r` instead, which reduces its misfit.
#[test]
fn a_rejected_direction_still_guides_under_the_fallback() {
    let (n, d, m, sigma_y, sigma) = (32, 4, 2, 1e-2, 3.0);
    let prior = Reflection::new(d, 0.0, 31);
    let op = Projection::random_sphere(n, m, d, 32).unwrap();
    let x_t = randn(&[n, d], 33) * 2.0;
    let y = randn(&[n, m], 34);
    let noise = NoiseCov::isotropic(sigma_y).unwrap();
    let sigma_t = Tensor::from(sigma);
    let x_hat = prior.denoise(&x_t, &sigma_t);
    let before = residual_ratio(&op, &y, &x_hat, sigma_y);
    let out = |config: MmpsConfig| {
        let mmps = Mmps::new(&prior, &op, &y, noise.clone(), config).unwrap();
        residual_ratio(&op, &y, &mmps.try_denoise(&x_t, &sigma_t).unwrap(), sigma_y)
    };
    let plain = out(MmpsConfig::cg(1).unguarded());
    let guarded = out(MmpsConfig::cg(1).with_damping(None));
    // Rows where CG's first curvature <r, K r> is negative: plain CG leaves them exactly as they were.
    let rejected: Vec<usize> =
        (0..n as usize).filter(|&i| (plain[i] - before[i]).abs() <= 1e-12 * before[i]).collect();
    assert!(rejected.len() >= 4, "only {} rows had negative curvature", rejected.len());
    for &i in &rejected {
        assert!(
            guarded[i] < 0.9 * before[i],
            "row {i}: misfit {} → {} under the fallback",
            before[i],
            guarded[i]
        );
    }
    let total = |v: &[f64]| rejected.iter().map(|&i| v[i]).sum::<f64>();
    assert!(total(&guarded) < 0.5 * total(&before), "{} → {}", total(&before), total(&guarded));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// With a denoiser whose Jacobian is indefinite (and non-symmetric), MMPS's output is finite and its misfit
    /// bounded by γ times the prior's, whatever the solver and iteration count:
    /// `||y − A out||_{Σ_y⁻¹} ≤ γ ||y − A x̂||_{Σ_y⁻¹}` (γ = 1 and the default 3).
    #[test]
    fn mmps_output_is_finite_and_its_residual_bounded(
        seed in 0u64..100_000,
        d in 2i64..7,
        m in 1i64..4,
        log_sigma in -2.0f64..1.0,
        log_sigma_y in -3.0f64..0.0,
        c in 0.0f64..0.8,
        iterations in 1usize..5,
        method in 0usize..3,
        strict in any::<bool>(),
    ) {
        let m = m.min(d);
        let (n, sigma, sigma_y) = (6, 10f64.powf(log_sigma), 10f64.powf(log_sigma_y));
        let prior = Reflection::new(d, c, seed);
        let op = Projection::random_sphere(n, m, d, seed + 2).unwrap();
        let x_t = randn(&[n, d], seed + 3) * (1.0 + sigma);
        let y = randn(&[n, m], seed + 4) * 2.0;
        let solver = [SolverConfig::cg(iterations), SolverConfig::gmres(iterations), SolverConfig::bicgstab(iterations)][method];
        let gamma = if strict { 1.0 } else { MmpsConfig::MISFIT_GROWTH };
        let config = MmpsConfig::new(solver).with_damping(Some(gamma));
        let mmps = Mmps::new(&prior, &op, &y, NoiseCov::isotropic(sigma_y).unwrap(), config).unwrap();
        let sigma_t = Tensor::from(sigma);
        let out = mmps.try_denoise(&x_t, &sigma_t).unwrap();
        prop_assert!(bool::try_from(out.isfinite().all()).unwrap());
        let before = residual_ratio(&op, &y, &prior.denoise(&x_t, &sigma_t), sigma_y);
        let after = residual_ratio(&op, &y, &out, sigma_y);
        for (b, a) in before.iter().zip(&after) {
            prop_assert!(*a <= gamma * b * (1.0 + 1e-9) + 1e-9, "residual ratio {b} → {a} (γ = {gamma})");
        }
    }
}

/// The counters: fallbacks and damped samples are counted (lazily, on the device), summed by `+=` with every
/// other field, and cleared by `reset_stats`.
#[test]
fn safeguard_events_are_counted_and_summed() {
    let (n, d, m) = (16, 4, 2);
    let prior = Reflection::new(d, 0.3, 11);
    let op = Projection::random_sphere(n, m, d, 12).unwrap();
    let y = randn(&[n, m], 13);
    let x_t = randn(&[n, d], 14);
    let mmps = Mmps::new(&prior, &op, &y, NoiseCov::isotropic(1e-2).unwrap(), MmpsConfig::cg(3)).unwrap();
    for sigma in [0.5, 1.0, 2.0] {
        let _ = mmps.try_denoise(&x_t, &Tensor::from(sigma)).unwrap();
    }
    let s = mmps.stats();
    assert!(s.fallbacks > 0 && s.fallbacks <= 3 * n as usize, "{s:?}");
    assert!(s.damped <= 3 * n as usize, "{s:?}");
    assert_eq!(mmps.stats(), s, "reading the counters twice must not count twice");
    mmps.reset_stats();
    assert_eq!(mmps.stats(), GuidanceStats::default());
    // += adds every field (the E-step sums chunks with it).
    let one = GuidanceStats::from_array([1, 2, 3, 4, 5, 6]);
    let mut total = one;
    total += one;
    assert_eq!(total.to_array(), [2, 4, 6, 8, 10, 12]);
    assert_eq!(GuidanceStats::FIELDS.len(), one.to_array().len());
}

/// Coupled solves (one system over the whole batch, shared step sizes and stopping test, as the authors' JAX
/// code): with a budget of B·m CG iterations the joint system is solved, so MMPS is exact on a Gaussian prior;
/// truncated, the coupled and per-sample solves differ.
#[test]
fn coupled_solves_share_one_system() {
    let (b, d, m, sigma, sigma_y) = (3, 5, 2, 0.7, 0.2);
    let prior = gaussian_prior(d, 2, 21);
    let op = Projection::random_sphere(b, m, d, 22).unwrap();
    let x_t = randn(&[b, d], 23);
    let y = randn(&[b, m], 24);
    let exact = exact_posterior_mean(&prior, &op.matrix().to_kind(Kind::Double), &x_t, &y, sigma, sigma_y);
    let noise = || NoiseCov::isotropic(sigma_y).unwrap();
    let sigma_t = Tensor::from(sigma);
    let solve = |solver: SolverConfig| {
        let mmps = Mmps::new(&prior, &op, &y, noise(), MmpsConfig::new(solver)).unwrap();
        mmps.try_denoise(&x_t, &sigma_t).unwrap()
    };
    let coupled = solve(SolverConfig::cg((b * m) as usize).coupled(true));
    assert!(rel_err(&coupled, &exact) < 1e-8, "coupled CG(B·m): {}", rel_err(&coupled, &exact));
    let one_coupled = solve(SolverConfig::cg(1).coupled(true));
    let one_each = solve(SolverConfig::cg(1));
    assert!(max_abs(&one_coupled, &one_each) > 1e-6, "one shared step size differs from per-sample ones");
    assert!(SolverConfig::cg(1).coupled(true).coupled(false) == SolverConfig::cg(1));
}

#[test]
fn invalid_damping_bounds_are_errors() {
    let prior = gaussian_prior(3, 1, 0);
    let op = Projection::random_sphere(2, 2, 3, 0).unwrap();
    let y = randn(&[2, 2], 0);
    for gamma in [0.5, f64::NAN, f64::INFINITY] {
        let config = MmpsConfig::cg(1).with_damping(Some(gamma));
        assert!(
            Mmps::new(&prior, &op, &y, NoiseCov::isotropic(0.1).unwrap(), config).is_err(),
            "γ = {gamma}"
        );
    }
}

/// The `zeros` heuristic (`V = 0`) at small noise: its step `σ² Jᵀ Aᵀ Σ_y⁻¹ r` overshoots the observation by
/// about `||A Σ_x Aᵀ|| / σ_y²` (here ~1e4), so as the paper's ablation writes it, samples of an exact Gaussian
/// prior diverge to non-finite values; with the safeguards on (the default) its step is scaled to the best
/// fit along its direction, and every sample is finite and near its observation.
#[test]
fn the_zeros_heuristic_stays_finite_at_small_noise() {
    let (n, d, m, sigma_y) = (32, 6, 3, 1e-2);
    let prior = gaussian_prior(d, 2, 11);
    let op = Projection::random_sphere(n, m, d, 12).unwrap();
    let x_true = randn(&[n, d], 13);
    let y = op.apply(&x_true) + randn(&[n, m], 14) * sigma_y;
    let noise = NoiseCov::isotropic(sigma_y).unwrap();
    let ddim = diem_sampling::Ddim::new(VeSchedule::manifold(), TimeGrid::uniform(64).unwrap());
    let run = |config: MmpsConfig| {
        let mmps = Mmps::new(&prior, &op, &y, noise.clone(), config).unwrap();
        let x = ddim.sample(&mmps, &[n, d], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(15)).unwrap();
        (x, mmps.stats())
    };
    let zeros = || MmpsConfig::cg(1).with_heuristic(diem_sampling::CovHeuristic::Zeros);
    let (plain, _) = run(zeros().unguarded());
    let broken = plain.isfinite().logical_not().any().int64_value(&[]) != 0
        || plain.abs().max().double_value(&[]) > 1e6;
    assert!(broken, "unguarded zeros was expected to diverge at σ_y = {sigma_y}");
    let (x, stats) = run(zeros());
    assert!(bool::try_from(x.isfinite().all()).unwrap());
    let mut ratios = residual_ratio(&op, &y, &x, sigma_y);
    ratios.sort_by(f64::total_cmp);
    // A crude heuristic, not the posterior: it fits the observations loosely, but it fits them.
    let (median, worst) = (ratios[ratios.len() / 2], ratios[ratios.len() - 1]);
    assert!(median <= 2.5 && worst <= 20.0, "guarded zeros: residual ratios {ratios:?}");
    assert!(stats.damped > 0, "the step length must have been fitted: {stats:?}");
}
