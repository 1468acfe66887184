//! The probability-flow ODE solvers (docs/method.md §4.5): Euler, Heun and DPM-Solver++(2M) against closed
//! forms on Gaussian priors and posteriors, their convergence orders, call counts, determinism and memory.

mod common;

use std::cell::RefCell;

use common::*;
use diem_models::{Denoiser, Schedule, VeSchedule};
use diem_operators::{NoiseCov, Projection};
use diem_sampling::{
    start_from_noise, CountingDenoiser, Ddim, DpmPp2m, Euler, Heun, Measurement, Mmps, MmpsConfig,
    MultistepState, NoiseRng, PosteriorMethod, Sampler, SamplerSpec, SamplingError, Silent, SolverConfig,
    SolverSpec, StepInfo, TimeGrid,
};
use tch::{Device, Kind, Tensor};

const SIGMA_MAX: f64 = 100.0;
const SIGMA_MIN: f64 = 1e-3;

fn schedule() -> VeSchedule {
    VeSchedule::default()
}

fn ode_sampler(name: &str, steps: usize) -> Box<dyn Sampler> {
    let grid = TimeGrid::uniform(steps).unwrap();
    match name {
        "euler" => Box::new(Euler::new(schedule(), grid)),
        "heun" => Box::new(Heun::new(schedule(), grid)),
        "dpmpp2m" => Box::new(DpmPp2m::new(schedule(), grid)),
        "ddim" => Box::new(Ddim::new(schedule(), grid)),
        other => panic!("no sampler {other}"),
    }
}

/// The state after the last step (before the final denoise) and the sampler's output.
fn endpoint(sampler: &dyn Sampler, denoiser: &dyn Denoiser, x_init: &Tensor) -> (Tensor, Tensor) {
    let last = RefCell::new(None);
    let mut observer = |info: &StepInfo, x: &Tensor| {
        if info.index + 1 == info.steps {
            *last.borrow_mut() = Some(x.shallow_clone());
        }
    };
    let out = sampler.sample_from(denoiser, x_init, &mut NoiseRng::seeded(0), &mut observer).unwrap();
    (last.into_inner().unwrap(), out)
}

/// The exact probability-flow ODE flow of a Gaussian law `N(μ, Σ)` from `σ_from` to `σ_to`: with
/// `Σ = V diag(c) Vᵀ`, `x(σ) − μ = V diag(√((c + σ²)/(c + σ_from²))) Vᵀ (x(σ_from) − μ)`, since the ODE
/// `dx/dσ = (x − d)/σ = σ (Σ + σ² I)⁻¹ (x − μ)` is diagonal in Σ's eigenbasis.
fn exact_flow(mean: &Tensor, cov: &Tensor, x: &Tensor, sigma_from: f64, sigma_to: f64) -> Tensor {
    let (c, v) = cov.linalg_eigh("L");
    let scale = ((&c + sigma_to * sigma_to) / (&c + sigma_from * sigma_from)).sqrt();
    let m = v.matmul(&scale.diag(0)).matmul(&v.tr());
    mean.unsqueeze(0) + (x - mean.unsqueeze(0)).matmul(&m.tr())
}

/// What a solver without discretization error returns for `N(μ, Σ)` from `x_init` at `σ_max`: the exact flow
/// to `σ_min`, then the final denoise `μ + Σ (Σ + σ_min² I)⁻¹ (x − μ)` (docs/method.md §4.1).
fn exact_output(mean: &Tensor, cov: &Tensor, x_init: &Tensor) -> Tensor {
    let x = exact_flow(mean, cov, x_init, SIGMA_MAX, SIGMA_MIN);
    let d = cov.size()[0];
    let gain = cov.matmul(&(cov + Tensor::eye(d, F64) * (SIGMA_MIN * SIGMA_MIN)).inverse());
    mean.unsqueeze(0) + (x - mean.unsqueeze(0)).matmul(&gain.tr())
}

