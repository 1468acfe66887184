//! MMPS: moment matching posterior sampling (SPEC.md §5.1; paper §4.2, eqs. 18–24).

use diem_models::Denoiser;
use diem_operators::{LinearOperator, NoiseCov, Observation};
use tch::Tensor;

use super::heuristic::CovHeuristic;
use super::measurement::Measurement;
use super::{forward_with_graph, sigma_sq_like, GuidanceStats, SolverConfig, StatsCell, Tape};
use crate::error::Result;

/// How [`Mmps`] solves its system and which covariance it uses.
#[derive(Clone, Debug)]
pub struct MmpsConfig {
    /// The Krylov solve (default: CG, 1 iteration, the CIFAR E-step of \[ref\]).
    pub solver: SolverConfig,
    /// `None`: the Tweedie covariance `σ_t² J` through VJPs (default); `Some`: a closed-form heuristic.
    pub heuristic: Option<CovHeuristic>,
}

impl Default for MmpsConfig {
    fn default() -> Self {
        Self { solver: SolverConfig::cg(1), heuristic: None }
    }
}

impl MmpsConfig {
    /// The Tweedie covariance with the given solver.
    pub fn new(solver: SolverConfig) -> Self {
        Self { solver, heuristic: None }
    }

    /// Tweedie covariance, `n` CG iterations.
    pub fn cg(n: usize) -> Self {
        Self::new(SolverConfig::cg(n))
    }

    /// Tweedie covariance, `n` GMRES iterations (the FFHQ benchmark uses 1, 3, 5).
    pub fn gmres(n: usize) -> Self {
        Self::new(SolverConfig::gmres(n))
    }

    /// Replaces the covariance by a heuristic (SPEC.md §5.2).
    pub fn with_heuristic(mut self, heuristic: CovHeuristic) -> Self {
        self.heuristic = Some(heuristic);
        self
    }
}

/// The MMPS posterior denoiser (SPEC.md §5.1). One call at `(x_t, σ_t)`, per sample `b`:
///
/// ```text
/// x̂ = d_θ(x_t, σ_t)                       (forward with autograd; the graph is kept for the VJPs)
/// r = y − A x̂
/// K(v) = Σ_y v + A (σ_t² Jᵀ (Aᵀ v))        (one VJP per application; or A V(Aᵀ v) with a heuristic)
/// v ≈ K⁻¹ r                                (Krylov from v_0 = 0, no wasted K(v_0))
/// return x̂ + σ_t² Jᵀ (Aᵀ v)
/// ```
///
/// This is Tweedie's `x̂ + σ_t² ∇ log q(y | x_t)` for the moment-matched likelihood
/// `q(y | x_t) = N(y | A x̂, Σ_y + A V Aᵀ)` with `V = σ_t² J` held fixed (paper eq. 20). The covariance products
/// always use the VJP (`Jᵀ`, never a JVP, SPEC.md §12.2).
///
/// Costs: 1 forward and `n` VJPs with `n` CG/GMRES iterations (`2n` with BiCGSTAB); 1 forward and 1 VJP with a
/// heuristic. SPEC.md §5.8 (and the reference and azula) count `n + 1`: the last product `σ_t² Jᵀ Aᵀ v` is one
/// more VJP there. Here the Krylov solve carries the image `σ_t² Jᵀ Aᵀ u` of every vector `u` it applies `K` to,
/// and `v` is a linear combination of those `u`, so the same combination of their images is `σ_t² Jᵀ Aᵀ v`
/// ([`Krylov::solve_with_image`](diem_linalg::Krylov::solve_with_image)); it equals the extra VJP to round-off,
/// and MMPS(1) does 2 network passes per call instead of 3.
///
/// With the exact [`GaussianDenoiser`](diem_models::GaussianDenoiser) and a converged solve (or the `cov_x`
/// heuristic of the same Σ_x) the output is the exact `E[x | x_t, y]` (SPEC.md §12.1 item 6).
///
/// # References
/// Rozet, Andry, Lanusse, Louppe, "Learning Diffusion Priors from Observations by Expectation Maximization",
/// NeurIPS 2024, arXiv:2405.13712.
///
/// ```
/// use diem_linalg::Dplr;
/// use diem_models::{Denoiser, GaussianDenoiser};
/// use diem_operators::{Identity, NoiseCov};
/// use diem_sampling::{Mmps, MmpsConfig};
/// use tch::{Kind, Tensor};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Prior N(0, I) in 2-D, y = x + ε with σ_y = 1: the posterior mean at low noise is ≈ y / 2.
/// let prior = GaussianDenoiser::new(Tensor::zeros([2], (Kind::Double, tch::Device::Cpu)),
///                                   Dplr::identity(2, Kind::Double, tch::Device::Cpu))?;
/// let op = Identity::new(&[2])?;
/// let y = Tensor::from_slice(&[2.0f64, -4.0]).reshape([1, 2]);
/// let mmps = Mmps::new(&prior, &op, &y, NoiseCov::isotropic(1.0)?, MmpsConfig::cg(2))?;
/// let x_t = Tensor::from_slice(&[1.0f64, -2.0]).reshape([1, 2]);
/// let mean = mmps.try_denoise(&x_t, &Tensor::from(1e-3f64))?;
/// assert!((mean - Tensor::from_slice(&[1.0f64, -2.0])).abs().max().double_value(&[]) < 1e-3);
/// assert_eq!(mmps.stats().vjps, 2); // one per CG iteration: the final product comes from the solve
/// # Ok(())
/// # }
/// ```
pub struct Mmps<'a> {
    prior: &'a dyn Denoiser,
    measurement: Measurement<'a>,
    config: MmpsConfig,
    stats: StatsCell,
}

