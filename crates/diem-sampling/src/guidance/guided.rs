//! The shell shared by every guided denoiser: a prior, a measurement, cost counters and a [`Guidance`] rule.
//!
//! [`Guided`] owns what all posterior denoisers of docs/method.md §5 have in common: the borrowed prior
//! denoiser, the [`Measurement`] `y = A x + ε`, the [`GuidanceStats`] counters, the constructors
//! (`new` / `from_observation` / `from_measurement`), the input check and the [`Denoiser`] impl. A [`Guidance`]
//! is what differs: how one call turns `(x_t, σ_t)` into an estimate of `E[x | x_t, y]`. The project's rules
//! are [`MmpsGuidance`](super::MmpsGuidance), [`PgdmGuidance`](super::PgdmGuidance),
//! [`TmpdGuidance`](super::TmpdGuidance) and [`DiffPirGuidance`](super::DiffPirGuidance), with the public names
//! [`Mmps`](super::Mmps), [`Pgdm`](super::Pgdm), [`Tmpd`](super::Tmpd) and [`DiffPir`](super::DiffPir) as
//! aliases of `Guided<'a, _>`; a new covariance approximation is one more implementation of the trait.

use diem_models::Denoiser;
use diem_operators::{LinearOperator, NoiseCov, Observation};
use tch::Tensor;

use super::measurement::Measurement;
use super::{GuidanceStats, StatsCell};
use crate::error::Result;