/// Euler is DDIM with η = 0 (docs/method.md §4.3, §4.5): same grid, same initial value, same output to
/// rounding, though the update is written differently (`x + (σ_s − σ_t) z` against `d + (σ_s/σ_t)(x − d)`).
#[test]
fn euler_equals_ddim_eta_zero() {
    let prior = gaussian_prior(5, 2, 1);
    for steps in [1, 7, 64] {
        let euler = ode_sampler("euler", steps);
        let ddim = ode_sampler("ddim", steps);
        let a = euler.sample(&prior, &[32, 5], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(2)).unwrap();
        let b = ddim.sample(&prior, &[32, 5], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(2)).unwrap();
        let err = max_abs(&a, &b) / f64::try_from(b.abs().max()).unwrap();
        assert!(err < 1e-12, "T = {steps}: relative difference {err}");
    }
}

/// The ODE endpoint error of each solver for one fixed initial noise, against the exact flow (a closed form
/// for a Gaussian prior, which a 4,096-step Heun reference matches to 10⁻⁶): Euler's error halves when T doubles
/// (order 1), Heun's and DPM-Solver++(2M)'s quarter (order 2), over T = 16…128. Measured: Euler 0.145, 0.076,
/// 0.039, 0.020 (ratios 1.91, 1.96, 1.98); Heun 0.069, 0.016, 0.0037, 0.00091 (4.4, 4.2, 4.1);
/// DPM-Solver++(2M) 0.023, 0.0068, 0.0018, 0.00045 (3.3, 3.9, 4.0).
#[test]
fn convergence_orders() {
    let prior = gaussian_prior(6, 2, 3);
    let x_init = start_from_noise(&prior, SIGMA_MAX, &randn(&[4, 6], 4)).unwrap();
    let exact = exact_flow(prior.mean(), &dense_cov(&prior), &x_init, SIGMA_MAX, SIGMA_MIN);
    let (reference, _) = endpoint(ode_sampler("heun", 4096).as_ref(), &prior, &x_init);
    let ref_err = rel_err(&reference, &exact);
    assert!(ref_err < 1e-5, "4096-step Heun vs the closed form: {ref_err}");
    let steps = [16, 32, 64, 128];
    let mut all = Vec::new();
    for name in ["euler", "heun", "dpmpp2m"] {
        let errors: Vec<f64> = steps
            .iter()
            .map(|&t| rel_err(&endpoint(ode_sampler(name, t).as_ref(), &prior, &x_init).0, &exact))
            .collect();
        let ratios: Vec<f64> = errors.windows(2).map(|w| w[0] / w[1]).collect();
        let order_one = name == "euler";
        for &r in &ratios {
            if order_one {
                assert!((1.6..=2.6).contains(&r), "{name}: errors {errors:?}, ratios {ratios:?}");
            } else {
                assert!(r > 3.0, "{name}: errors {errors:?}, ratios {ratios:?}");
            }
        }
        all.push(errors);
    }
    // At the same number of network evaluations DPM-Solver++(2M) (T calls) is far ahead of Euler (T calls),
    // and Heun with T/2 steps catches up with Euler by 32 evaluations and overtakes it beyond.
    for k in 0..steps.len() {
        assert!(all[2][k] * 5.0 < all[0][k], "DPM++ {:?} vs Euler {:?}", all[2], all[0]);
    }
    for k in 1..steps.len() {
        assert!(all[1][k - 1] < all[0][k], "Heun {:?} vs Euler {:?} at equal calls", all[1], all[0]);
    }
}

