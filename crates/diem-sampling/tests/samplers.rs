//! Samplers on an exact Gaussian denoiser (docs/method.md §4, §12.1 item 7, §12.2).

mod common;

use common::*;
use diem_models::{Denoiser, VeSchedule};
use diem_sampling::{
    CountingDenoiser, Ddim, Ddpm, NoiseRng, PredictorCorrector, Sampler, StepInfo, TimeGrid,
};
use tch::{Device, Kind, Tensor};

/// DDIM from whitened noise (no Monte-Carlo error) reproduces the prior's mean and covariance within 2 %.
/// With T = 512 the discretization error of the VE Euler step is ≈ 1.1 % (≈ 2.2 % at T = 256).
#[test]
fn ddim_reproduces_gaussian_prior_moments() {
    let prior = gaussian_prior(8, 3, 11);
    let ddim = Ddim::new(VeSchedule::default(), TimeGrid::uniform(512).unwrap());
    let z = whitened_noise(8192, 8, 5);
    let x_init = diem_sampling::start_from_noise(&prior, 100.0, &z).unwrap();
    let x = ddim.sample_from(&prior, &x_init, &mut NoiseRng::seeded(0), &mut diem_sampling::Silent).unwrap();
    let (m, c) = moments(&x);
    let (em, ec) = (rel_err(&m, prior.mean()), rel_err(&c, &dense_cov(&prior)));
    assert!(em < 0.02 && ec < 0.02, "mean error {em}, covariance error {ec}");
    // And not by luck: with only 32 steps the Euler bias is visible (> 10 % on the covariance).
    let coarse = Ddim::new(VeSchedule::default(), TimeGrid::uniform(32).unwrap());
    let x =
        coarse.sample_from(&prior, &x_init, &mut NoiseRng::seeded(0), &mut diem_sampling::Silent).unwrap();
    let ec32 = rel_err(&moments(&x).1, &dense_cov(&prior));
    assert!(ec32 > 0.1, "32-step DDIM covariance error {ec32}");
}

/// DDPM and PC reproduce the prior in distribution (Monte-Carlo tolerance: N = 8192 in d = 4 gives a relative
/// covariance error of ≈ 2 % and a standardized mean error of ≈ 1 %; DDPM's bias at T = 512 is ≈ 2 %, PC's at T = 128 < 1 %).
#[test]
fn ddpm_and_pc_reproduce_gaussian_prior_in_distribution() {
    let prior = gaussian_prior(4, 2, 3);
    let schedule = VeSchedule::default();
    let ddpm = Ddpm::new(schedule, TimeGrid::uniform(512).unwrap());
    let x = ddpm.sample(&prior, &[8192, 4], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(1)).unwrap();
    let (m, c) = moments(&x);
    let cov = dense_cov(&prior);
    let (em, ec) = (standardized_mean_err(&m, prior.mean(), &cov), rel_err(&c, &cov));
    assert!(em < 0.04 && ec < 0.07, "DDPM: mean error {em}, covariance error {ec}");
    let pc = PredictorCorrector::reference(schedule, TimeGrid::uniform(128).unwrap());
    let x = pc.sample(&prior, &[8192, 4], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(2)).unwrap();
    let (m, c) = moments(&x);
    let (em, ec) = (standardized_mean_err(&m, prior.mean(), &cov), rel_err(&c, &cov));
    assert!(em < 0.04 && ec < 0.07, "PC: mean error {em}, covariance error {ec}");
}