/// One rule for the posterior mean `E[x | x_t, y]` on top of a prior denoiser (docs/method.md §5), run by
/// [`Guided`].
///
/// An implementation validates its settings once ([`Guidance::build`]) and then answers calls
/// ([`Guidance::estimate`]) through a [`GuidanceCall`], which hands it the prior, the measurement and counted
/// forward passes and VJPs. The shell has already checked `x_t` against the measurement and counted the call;
/// it detaches the result.
///
/// ```
/// use diem_linalg::Dplr;
/// use diem_models::{Denoiser, GaussianDenoiser};
/// use diem_operators::{Identity, NoiseCov};
/// use diem_sampling::guidance::{Guidance, GuidanceCall, Guided, Measurement};
/// use diem_sampling::Result;
/// use tch::{Kind, Tensor};
///
/// /// No correction at all: the prior's own estimate.
/// #[derive(Debug)]
/// struct Unguided;
///
/// impl Guidance for Unguided {
///     type Config = ();
///     const NAME: &'static str = "Unguided";
///     fn build(_: (), _: &Measurement<'_>) -> Result<Self> {
///         Ok(Unguided)
///     }
///     fn config(&self) -> &() {
///         &()
///     }
///     fn estimate(&self, call: &GuidanceCall<'_>, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
///         Ok(call.denoise(x_t, sigma))
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let prior = GaussianDenoiser::new(Tensor::zeros([2], (Kind::Double, tch::Device::Cpu)),
///                                   Dplr::identity(2, Kind::Double, tch::Device::Cpu))?;
/// let op = Identity::new(&[2])?;
/// let y = Tensor::from_slice(&[2.0f64, -4.0]).reshape([1, 2]);
/// let guided = Guided::<Unguided>::new(&prior, &op, &y, NoiseCov::isotropic(1.0)?, ())?;
/// let x_t = Tensor::from_slice(&[1.0f64, -2.0]).reshape([1, 2]);
/// let sigma = Tensor::from(0.5f64);
/// assert!(guided.try_denoise(&x_t, &sigma)?.equal(&prior.denoise(&x_t, &sigma)));
/// assert_eq!((guided.stats().calls, guided.stats().forwards), (1, 1));
/// # Ok(())
/// # }
/// ```
pub trait Guidance: Sized {
    /// The settings the rule is built from (e.g. [`MmpsConfig`](super::MmpsConfig)).
    type Config;

    /// The wrapper's name, used by its shape errors and panics (e.g. `"Mmps"`).
    const NAME: &'static str;

    /// Checks `config` against `measurement` and prepares the rule.
    ///
    /// # Errors
    /// [`SamplingError::Config`](crate::SamplingError::Config) (or another variant) for settings the rule
    /// cannot run with; these are the errors of [`Guided::new`] and its siblings.
    fn build(config: Self::Config, measurement: &Measurement<'_>) -> Result<Self>;

    /// The settings it was built from.
    fn config(&self) -> &Self::Config;

    /// The estimate of `E[x | x_t, y]` for `x_t : [N, ..x_shape]` (checked against the measurement) and
    /// `σ : [N]` or `[]`. It need not be detached: [`Guided`] detaches it.
    ///
    /// # Errors
    /// The rule's own failures (autograd, solver); they are returned by [`Guided::try_denoise`].
    fn estimate(&self, call: &GuidanceCall<'_>, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor>;
}

/// What a [`Guidance`] sees in one call: the prior denoiser, the measurement and the cost counters. Its
/// forward passes and VJPs are counted in the wrapper's [`GuidanceStats`].
pub struct GuidanceCall<'c> {
    prior: &'c dyn Denoiser,
    measurement: &'c Measurement<'c>,
    pub(crate) stats: &'c StatsCell,
}

impl<'c> GuidanceCall<'c> {
    /// The prior denoiser `d_θ`. Calling it directly bypasses the counters; prefer [`GuidanceCall::denoise`]
    /// and [`GuidanceCall::forward_with_graph`].
    pub fn prior(&self) -> &'c dyn Denoiser {
        self.prior
    }

    /// The measurement `y = A x + ε` conditioned on.
    pub fn measurement(&self) -> &'c Measurement<'c> {
        self.measurement
    }

    /// `x̂ = d_θ(x_t, σ)` without autograd (detached input and output, one counted forward).
    pub fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.count(|s| s.forwards += 1);
        let _guard = tch::no_grad_guard();
        self.prior.denoise(&x_t.detach(), sigma).detach()
    }

    /// The forward pass with autograd on (one counted forward): a fresh leaf `x` (a detached copy of `x_t`
    /// requiring grad) and `x̂ = d_θ(x, σ)`, whose graph [`GuidanceCall::vjp`] differentiates through. The graph
    /// lives as long as `x̂` (or until a VJP that does not keep it).
    pub fn forward_with_graph(&self, x_t: &Tensor, sigma: &Tensor) -> (Tensor, Tensor) {
        self.count(|s| s.forwards += 1);
        tch::with_grad(|| super::forward_with_graph(self.prior, x_t, sigma))
    }

    /// `Jᵀ u = ∇_x <x̂, u>` through the graph of [`GuidanceCall::forward_with_graph`] (one counted VJP;
    /// docs/method.md §3.4), `u` cast to `x̂`'s kind; keeps the graph for further VJPs when `keep_graph`.
    ///
    /// # Errors
    /// [`SamplingError::Torch`](crate::SamplingError::Torch) when the shapes differ or `x̂` does not depend
    /// on `x`.
    pub fn vjp(&self, x_hat: &Tensor, x: &Tensor, u: &Tensor, keep_graph: bool) -> Result<Tensor> {
        self.count(|s| s.vjps += 1);
        let u = u.to_kind(x_hat.kind());
        Ok(tch::with_grad(|| diem_models::vjp(x_hat, x, &u, keep_graph))?)
    }

    /// Adds to the counters (e.g. [`GuidanceStats::solver_applications`] after a Krylov solve).
    pub fn count(&self, f: impl FnOnce(&mut GuidanceStats)) {
        self.stats.update(f);
    }
}

impl std::fmt::Debug for GuidanceCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuidanceCall")
            .field("measurement", &self.measurement)
            .field("stats", &self.stats.get())
            .finish_non_exhaustive()
    }
}