/// Each solver from whitened noise (the solvers are affine in their initial noise for a Gaussian denoiser, so
/// the sample moments carry no Monte-Carlo error) against the prior's mean and covariance. The mean is exact
/// for every solver (the flow fixes μ); the covariance errors are, measured: Euler T = 32: 16.5 %, 64: 8.6 %;
/// Heun T = 16: 16.3 %, 32: 3.5 %; DPM-Solver++(2M) T = 32: 1.5 %, 64: 0.35 %.
#[test]
fn prior_moments_at_modest_step_counts() {
    let prior = gaussian_prior(8, 3, 11);
    let z = whitened_noise(8192, 8, 5);
    let x_init = start_from_noise(&prior, SIGMA_MAX, &z).unwrap();
    let cov = dense_cov(&prior);
    let err = |name: &str, steps: usize| {
        let x = ode_sampler(name, steps)
            .sample_from(&prior, &x_init, &mut NoiseRng::seeded(0), &mut Silent)
            .unwrap();
        let (m, c) = moments(&x);
        (rel_err(&m, prior.mean()), rel_err(&c, &cov))
    };
    let cases = [
        ("euler", 32, 0.10, 0.25),
        ("euler", 512, 0.0, 0.02),
        ("heun", 32, 0.0, 0.05),
        ("dpmpp2m", 32, 0.0, 0.02),
        ("dpmpp2m", 64, 0.0, 0.005),
    ];
    for (name, steps, lo, hi) in cases {
        let (em, ec) = err(name, steps);
        assert!(em < 1e-10, "{name}, T = {steps}: mean error {em}");
        assert!(ec >= lo && ec < hi, "{name}, T = {steps}: covariance error {ec} outside [{lo}, {hi})");
    }
}

/// A linear Gaussian problem (d = 8, one 3×8 projection, σ_y = 0.1, N = 8192 draws of one posterior from
/// whitened noise) with MMPS solved to convergence, so the posterior denoiser is exact: the solvers against the
/// exact posterior and against what an exact ODE integration returns from the same noise. At equal network
/// evaluations (64 per sample) Heun with T = 32 is no worse than DDIM with T = 64: its covariance error is
/// 2.4× smaller (3.6 % against 8.6 %); DPM-Solver++(2M) with 32 evaluations beats both (1.5 %). The mean's
/// error against the exact posterior (≈ 0.55 % for every solver) is the start's: sampling starts at the prior
/// mean, not the posterior's, and the flow shrinks that offset only by ≈ √c/σ_max.
#[test]
fn mmps_guided_posterior_moments() {
    let (n, d, m, sigma_y) = (8192, 8, 3, 0.1);
    let OnePosterior { prior, op, y, mean: pm, cov: pc } = one_posterior(n, d, m, sigma_y);
    let config = MmpsConfig::new(SolverConfig::cg(d as usize).with_rtol(Some(1e-9)));
    let mmps = Mmps::new(&prior, &op, &y, NoiseCov::isotropic(sigma_y).unwrap(), config).unwrap();
    let x_init = start_from_noise(&mmps, SIGMA_MAX, &whitened_noise(n, d, 34)).unwrap();
    let (om, oc) = moments(&exact_output(&pm, &pc, &x_init));
    // Errors against the exact posterior (truth) and against the exact ODE output (the solver's own error).
    let run = |name: &str, steps: usize| {
        mmps.reset_stats();
        let x = ode_sampler(name, steps)
            .sample_from(&mmps, &x_init, &mut NoiseRng::seeded(0), &mut Silent)
            .unwrap();
        let (sm, sc) = moments(&x);
        let calls = mmps.stats().calls;
        ((rel_err(&sm, &pm), rel_err(&sc, &pc)), (rel_err(&sm, &om), rel_err(&sc, &oc)), calls)
    };
    let (ddim_truth, ddim_solver, ddim_calls) = run("ddim", 64);
    let (heun_truth, heun_solver, heun_calls) = run("heun", 32);
    let (dpm_truth, dpm_solver, dpm_calls) = run("dpmpp2m", 32);
    assert_eq!((ddim_calls, heun_calls, dpm_calls), (65, 65, 33));
    eprintln!("truth (mean, cov): DDIM(64) {ddim_truth:?}, Heun(32) {heun_truth:?}, DPM++(32) {dpm_truth:?}");
    eprintln!(
        "solver (mean, cov): DDIM(64) {ddim_solver:?}, Heun(32) {heun_solver:?}, DPM++(32) {dpm_solver:?}"
    );
    // Truth: every solver within the start's 0.6 % on the mean; covariance as measured.
    for (name, (em, ec), hi) in
        [("ddim", ddim_truth, 0.12), ("heun", heun_truth, 0.05), ("dpmpp2m", dpm_truth, 0.025)]
    {
        assert!(em < 0.01 && ec < hi, "{name}: mean error {em}, covariance error {ec}");
    }
    // Same evaluations: Heun(32) no worse than DDIM(64), on the solver's own error and against the truth.
    assert!(
        heun_solver.0 <= ddim_solver.0 && heun_solver.1 * 2.0 < ddim_solver.1,
        "{heun_solver:?} vs {ddim_solver:?}"
    );
    assert!(heun_truth.1 * 2.0 < ddim_truth.1, "{heun_truth:?} vs {ddim_truth:?}");
    assert!(dpm_truth.1 < heun_truth.1 && dpm_solver.0 <= ddim_solver.0, "{dpm_truth:?} {dpm_solver:?}");
    // The posterior is far from the prior, so matching it is not trivial.
    assert!(rel_err(&dense_cov(&prior), &pc) > 0.2);
}