/// T + 1 calls for DDPM/DDIM, T (1 + C) + 1 for PC; the observer sees every step; the initial value is
/// `μ_x + σ(1) z`; runs are reproducible from the seed.
#[test]
fn call_counts_observer_start_and_seeding() {
    let prior = gaussian_prior(3, 1, 7);
    let counted = CountingDenoiser::new(&prior);
    let s = VeSchedule::default();
    let samplers: Vec<(Box<dyn Sampler>, usize)> = vec![
        (Box::new(Ddpm::new(s, TimeGrid::uniform(7).unwrap())), 8),
        (Box::new(Ddim::new(s, TimeGrid::uniform(7).unwrap())), 8),
        (Box::new(PredictorCorrector::new(s, TimeGrid::uniform(7).unwrap(), 2, 0.1).unwrap()), 7 * 3 + 1),
    ];
    for (sampler, expected) in &samplers {
        counted.reset();
        let mut seen = Vec::new();
        let mut observer = |info: &StepInfo, x: &Tensor| {
            assert!(!x.requires_grad());
            seen.push((info.index, info.steps, info.t, info.s));
        };
        let x0 =
            sampler.initial(&counted, &[5, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(3)).unwrap();
        let _ = sampler.sample_from(&counted, &x0, &mut NoiseRng::seeded(4), &mut observer).unwrap();
        assert_eq!(counted.calls(), *expected, "{}", sampler.name());
        assert_eq!(sampler.denoiser_calls(), *expected, "{}", sampler.name());
        assert_eq!(seen.len(), 7);
        assert_eq!(seen[0].2, 1.0);
        assert_eq!(seen[6].3, 0.0);
        assert!(seen.iter().enumerate().all(|(k, e)| e.0 == k && e.1 == 7));
    }
    // Starting mean: x_1 = μ + σ(1) z with the same z.
    let ddim = &samplers[1].0;
    let x0 = ddim.initial(&prior, &[5, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(9)).unwrap();
    let z = NoiseRng::seeded(9).normal(&[5, 3], Kind::Double, Device::Cpu);
    assert!(max_abs(&x0, &(z * 100.0 + prior.mean().unsqueeze(0))) < 1e-12);
    // Reproducible.
    let a =
        samplers[0].0.sample(&prior, &[5, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(5)).unwrap();
    let b =
        samplers[0].0.sample(&prior, &[5, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(5)).unwrap();
    assert_eq!(max_abs(&a, &b), 0.0);
}

/// The final denoise happens at σ(0) = σ_min: with a one-step grid, DDIM returns d(d(x_1, σ_max)·…, σ_min)
/// exactly as computed by hand.
#[test]
fn one_step_ddim_matches_hand_computation() {
    let prior = gaussian_prior(3, 1, 2);
    let s = VeSchedule::default();
    let ddim = Ddim::new(s, TimeGrid::uniform(1).unwrap());
    let x1 = randn(&[4, 3], 8) * 100.0;
    let out = ddim.sample_from(&prior, &x1, &mut NoiseRng::seeded(0), &mut diem_sampling::Silent).unwrap();
    let d1 = prior.denoise(&x1, &Tensor::from(100.0f64));
    let x0 = &d1 + (&x1 - &d1) * (1e-3 / 100.0);
    let expected = prior.denoise(&x0, &Tensor::from(1e-3f64));
    assert!(max_abs(&out, &expected) < 1e-9);
}

/// A denoiser that records, for every call, whether its input or output required grad.
struct Spy<'a, D: Denoiser> {
    inner: &'a D,
    flags: std::cell::RefCell<Vec<(bool, bool)>>,
}

impl<D: Denoiser> Denoiser for Spy<'_, D> {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let out = self.inner.denoise(x_t, sigma);
        self.flags.borrow_mut().push((x_t.requires_grad(), out.requires_grad()));
        out
    }
    fn prior_mean(&self) -> Option<&Tensor> {
        self.inner.prior_mean()
    }
}

/// Flat memory, structurally: even when the denoiser's output carries a graph (a trainable network would),
/// the sampler runs it under no_grad, no state it passes on requires grad, and the output is detached.
#[test]
fn sampler_state_never_requires_grad() {
    // A "network" with a trainable parameter: outside no_grad its output would require grad.
    struct Scaled(Tensor);
    impl Denoiser for Scaled {
        fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
            let s = diem_models::sigma_like(sigma, x_t);
            x_t * &self.0 / (s.square() + 1.0)
        }
    }
    let net = Scaled(Tensor::ones([1], (Kind::Double, Device::Cpu)).set_requires_grad(true));
    assert!(net.denoise(&Tensor::ones([2, 2], F64), &Tensor::from(1.0f64)).requires_grad());
    let spy = Spy { inner: &net, flags: Default::default() };
    let ddpm = Ddpm::new(VeSchedule::default(), TimeGrid::uniform(50).unwrap());
    let x = ddpm.sample(&spy, &[6, 2], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0)).unwrap();
    assert!(!x.requires_grad());
    let flags = spy.flags.borrow();
    assert_eq!(flags.len(), 51);
    assert!(flags.iter().all(|&(i, o)| !i && !o), "some call ran with autograd: {flags:?}");
}

#[test]
fn bad_configurations_are_rejected() {
    let s = VeSchedule::default();
    assert!(PredictorCorrector::new(s, TimeGrid::uniform(3).unwrap(), 1, 0.0).is_err());
    assert!(PredictorCorrector::new(s, TimeGrid::uniform(3).unwrap(), 1, 1.5).is_err());
    assert!(Ddim::new(s, TimeGrid::uniform(3).unwrap()).with_eta(-1.0).is_err());
    // A prior mean that does not fit the requested shape.
    let prior = gaussian_prior(3, 1, 0);
    let ddim = Ddim::new(s, TimeGrid::uniform(3).unwrap());
    let err = ddim.sample(&prior, &[2, 4], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0)).unwrap_err();
    assert!(err.to_string().contains("prior mean"), "{err}");
}

/// DDIM with η = 1 is DDPM (docs/method.md §4.3): same noise, same result.
#[test]
fn ddim_eta_one_is_ddpm() {
    let prior = gaussian_prior(3, 1, 4);
    let s = VeSchedule::default();
    let ddpm = Ddpm::new(s, TimeGrid::uniform(20).unwrap());
    let ddim = Ddim::new(s, TimeGrid::uniform(20).unwrap()).with_eta(1.0).unwrap();
    let a = ddpm.sample(&prior, &[4, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(6)).unwrap();
    let b = ddim.sample(&prior, &[4, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(6)).unwrap();
    assert!(max_abs(&a, &b) < 1e-9);
}