impl<'a> Mmps<'a> {
    /// MMPS for the prior denoiser `prior` and the observations `y = A x + ε` with `A = operator` and
    /// `ε ~ N(0, noise)`.
    ///
    /// # Errors
    /// As [`Measurement::new`]; [`SamplingError::Config`](crate::SamplingError::Config) for a zero iteration
    /// count or a bad tolerance, or for the `zeros` heuristic with a zero noise deviation;
    /// [`SamplingError::Shape`](crate::SamplingError::Shape) for a `cov_x` matrix of the wrong size.
    pub fn new(
        prior: &'a dyn Denoiser,
        operator: &'a dyn LinearOperator,
        y: &Tensor,
        noise: NoiseCov,
        config: MmpsConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::new(operator, y, noise)?, config)
    }

    /// MMPS conditioned on an [`Observation`].
    ///
    /// # Errors
    /// As [`Mmps::new`].
    pub fn from_observation(
        prior: &'a dyn Denoiser,
        obs: &'a Observation,
        config: MmpsConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::from_observation(obs), config)
    }

    /// MMPS conditioned on a [`Measurement`].
    ///
    /// # Errors
    /// As [`Mmps::new`].
    pub fn from_measurement(
        prior: &'a dyn Denoiser,
        measurement: Measurement<'a>,
        config: MmpsConfig,
    ) -> Result<Self> {
        match &config.heuristic {
            Some(CovHeuristic::Zeros) => {
                measurement.require_positive_noise("MmpsConfig.heuristic (zeros)")?
            }
            Some(h) => {
                h.validate(measurement.operator().x_numel())?;
                config.solver.validate("MmpsConfig.solver")?;
            }
            None => config.solver.validate("MmpsConfig.solver")?,
        }
        Ok(Self { prior, measurement, config, stats: StatsCell::default() })
    }

    /// The configuration.
    pub fn config(&self) -> &MmpsConfig {
        &self.config
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

    /// `E[x | x_t, y]` by MMPS for `x_t : [N, ..x_shape]` and `σ : [N]` or `[]`. The result is detached.
    ///
    /// # Errors
    /// [`SamplingError::Shape`](crate::SamplingError::Shape) when `x_t` does not match the observations;
    /// [`SamplingError::Torch`](crate::SamplingError::Torch) when autograd cannot differentiate the prior;
    /// [`SamplingError::Linalg`](crate::SamplingError::Linalg) when the solve fails.
    pub fn try_denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.measurement.check_input("Mmps::denoise", x_t)?;
        self.stats.update(|s| {
            s.calls += 1;
            s.forwards += 1;
        });
        tch::with_grad(|| {
            let (x, x_hat) = forward_with_graph(self.prior, x_t, sigma);
            let tape = Tape::new(&x_hat, &x, &self.stats);
            let op = self.measurement.operator();
            let noise = self.measurement.noise();
            let sigma_sq = sigma_sq_like(sigma, &x);
            let x_hat_d = x_hat.detach();
            let r = self.measurement.y_like(&x_hat_d) - op.apply(&x_hat_d);
            let correction = match &self.config.heuristic {
                Some(CovHeuristic::Zeros) => tape.vjp(&op.adjoint(&noise.solve(&r)), false) * &sigma_sq,
                // Tweedie: each application computes w = σ² Jᵀ Aᵀ u, and σ² Jᵀ Aᵀ v is the same combination of
                // those w as v is of the u (Krylov::solve_with_image): no VJP after the solve.
                None => {
                    let k = |u: &Tensor| -> (Tensor, Tensor) {
                        let w = tape.vjp(&op.adjoint(u), true) * &sigma_sq;
                        (noise.mul(u) + op.apply(&w), w)
                    };
                    let (image, applications) = self.config.solver.solve_image(k, &r)?;
                    self.stats.update(|s| s.solver_applications += applications);
                    tape.check()?;
                    image.unwrap_or_else(|| x_hat_d.zeros_like())
                }
                Some(h) => {
                    let k = |u: &Tensor| -> Tensor {
                        let w = op.adjoint(u);
                        let vw = h.apply(&w, &sigma_sq).unwrap_or_else(|e| {
                            tape.record(e);
                            w.zeros_like()
                        });
                        noise.mul(u) + op.apply(&vw)
                    };
                    let (v, applications) = self.config.solver.solve(k, &r)?;
                    self.stats.update(|s| s.solver_applications += applications);
                    tape.check()?;
                    tape.vjp(&op.adjoint(&v), false) * &sigma_sq
                }
            };
            tape.check()?;
            Ok((x_hat_d + correction).detach())
        })
    }
}

impl Denoiser for Mmps<'_> {
    /// [`Mmps::try_denoise`].
    ///
    /// # Panics
    /// When [`Mmps::try_denoise`] fails (a broken contract: wrong batch, non-differentiable prior).
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.try_denoise(x_t, sigma).unwrap_or_else(|e| panic!("Mmps: {e}"))
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.prior.prior_mean()
    }
}

impl std::fmt::Debug for Mmps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mmps")
            .field("measurement", &self.measurement)
            .field("config", &self.config)
            .field("stats", &self.stats.get())
            .finish_non_exhaustive()
    }
}