/// A denoiser that records, for every call, whether its input or output required grad.
struct Spy<'a> {
    inner: &'a dyn Denoiser,
    flags: RefCell<Vec<(bool, bool)>>,
}

impl Denoiser for Spy<'_> {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let out = self.inner.denoise(x_t, sigma);
        self.flags.borrow_mut().push((x_t.requires_grad(), out.requires_grad()));
        out
    }
    fn prior_mean(&self) -> Option<&Tensor> {
        self.inner.prior_mean()
    }
}

/// A "network" with a trainable parameter: outside no_grad its output requires grad.
struct Trainable(Tensor);

impl Denoiser for Trainable {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let s = diem_models::sigma_like(sigma, x_t);
        x_t * &self.0 / (s.square() + 1.0)
    }
}

/// Calls: Euler and DPM-Solver++(2M) T + 1, Heun 2T + 1, as `denoiser_calls` says; the observer sees every
/// step; flat memory: no call runs with autograd and no state passed on requires grad, even on a trainable
/// network.
#[test]
fn calls_observer_and_no_graph() {
    let net = Trainable(Tensor::ones([1], F64).set_requires_grad(true));
    assert!(net.denoise(&Tensor::ones([2, 2], F64), &Tensor::from(1.0f64)).requires_grad());
    let prior = gaussian_prior(3, 1, 7);
    for (name, expected) in [("euler", 8), ("heun", 15), ("dpmpp2m", 8)] {
        let sampler = ode_sampler(name, 7);
        assert_eq!(sampler.name(), name);
        assert_eq!(sampler.denoiser_calls(), expected, "{name}");
        let counted = CountingDenoiser::new(&prior);
        let mut seen = Vec::new();
        let mut observer = |info: &StepInfo, x: &Tensor| {
            assert!(!x.requires_grad());
            seen.push(info.index);
        };
        let x0 =
            sampler.initial(&counted, &[5, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(3)).unwrap();
        let x = sampler.sample_from(&counted, &x0, &mut NoiseRng::seeded(4), &mut observer).unwrap();
        assert_eq!(counted.calls(), expected, "{name}");
        assert_eq!(seen, (0..7).collect::<Vec<_>>(), "{name}");
        assert!(!x.requires_grad() && x.isfinite().all().int64_value(&[]) == 1);
        let spy = Spy { inner: &net, flags: Default::default() };
        let x = sampler.sample(&spy, &[6, 2], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0)).unwrap();
        assert!(!x.requires_grad());
        let flags = spy.flags.borrow();
        assert_eq!(flags.len(), expected, "{name}");
        assert!(flags.iter().all(|&(i, o)| !i && !o), "{name}: some call ran with autograd: {flags:?}");
    }
}

