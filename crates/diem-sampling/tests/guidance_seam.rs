//! The guidance seam (issue 13): a rule written outside the crate, as an implementation of [`Guidance`], runs
//! in the same [`Guided`] shell as MMPS, PiGDM, TMPD and DiffPIR — constructors, input checks, counters and the
//! `Denoiser` impl come with it.

mod common;

use common::*;
use diem_models::{Denoiser, VeSchedule};
use diem_operators::{NoiseCov, Observation, Projection};
use diem_sampling::guidance::{Guidance, GuidanceCall, Guided, Measurement};
use diem_sampling::{
    Ddim, DiffPir, DiffPirConfig, Mmps, MmpsConfig, NoiseRng, Pgdm, PgdmConfig, Result, Sampler,
    SamplingError, SolverConfig, TimeGrid, Tmpd, TmpdConfig,
};
use tch::{Device, Kind, Tensor};

/// No correction: the prior's own estimate `d_θ(x_t, σ)`.
#[derive(Debug)]
struct Unguided;

impl Guidance for Unguided {
    type Config = ();
    const NAME: &'static str = "Unguided";

    fn build(_: (), _: &Measurement<'_>) -> Result<Self> {
        Ok(Unguided)
    }

    fn config(&self) -> &() {
        &()
    }

    fn estimate(&self, call: &GuidanceCall<'_>, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        Ok(call.denoise(x_t, sigma))
    }
}

/// The exact Tweedie covariance, formed densely: `J_b` from `d` VJPs (row `i` is `J_bᵀ e_i`), `A_b` from `d`
/// operator applications, then per sample
/// `E[x | x_t, y] = x̂ + V Aᵀ (Σ_y + A V Aᵀ)⁻¹ (y − A x̂)` with `V = σ² J` — MMPS with the exact solve, for flat
/// `x : [N, d]` with `d ≤ max_dim` (the configuration).
#[derive(Debug)]
struct DenseTweedie {
    max_dim: i64,
}

impl Guidance for DenseTweedie {
    type Config = i64;
    const NAME: &'static str = "DenseTweedie";

    fn build(max_dim: i64, measurement: &Measurement<'_>) -> Result<Self> {
        let x_shape = measurement.operator().x_shape();
        if x_shape.len() != 1 || x_shape[0] > max_dim {
            return Err(SamplingError::config(
                "DenseTweedie.max_dim",
                format!("x of shape {x_shape:?} is too big"),
            ));
        }
        Ok(Self { max_dim })
    }

    fn config(&self) -> &i64 {
        &self.max_dim
    }

    fn estimate(&self, call: &GuidanceCall<'_>, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let (n, d) = (x_t.size()[0], x_t.size()[1]);
        let options = (x_t.kind(), x_t.device());
        let (x, x_hat) = call.forward_with_graph(x_t, sigma);
        let basis =
            |k: i64, size: i64| Tensor::eye(size, options).get(k).expand([n, size], false).contiguous();
        let rows =
            (0..d).map(|i| call.vjp(&x_hat, &x, &basis(i, d), i + 1 < d)).collect::<Result<Vec<_>>>()?;
        let sigma_sq = diem_models::sigma_like(sigma, x_t).square().reshape([-1, 1, 1]);
        let v = Tensor::stack(&rows, 1) * sigma_sq; // [N, d, d], V_b = σ_b² J_b
        let measurement = call.measurement();
        let op = measurement.operator();
        let a = Tensor::stack(&(0..d).map(|j| op.apply(&basis(j, d))).collect::<Vec<_>>(), 2); // [N, m, d]
        let m = a.size()[1];
        let cov_y =
            Tensor::stack(&(0..m).map(|k| measurement.noise().mul(&basis(k, m))).collect::<Vec<_>>(), 2);
        let x_hat = x_hat.detach();
        let r = measurement.y().to_kind(x_t.kind()) - op.apply(&x_hat);
        let vat = v.matmul(&a.transpose(1, 2));
        let k = cov_y + a.matmul(&vat);
        let solved = Tensor::linalg_solve(&k, &r.unsqueeze(2), true);
        Ok(x_hat + vat.matmul(&solved).squeeze_dim(2))
    }
}