/// A prior denoiser guided towards the observations by the rule `G`: a [`Denoiser`] returning `G`'s estimate
/// of `E[x | x_t, y]` (docs/method.md §5), usable by any [`Sampler`](crate::Sampler), counting its costs in
/// [`GuidanceStats`]. [`Mmps`](super::Mmps), [`Pgdm`](super::Pgdm), [`Tmpd`](super::Tmpd) and
/// [`DiffPir`](super::DiffPir) are its instances.
///
/// Every wrapper works on the whole batch at once, with per-sample operators `A_b` and per-sample noise
/// levels; the returned tensor never requires grad.
pub struct Guided<'a, G: Guidance> {
    prior: &'a dyn Denoiser,
    measurement: Measurement<'a>,
    guidance: G,
    stats: StatsCell,
}

impl<'a, G: Guidance> Guided<'a, G> {
    /// The rule `G` with settings `config` for the prior denoiser `prior` and the observations
    /// `y = A x + ε` with `A = operator` and `ε ~ N(0, noise)`.
    ///
    /// # Errors
    /// As [`Measurement::new`]; the errors of [`Guidance::build`] (each rule's type lists them).
    pub fn new(
        prior: &'a dyn Denoiser,
        operator: &'a dyn LinearOperator,
        y: &Tensor,
        noise: NoiseCov,
        config: G::Config,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::new(operator, y, noise)?, config)
    }

    /// The rule `G` conditioned on an [`Observation`].
    ///
    /// # Errors
    /// As [`Guided::new`].
    pub fn from_observation(
        prior: &'a dyn Denoiser,
        obs: &'a Observation,
        config: G::Config,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::from_observation(obs), config)
    }

    /// The rule `G` conditioned on a [`Measurement`].
    ///
    /// # Errors
    /// The errors of [`Guidance::build`].
    pub fn from_measurement(
        prior: &'a dyn Denoiser,
        measurement: Measurement<'a>,
        config: G::Config,
    ) -> Result<Self> {
        let guidance = G::build(config, &measurement)?;
        Ok(Self { prior, measurement, guidance, stats: StatsCell::default() })
    }

    /// The settings.
    pub fn config(&self) -> &G::Config {
        self.guidance.config()
    }

    /// The rule.
    pub fn guidance(&self) -> &G {
        &self.guidance
    }

    /// The prior denoiser.
    pub fn prior(&self) -> &'a dyn Denoiser {
        self.prior
    }

    /// The measurement conditioned on.
    pub fn measurement(&self) -> &Measurement<'a> {
        &self.measurement
    }

    /// Costs counted so far.
    pub fn stats(&self) -> GuidanceStats {
        self.stats.get()
    }

    /// Resets the counters.
    pub fn reset_stats(&self) {
        self.stats.reset();
    }

    /// `E[x | x_t, y]` by the rule `G` for `x_t : [N, ..x_shape]` and `σ : [N]` or `[]` (see the rule's docs).
    /// The result is detached.
    ///
    /// # Errors
    /// [`SamplingError::Shape`](crate::SamplingError::Shape) when `x_t` does not match the observations; the
    /// rule's errors ([`Guidance::estimate`]), e.g. [`SamplingError::Torch`](crate::SamplingError::Torch)
    /// when autograd cannot differentiate the prior or
    /// [`SamplingError::Linalg`](crate::SamplingError::Linalg) when a solve fails.
    pub fn try_denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.measurement.check_input(G::NAME, x_t)?;
        self.stats.update(|s| s.calls += 1);
        let call = GuidanceCall { prior: self.prior, measurement: &self.measurement, stats: &self.stats };
        Ok(self.guidance.estimate(&call, x_t, sigma)?.detach())
    }
}

impl<G: Guidance> Denoiser for Guided<'_, G> {
    /// [`Guided::try_denoise`].
    ///
    /// # Panics
    /// When [`Guided::try_denoise`] fails (a broken contract: wrong batch, non-differentiable prior).
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.try_denoise(x_t, sigma).unwrap_or_else(|e| panic!("{}: {e}", G::NAME))
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.prior.prior_mean()
    }
}

impl<G: Guidance> std::fmt::Debug for Guided<'_, G>
where
    G::Config: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(G::NAME)
            .field("measurement", &self.measurement)
            .field("config", self.guidance.config())
            .field("stats", &self.stats.get())
            .finish_non_exhaustive()
    }
}