/// DPM-Solver++(2M) keeps exactly one previous estimate, detached, replaced at every step: driving the loop by
/// hand with `step_with` and a `MultistepState` reproduces `sample_from` bit for bit, the state never holds
/// more than one tensor and it never requires grad even on a trainable network. Without history (`step`) it
/// is the first-order Euler step.
#[test]
fn multistep_state_holds_one_detached_estimate() {
    let net = Trainable(Tensor::ones([1], F64).set_requires_grad(true));
    let prior = gaussian_prior(4, 2, 8);
    let steps = 12;
    let solver = DpmPp2m::new(schedule(), TimeGrid::uniform(steps).unwrap());
    for denoiser in [&prior as &dyn Denoiser, &net] {
        let x_init =
            solver.initial(denoiser, &[3, 4], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(1)).unwrap();
        let counted = CountingDenoiser::new(denoiser);
        let mut state = MultistepState::new();
        assert!(state.is_empty());
        let mut x = x_init.shallow_clone();
        let mut sigmas = Vec::new();
        for (k, (t, s)) in solver.grid().pairs().enumerate() {
            // Outside no_grad on purpose: the hook itself must not keep a graph.
            x = solver.step_with(&counted, &x, t, s, &mut state).unwrap();
            assert_eq!(state.len(), 1, "step {k}");
            assert!(
                !state.previous().unwrap().requires_grad(),
                "step {k}: the stored estimate requires grad"
            );
            assert!(!x.requires_grad(), "step {k}");
            sigmas.push(state.previous_sigma().unwrap());
            assert_eq!(counted.calls(), k + 1, "one call per step, no re-evaluation");
        }
        let expected: Vec<f64> = solver.grid().pairs().map(|(t, _)| schedule().sigma_at(t)).collect();
        assert_eq!(sigmas, expected);
        let by_hand = diem_sampling::denoise_at(denoiser, &x, SIGMA_MIN).unwrap();
        let looped = solver.sample_from(denoiser, &x_init, &mut NoiseRng::seeded(0), &mut Silent).unwrap();
        assert_eq!(max_abs(&by_hand.detach(), &looped), 0.0);
        state.clear();
        assert!(state.is_empty() && state.previous().is_none());
    }
    // `step` without history is the Euler step; with history the update differs (second order at work).
    let x_t = randn(&[3, 4], 2) * 5.0;
    let euler = Euler::new(schedule(), TimeGrid::uniform(steps).unwrap());
    let (t, s) = (0.5, 0.4);
    let rng = &mut NoiseRng::seeded(0);
    let first = solver.step(&prior, &x_t, t, s, rng).unwrap();
    assert!(max_abs(&first, &euler.step(&prior, &x_t, t, s, rng).unwrap()) < 1e-12);
    let mut state = MultistepState::new();
    let _ = solver.step_with(&prior, &(&x_t * 1.3), 0.6, t, &mut state).unwrap();
    let second = solver.step_with(&prior, &x_t, t, s, &mut state).unwrap();
    assert!(max_abs(&first, &second) > 1e-6);
    // A state from another batch shape is a typed error.
    let err = solver.step_with(&prior, &randn(&[2, 4], 3), s, 0.3, &mut state).unwrap_err();
    assert!(matches!(err, SamplingError::Shape { .. }), "{err}");
}