fn problem(n: i64, d: i64, m: i64, seed: u64) -> (Projection, Tensor, Tensor, Tensor) {
    let op = Projection::random_sphere(n, m, d, seed).unwrap();
    let a = op.matrix().to_kind(Kind::Double);
    (op, a, randn(&[n, d], seed + 1), randn(&[n, m], seed + 2))
}

/// The shell adds nothing to a rule that adds nothing: the unguided wrapper is the prior, call for call and
/// through a whole sampler run, bit for bit; it counts one call and one forward per call, no VJP.
#[test]
fn the_trivial_guidance_is_the_prior() {
    let (n, d, m) = (6, 4, 2);
    let prior = gaussian_prior(d, 2, 1);
    let (op, _, x_t, y) = problem(n, d, m, 2);
    let guided = Guided::<Unguided>::new(&prior, &op, &y, NoiseCov::isotropic(0.1).unwrap(), ()).unwrap();
    let sigmas = Tensor::from_slice(&[0.01f64, 0.1, 0.5, 1.0, 5.0, 40.0]);
    for sigma in [sigmas, Tensor::from(2.0f64)] {
        let out = guided.try_denoise(&x_t, &sigma).unwrap();
        assert!(out.equal(&prior.denoise(&x_t, &sigma)));
        assert!(!out.requires_grad());
    }
    let s = guided.stats();
    assert_eq!((s.calls, s.forwards, s.vjps, s.solver_applications), (2, 2, 0, 0));
    guided.reset_stats();
    assert_eq!(guided.stats(), Default::default());
    assert!(guided.prior_mean().unwrap().equal(prior.prior_mean().unwrap()));

    let sampler = Ddim::new(VeSchedule::default(), TimeGrid::uniform(16).unwrap());
    let draw = |den: &dyn Denoiser| {
        sampler.sample(den, &[n, d], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(7))
    };
    assert!(draw(&guided).unwrap().equal(&draw(&prior).unwrap()));
    assert_eq!(guided.stats().calls, 17);
}

/// The shell's constructors, input check, panic and `Debug` carry the rule's name; `from_observation` builds
/// the same wrapper as `new`.
#[test]
fn the_shell_checks_inputs_and_names_the_rule() {
    let (n, d, m) = (3, 4, 2);
    let prior = gaussian_prior(d, 1, 3);
    let (op, _, x_t, y) = problem(n, d, m, 4);
    let guided = Guided::<Unguided>::new(&prior, &op, &y, NoiseCov::isotropic(0.1).unwrap(), ()).unwrap();
    let err = guided.try_denoise(&randn(&[n + 1, d], 5), &Tensor::from(1.0f64)).unwrap_err();
    assert!(matches!(err, SamplingError::Shape { op: "Unguided", what: "x_t", .. }), "{err}");
    assert_eq!(guided.stats().calls, 0, "a rejected input is not a call");
    assert!(format!("{guided:?}").starts_with("Unguided {"), "{guided:?}");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        guided.denoise(&randn(&[n, d + 1], 6), &Tensor::from(1.0f64))
    }));
    let message = panic.unwrap_err().downcast::<String>().unwrap();
    assert!(message.starts_with("Unguided: "), "{message}");

    let obs =
        Observation::new(y.shallow_clone(), Box::new(op.clone()), NoiseCov::isotropic(0.1).unwrap()).unwrap();
    let from_obs = Guided::<DenseTweedie>::from_observation(&prior, &obs, 8).unwrap();
    let from_new =
        Guided::<DenseTweedie>::new(&prior, &op, &y, NoiseCov::isotropic(0.1).unwrap(), 8).unwrap();
    let sigma = Tensor::from(0.8f64);
    assert!(from_obs.try_denoise(&x_t, &sigma).unwrap().equal(&from_new.try_denoise(&x_t, &sigma).unwrap()));
    assert_eq!(*from_obs.config(), 8);
    // The rule's own validation is the constructor's.
    let err = Guided::<DenseTweedie>::new(&prior, &op, &y, NoiseCov::isotropic(0.1).unwrap(), 3).unwrap_err();
    assert!(matches!(err, SamplingError::Config { field: "DenseTweedie.max_dim", .. }), "{err}");
}