/// Seeded and deterministic: the same seed gives the same samples bit for bit, another seed other samples,
/// and a run draws nothing from the generator but its initial noise.
#[test]
fn seeded_and_deterministic() {
    let prior = gaussian_prior(3, 1, 5);
    for name in ["euler", "heun", "dpmpp2m"] {
        let sampler = ode_sampler(name, 10);
        let mut rng = NoiseRng::seeded(9);
        let a = sampler.sample(&prior, &[6, 3], Kind::Double, Device::Cpu, &mut rng).unwrap();
        let after = rng.normal(&[4], Kind::Double, Device::Cpu);
        let b = sampler.sample(&prior, &[6, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(9)).unwrap();
        assert_eq!(max_abs(&a, &b), 0.0, "{name}");
        let c =
            sampler.sample(&prior, &[6, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(10)).unwrap();
        assert!(max_abs(&a, &c) > 1e-3, "{name}");
        // The generator advanced by the initial draw only.
        let mut only_initial = NoiseRng::seeded(9);
        let _ = only_initial.normal(&[6, 3], Kind::Double, Device::Cpu);
        assert_eq!(max_abs(&after, &only_initial.normal(&[4], Kind::Double, Device::Cpu)), 0.0, "{name}");
    }
}

/// `σ(t) = 10 t`: a schedule whose grid ends at σ = 0.
#[derive(Debug, Clone, Copy)]
struct Linear;

impl Schedule for Linear {
    fn sigma(&self, t: &Tensor) -> Tensor {
        t * 10.0
    }
    fn sigma_at(&self, t: f64) -> f64 {
        10.0 * t
    }
    fn time_of(&self, sigma: f64) -> f64 {
        sigma / 10.0
    }
    fn g2_at(&self, t: f64) -> f64 {
        200.0 * t
    }
}

/// On a grid that reaches σ = 0 (not diem's VE schedules, whose σ(0) = σ_min > 0), Heun skips the corrector on
/// the last step as EDM does (one call fewer, counted), DPM-Solver++(2M) takes the first-order step that
/// returns the denoised estimate, and every result stays finite.
#[test]
fn grids_that_reach_sigma_zero() {
    let prior = gaussian_prior(3, 1, 6);
    let grid = TimeGrid::uniform(8).unwrap();
    let heun = Heun::new(Linear, grid.clone());
    assert_eq!(heun.denoiser_calls(), 2 * 8);
    let counted = CountingDenoiser::new(&prior);
    let x = heun.sample(&counted, &[4, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0)).unwrap();
    assert_eq!(counted.calls(), 16);
    assert_eq!(x.isfinite().all().int64_value(&[]), 1);
    let x_t = randn(&[4, 3], 1);
    let rng = &mut NoiseRng::seeded(0);
    let euler = Euler::new(Linear, grid.clone());
    assert!(
        max_abs(
            &heun.step(&prior, &x_t, 0.125, 0.0, rng).unwrap(),
            &euler.step(&prior, &x_t, 0.125, 0.0, rng).unwrap()
        ) < 1e-12
    );
    // Heun's corrector does act on the other steps.
    assert!(
        max_abs(
            &heun.step(&prior, &x_t, 0.25, 0.125, rng).unwrap(),
            &euler.step(&prior, &x_t, 0.25, 0.125, rng).unwrap()
        ) > 1e-6
    );
    let dpm = DpmPp2m::new(Linear, grid);
    let mut state = MultistepState::new();
    let _ = dpm.step_with(&prior, &(&x_t * 2.0), 0.25, 0.125, &mut state).unwrap();
    let last = dpm.step_with(&prior, &x_t, 0.125, 0.0, &mut state).unwrap();
    let d = prior.denoise(&x_t, &Tensor::from(1.25f64));
    assert!(max_abs(&last, &d) < 1e-12);
    let x = dpm.sample(&prior, &[4, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0)).unwrap();
    assert_eq!(x.isfinite().all().int64_value(&[]), 1);
}

/// Every guidance wrapper runs under every ODE solver through the posterior vocabulary (the calls each
/// solver makes times the wrapper's cost per call), and DPS, a sampler of its own, refuses them with a typed
/// error naming the sampler while still running on DDIM.
#[test]
fn posterior_methods_on_ode_solvers() {
    let prior = gaussian_prior(4, 2, 12);
    let op = Projection::random_sphere(6, 2, 4, 13).unwrap();
    let y = randn(&[6, 2], 14);
    let methods = ["mmps", "mmps-cov-t", "pgdm", "tmpd", "diffpir"];
    for sampler_name in ["euler", "heun", "dpmpp2m"] {
        let spec = SamplerSpec::from_name(sampler_name, 6).unwrap();
        let sampler = spec.build(schedule()).unwrap();
        for name in methods {
            let method = PosteriorMethod::from_name(name, SolverSpec::cg(2)).unwrap();
            let measurement = Measurement::new(&op, &y, NoiseCov::isotropic(0.1).unwrap()).unwrap();
            let (x, stats) = method
                .sample(
                    &prior,
                    measurement,
                    None,
                    sampler.as_ref(),
                    (Kind::Double, Device::Cpu),
                    &mut NoiseRng::seeded(1),
                )
                .unwrap();
            assert_eq!(x.size(), vec![6, 4]);
            assert_eq!(x.isfinite().all().int64_value(&[]), 1, "{name} on {sampler_name}");
            assert!(!x.requires_grad());
            assert_eq!(stats.calls, sampler.denoiser_calls(), "{name} on {sampler_name}");
            let per_step = method.cost_per_step(&spec);
            assert_eq!(
                stats.forwards,
                6 * per_step.forwards + method.cost_per_call().forwards,
                "{name} on {sampler_name}"
            );
        }
        let dps = PosteriorMethod::from_name("dps", SolverSpec::cg(1)).unwrap();
        let measurement = Measurement::new(&op, &y, NoiseCov::isotropic(0.1).unwrap()).unwrap();
        let err = dps
            .sample(
                &prior,
                measurement,
                None,
                sampler.as_ref(),
                (Kind::Double, Device::Cpu),
                &mut NoiseRng::seeded(1),
            )
            .unwrap_err();
        assert!(matches!(err, SamplingError::Config { field: "sampler", .. }), "{err}");
        assert!(err.to_string().contains(sampler_name), "{err}");
    }
    let ddim = SamplerSpec::Ddim { steps: 6 }.build(schedule()).unwrap();
    let dps = PosteriorMethod::from_name("dps", SolverSpec::cg(1)).unwrap();
    let measurement = Measurement::new(&op, &y, NoiseCov::isotropic(0.1).unwrap()).unwrap();
    assert!(dps
        .sample(
            &prior,
            measurement,
            None,
            ddim.as_ref(),
            (Kind::Double, Device::Cpu),
            &mut NoiseRng::seeded(1)
        )
        .is_ok());
}

/// The configuration vocabulary: names, JSON forms, steps, calls per step, validation and building.
#[test]
fn sampler_specs_of_the_ode_solvers() {
    let cases = [
        ("euler", r#"{"euler":{"steps":64}}"#, SamplerSpec::Euler { steps: 64 }, 1, "Euler, T = 64"),
        ("heun", r#"{"heun":{"steps":64}}"#, SamplerSpec::Heun { steps: 64 }, 2, "Heun, T = 64"),
        (
            "dpmpp2m",
            r#"{"dpmpp2m":{"steps":64}}"#,
            SamplerSpec::Dpmpp2m { steps: 64 },
            1,
            "DPM-Solver++(2M), T = 64",
        ),
    ];
    for (name, json, spec, calls, display) in cases {
        assert!(SamplerSpec::NAMES.contains(&name));
        assert_eq!(SamplerSpec::from_name(name, 64).unwrap(), spec);
        assert_eq!(serde_json::from_str::<SamplerSpec>(json).unwrap(), spec);
        assert_eq!(serde_json::to_string(&spec).unwrap(), json);
        assert_eq!((spec.steps(), spec.calls_per_step()), (64, calls));
        assert_eq!(spec.to_string(), display);
        assert_eq!(spec.with_steps(8).steps(), 8);
        assert!(spec.validate().is_ok());
        let zero = spec.with_steps(0).validate().unwrap_err();
        assert!(matches!(zero, SamplingError::Config { field: "steps", .. }), "{zero}");
        let built = spec.build(schedule()).unwrap();
        assert_eq!((built.name(), built.calls_per_step(), built.grid().steps()), (name, calls, 64));
        // The MMPS cost of a step follows the calls per step.
        let mmps = PosteriorMethod::from_name("mmps", SolverSpec::cg(3)).unwrap();
        assert_eq!(mmps.cost_per_step(&spec).vjps, 3 * calls);
        assert!(serde_json::from_str::<SamplerSpec>(&json.replace("steps", "stepz")).is_err());
    }
    // Every name is buildable; unknown names list them all.
    for name in SamplerSpec::NAMES {
        assert_eq!(SamplerSpec::from_name(name, 4).unwrap().build(schedule()).unwrap().name(), name);
    }
    let err = SamplerSpec::from_name("rk4", 4).unwrap_err().to_string();
    assert!(SamplerSpec::NAMES.iter().all(|n| err.contains(n)), "{err}");
}