/// A user's rule with the exact covariance gives the exact posterior mean of a Gaussian prior, per sample and
/// per noise level, agrees with MMPS run to convergence, counts its `d` VJPs, and samples under a `Sampler`
/// (which runs without autograd) with detached states.
#[test]
fn a_user_guidance_with_the_exact_covariance_is_the_exact_posterior_mean() {
    let (n, d, m, sigma_y) = (5, 4, 3, 0.2);
    let prior = gaussian_prior(d, 2, 10);
    let (op, a, x_t, y) = problem(n, d, m, 11);
    let noise = || NoiseCov::isotropic(sigma_y).unwrap();
    let dense = Guided::<DenseTweedie>::new(&prior, &op, &y, noise(), 16).unwrap();
    let sigmas = [0.05, 0.3, 1.0, 3.0, 20.0];
    let out = dense.try_denoise(&x_t, &Tensor::from_slice(&sigmas)).unwrap();
    let exact = exact_posterior_mean_per_sample(&prior, &a, &x_t, &y, &sigmas, sigma_y);
    assert!(rel_err(&out, &exact) < 1e-10, "error {}", rel_err(&out, &exact));
    let s = dense.stats();
    assert_eq!((s.calls, s.forwards, s.vjps), (1, 1, d as usize));

    let converged = MmpsConfig::new(SolverConfig::cg(m as usize)).unguarded();
    let mmps = Mmps::new(&prior, &op, &y, noise(), converged).unwrap();
    let mmps_out = mmps.try_denoise(&x_t, &Tensor::from_slice(&sigmas)).unwrap();
    assert!(rel_err(&mmps_out, &out) < 1e-8, "MMPS vs dense {}", rel_err(&mmps_out, &out));

    let sampler = Ddim::new(VeSchedule::default(), TimeGrid::uniform(8).unwrap());
    let x = sampler.sample(&dense, &[n, d], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0)).unwrap();
    assert!(!x.requires_grad() && x.isfinite().all().int64_value(&[]) == 1);
    assert_eq!(dense.stats().vjps, (1 + 9) * d as usize);
}

/// The project's rules are `Guided` instances: every alias has the shell's accessors and names itself in its
/// errors (PiGDM used to report MMPS's name).
#[test]
fn the_project_rules_share_the_shell() {
    let (n, d, m) = (2, 3, 2);
    let prior = gaussian_prior(d, 1, 20);
    let (op, _, _, y) = problem(n, d, m, 21);
    let noise = || NoiseCov::isotropic(0.1).unwrap();
    let bad = randn(&[n, d + 1], 22);
    let sigma = Tensor::from(1.0f64);
    let config = PgdmConfig { solver: SolverConfig::cg(2) };
    let pgdm = Pgdm::new(&prior, &op, &y, noise(), config).unwrap();
    assert_eq!(pgdm.config(), &config);
    assert!(pgdm.try_denoise(&bad, &sigma).unwrap_err().to_string().starts_with("Pgdm: "));
    let config = TmpdConfig { solver: SolverConfig::gmres(3) };
    let tmpd = Tmpd::new(&prior, &op, &y, noise(), config).unwrap();
    assert_eq!(tmpd.config(), &config);
    assert!(tmpd.try_denoise(&bad, &sigma).unwrap_err().to_string().starts_with("Tmpd: "));
    let config = DiffPirConfig { lambda: 3.0, ..DiffPirConfig::default() };
    let diffpir = DiffPir::new(&prior, &op, &y, noise(), config).unwrap();
    assert_eq!(diffpir.config(), &config);
    assert_eq!(diffpir.measurement().len(), n);
    assert!(diffpir.try_denoise(&bad, &sigma).unwrap_err().to_string().starts_with("DiffPir: "));
    let mmps = Mmps::new(&prior, &op, &y, noise(), MmpsConfig::cg(2)).unwrap();
    assert_eq!(mmps.config().solver, SolverConfig::cg(2));
    assert!(mmps.try_denoise(&bad, &sigma).unwrap_err().to_string().starts_with("Mmps: "));
}
