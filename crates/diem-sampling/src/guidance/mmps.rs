//! MMPS: moment matching posterior sampling (docs/method.md §5.1; paper §4.2, eqs. 18–24).

use diem_linalg::Safeguard;
use tch::{Kind, Tensor};

use super::guided::{Guidance, GuidanceCall, Guided};
use super::heuristic::CovHeuristic;
use super::measurement::Measurement;
use super::{sigma_sq_like, SolverConfig, Tape};
use crate::error::Result;

/// How [`Mmps`] solves its system, which covariance it uses, and its safeguards.
#[derive(Clone, Debug)]
pub struct MmpsConfig {
    /// The Krylov solve (default: CG, 1 iteration, the CIFAR E-step of the authors' code).
    pub solver: SolverConfig,
    /// `None`: the Tweedie covariance `σ_t² J` through VJPs (default); `Some`: a closed-form heuristic.
    pub heuristic: Option<CovHeuristic>,
    /// The curvature safeguard of the Tweedie path's CG solve (default: `Some(CovHeuristic::CovT)`).
    ///
    /// `K = Σ_y + A V Aᵀ ⪰ Σ_y` for any admissible covariance `V ⪰ 0`, so a CG direction `p` with
    /// `<p, K p> ≤ <p, Σ_y p>` certifies that the network's `V = σ_t² J` is not positive semi-definite along
    /// `Aᵀ p`; the step length `ρ/<p, K p>` is then meaningless (arbitrarily long as the curvature approaches
    /// 0). With `Some(h)`, such a step is taken under the heuristic covariance `V_h` of `h` instead, with its
    /// image `V_h Aᵀ p` (no VJP), and the system stops ([`diem_linalg::Safeguard`]); the events are counted in
    /// [`GuidanceStats::fallbacks`](super::GuidanceStats::fallbacks). `None`: plain CG, which rejects only
    /// non-positive curvature and then gives that sample no further guidance in the call. GMRES and BiCGSTAB
    /// ignore it; heuristic covariances are positive semi-definite by construction and need none.
    pub fallback: Option<CovHeuristic>,
    /// The observation-space safeguard of the Tweedie path: the largest factor γ ≥ 1 by which a correction
    /// may increase the data misfit `||y − A x||_{Σ_y⁻¹}` of the prior's estimate (default: `Some(3.0)`;
    /// `None`: off).
    ///
    /// The correction `Δ` is scaled by the largest `t ∈ [0, 1]` with `||r − t A Δ||_{Σ_y⁻¹} ≤ γ ||r||_{Σ_y⁻¹}`,
    /// `r = y − A x̂`. The exact MMPS correction with an admissible covariance never increases the misfit
    /// (`y − A (x̂ + Δ) = Σ_y (Σ_y + A V Aᵀ)⁻¹ r`), so it is never shortened. A truncated CG step can overshoot
    /// by up to the square root of the system's condition number even then, and later steps correct it: γ = 3
    /// leaves every MMPS draw of the exact-mixture sweep unchanged, while the steps that sent E-step samples of
    /// the manifold experiment to |x| ~ 1e5 raised the misfit 1e2–1e6-fold. Shortened samples are counted in
    /// [`GuidanceStats::damped`](super::GuidanceStats::damped). Heuristic covariances keep their corrections as
    /// defined (paper §4.2's ablation), except `zeros` (`V = 0`), whose correction overshoots the observation
    /// by about `||A V Aᵀ|| / σ_y²` and is therefore scaled to the best fit along its direction,
    /// `t = clamp(<r, A Δ> / ||A Δ||², 0, 1)` (`Σ_y⁻¹` inner products), whenever damping is on.
    pub damping: Option<f64>,
}

impl Default for MmpsConfig {
    fn default() -> Self {
        Self::new(SolverConfig::cg(1))
    }
}

impl MmpsConfig {
    /// The default bound γ on the growth of the data misfit by one correction ([`MmpsConfig::damping`]).
    pub const MISFIT_GROWTH: f64 = 3.0;

    /// The Tweedie covariance with the given solver and the default safeguards (`cov_t` fallback, damping
    /// with γ = [`MmpsConfig::MISFIT_GROWTH`]).
    pub fn new(solver: SolverConfig) -> Self {
        Self {
            solver,
            heuristic: None,
            fallback: Some(CovHeuristic::CovT),
            damping: Some(Self::MISFIT_GROWTH),
        }
    }

    /// Tweedie covariance, `n` CG iterations.
    pub fn cg(n: usize) -> Self {
        Self::new(SolverConfig::cg(n))
    }

    /// Tweedie covariance, `n` GMRES iterations (the FFHQ benchmark uses 1, 3, 5).
    pub fn gmres(n: usize) -> Self {
        Self::new(SolverConfig::gmres(n))
    }

    /// Replaces the solver.
    pub fn with_solver(mut self, solver: SolverConfig) -> Self {
        self.solver = solver;
        self
    }

    /// Replaces the covariance by a heuristic (docs/method.md §5.2).
    pub fn with_heuristic(mut self, heuristic: CovHeuristic) -> Self {
        self.heuristic = Some(heuristic);
        self
    }

    /// Sets the curvature fallback (`None`: plain CG, see [`MmpsConfig::fallback`]).
    pub fn with_fallback(mut self, fallback: Option<CovHeuristic>) -> Self {
        self.fallback = fallback;
        self
    }

    /// Sets the observation-space safeguard's misfit growth bound γ (`None`: off; see [`MmpsConfig::damping`]).
    pub fn with_damping(mut self, damping: Option<f64>) -> Self {
        self.damping = damping;
        self
    }

    /// Both safeguards off: the algorithm of the paper and the authors' code as written (plain CG, the correction as
    /// solved).
    pub fn unguarded(self) -> Self {
        self.with_fallback(None).with_damping(None)
    }
}

/// The MMPS rule of [`Mmps`] (docs/method.md §5.1). One call at `(x_t, σ_t)`, per sample `b`:
///
/// ```text
/// x̂ = d_θ(x_t, σ_t)                       (forward with autograd; the graph is kept for the VJPs)
/// r = y − A x̂
/// K(v) = Σ_y v + A (σ_t² Jᵀ (Aᵀ v))        (one VJP per application; or A V(Aᵀ v) with a heuristic)
/// v ≈ K⁻¹ r                                (Krylov from v_0 = 0, no wasted K(v_0))
/// Δ = σ_t² Jᵀ (Aᵀ v)
/// return x̂ + t Δ,   t = max { t ≤ 1 : ||r − t A Δ|| ≤ γ ||r|| }   (Σ_y⁻¹ norms; t = 1 without damping)
/// ```
///
/// This is Tweedie's `x̂ + σ_t² ∇ log q(y | x_t)` for the moment-matched likelihood
/// `q(y | x_t) = N(y | A x̂, Σ_y + A V Aᵀ)` with `V = σ_t² J` held fixed (paper eq. 20). The covariance products
/// always use the VJP (`Jᵀ`, never a JVP, docs/method.md §12.2).
///
/// Safeguards ([`MmpsConfig::fallback`], [`MmpsConfig::damping`]): a trained network's `J` is neither
/// symmetric nor positive semi-definite everywhere (paper §4.2), so `K` can be indefinite. CG steps along
/// directions where the Tweedie covariance is not admissible (`<p, K p> ≤ <p, Σ_y p>`) are taken under a
/// heuristic covariance instead, and the correction may not increase the data misfit more than γ-fold. Both
/// leave the exact case (a Gaussian prior, an admissible `V`, a converged solve) unchanged.
///
/// Costs: 1 forward and `n` VJPs with `n` CG/GMRES iterations (`2n` with BiCGSTAB); 1 forward and 1 VJP with a
/// heuristic. docs/method.md §5.8 (and the reference and azula) count `n + 1`: the last product `σ_t² Jᵀ Aᵀ v` is one
/// more VJP there. Here the Krylov solve carries the image `σ_t² Jᵀ Aᵀ u` of every vector `u` it applies `K` to,
/// and `v` is a linear combination of those `u`, so the same combination of their images is `σ_t² Jᵀ Aᵀ v`
/// ([`Krylov::solve_with_image`](diem_linalg::Krylov::solve_with_image)); it equals the extra VJP to round-off,
/// and MMPS(1) does 2 network passes per call instead of 3.
///
/// With the exact [`GaussianDenoiser`](diem_models::GaussianDenoiser) and a converged solve (or the `cov_x`
/// heuristic of the same Σ_x) the output is the exact `E[x | x_t, y]` (docs/method.md §12.1 item 6).
///
/// Building it fails with [`SamplingError::Config`](crate::SamplingError::Config) for a zero iteration count or
/// a bad tolerance, a damping bound below 1, or the `zeros` heuristic with a zero noise deviation, and with
/// [`SamplingError::Shape`](crate::SamplingError::Shape) for a `cov_x` matrix of the wrong size.
///
/// # References
/// Rozet, Andry, Lanusse, Louppe, "Learning Diffusion Priors from Observations by Expectation Maximization",
/// NeurIPS 2024, arXiv:2405.13712.
#[derive(Clone, Debug)]
pub struct MmpsGuidance {
    config: MmpsConfig,
    /// Whether every noise deviation is positive (the damping's inner products are then `Σ_y⁻¹`-weighted).
    whitened: bool,
}

/// The MMPS posterior denoiser: [`MmpsGuidance`] (its equations, safeguards and costs) in the [`Guided`]
/// shell, which gives it the constructors [`Mmps::new`](Guided::new),
/// [`Mmps::from_observation`](Guided::from_observation) and
/// [`Mmps::from_measurement`](Guided::from_measurement) and the counters [`Mmps::stats`](Guided::stats).
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
pub type Mmps<'a> = Guided<'a, MmpsGuidance>;

impl Guidance for MmpsGuidance {
    type Config = MmpsConfig;

    const NAME: &'static str = "Mmps";

    fn build(config: MmpsConfig, measurement: &Measurement<'_>) -> Result<Self> {
        if let Some(h) = &config.fallback {
            h.validate(measurement.operator().x_numel())?;
        }
        if let Some(gamma) = config.damping {
            if !(gamma.is_finite() && gamma >= 1.0) {
                return Err(crate::SamplingError::config(
                    "MmpsConfig.damping",
                    format!("the misfit growth bound must be finite and ≥ 1, got {gamma}"),
                ));
            }
        }
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
        let whitened = measurement.require_positive_noise("MmpsConfig.damping").is_ok();
        Ok(Self { config, whitened })
    }

    fn config(&self) -> &MmpsConfig {
        &self.config
    }

    /// The MMPS estimate (see the type's docs).
    fn estimate(&self, call: &GuidanceCall<'_>, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        tch::with_grad(|| {
            let (x, x_hat) = call.forward_with_graph(x_t, sigma);
            let tape = Tape::new(&x_hat, &x, call.stats);
            let measurement = call.measurement();
            let op = measurement.operator();
            let noise = measurement.noise();
            let sigma_sq = sigma_sq_like(sigma, &x);
            let x_hat_d = x_hat.detach();
            let r = measurement.y_like(&x_hat_d) - op.apply(&x_hat_d);
            let correction = match &self.config.heuristic {
                Some(CovHeuristic::Zeros) => tape.vjp(&op.adjoint(&noise.solve(&r)), false) * &sigma_sq,
                // Tweedie: each application computes w = σ² Jᵀ Aᵀ u, and σ² Jᵀ Aᵀ v is the same combination of
                // those w as v is of the u (Krylov::solve_with_image): no VJP after the solve.
                None => {
                    let k = |u: &Tensor| -> (Tensor, Tensor) {
                        let w = tape.vjp(&op.adjoint(u), true) * &sigma_sq;
                        (noise.mul(u) + op.apply(&w), w)
                    };
                    // K ⪰ Σ_y for an admissible covariance; the fallback's K_h = Σ_y + A V_h Aᵀ with image V_h Aᵀ u.
                    let floor = |u: &Tensor| noise.mul(u);
                    let stand_in = |u: &Tensor| -> (Tensor, Tensor) {
                        let adj = op.adjoint(u);
                        let w = match &self.config.fallback {
                            Some(h) => h.apply(&adj, &sigma_sq).unwrap_or_else(|e| {
                                tape.record(e);
                                adj.zeros_like()
                            }),
                            None => adj.zeros_like(),
                        };
                        (noise.mul(u) + op.apply(&w), w)
                    };
                    let guard = match self.config.fallback {
                        Some(_) => Safeguard { floor: Some(&floor), fallback: Some(&stand_in) },
                        None => Safeguard::default(),
                    };
                    let (image, applications, fallbacks) = self.config.solver.solve_guarded(k, &guard, &r)?;
                    call.count(|s| s.solver_applications += applications);
                    tape.check()?;
                    if self.config.fallback.is_some() {
                        call.stats.add_events(&fallbacks, &fallbacks.zeros_like());
                    }
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
                    call.count(|s| s.solver_applications += applications);
                    tape.check()?;
                    tape.vjp(&op.adjoint(&v), false) * &sigma_sq
                }
            };
            tape.check()?;
            // The heuristics' systems are positive definite by construction: their corrections stay as defined,
            // except `zeros`, whose step σ² Jᵀ Aᵀ Σ_y⁻¹ r overshoots the observation by about ‖A V Aᵀ‖ / σ_y²
            // (1e4 at σ_y = 0.01: the samples diverge to NaN): with the safeguards on, it takes the step length
            // that fits the observation best along its direction.
            let correction = match (self.config.damping, &self.config.heuristic) {
                (Some(gamma), None) => self.damp(call, &r, correction, gamma),
                (Some(_), Some(CovHeuristic::Zeros)) => self.damp(call, &r, correction, 0.0),
                _ => correction,
            };
            Ok((x_hat_d + correction).detach())
        })
    }
}

impl MmpsGuidance {
    /// The observation-space safeguard: `t Δ` with the largest `t ∈ [0, 1]` such that
    /// `||r − t A Δ|| ≤ γ ||r||` per sample, i.e. `t = min(1, (<r, a> + √(<r, a>² + (γ² − 1) ||r||² ||a||²)) / ||a||²)`
    /// with `a = A Δ` (`max(0, 2 <r, a> / ||a||²)` for γ = 1), norms weighted by `Σ_y⁻¹` (Euclidean when a
    /// noise deviation is zero); `t = 1` where `A Δ = 0`. `γ = 0` asks for the best fit along `Δ` instead:
    /// `t = clamp(<r, a> / ||a||², 0, 1)`. Counts the samples with `t < 1`.
    fn damp(&self, call: &GuidanceCall<'_>, r: &Tensor, correction: Tensor, gamma: f64) -> Tensor {
        let op = call.measurement().operator();
        let noise = call.measurement().noise();
        let n = r.size()[0];
        let weight = |v: &Tensor| if self.whitened { noise.solve(v) } else { v.shallow_clone() };
        let dot =
            |u: &Tensor, v: &Tensor| (u * weight(v)).reshape([n, -1]).sum_dim_intlist(1, false, Kind::Double);
        let a = op.apply(&correction).to_kind(Kind::Double);
        let r = r.to_kind(Kind::Double);
        let (ra, aa, rr) = (dot(&r, &a), dot(&a, &a), dot(&r, &r));
        let t = if gamma == 0.0 {
            (&ra / &aa).clamp(0.0, 1.0)
        } else {
            let reach = (ra.square() + &rr * &aa * (gamma * gamma - 1.0)).clamp_min(0.0).sqrt();
            ((&ra + reach) / &aa).clamp(0.0, 1.0)
        };
        let t = t.where_self(&aa.gt(0.0).logical_and(&t.isfinite()), &t.ones_like());
        let damped = t.lt(1.0).sum(Kind::Int64);
        call.stats.add_events(&damped.zeros_like(), &damped);
        let mut shape = vec![n];
        shape.extend(std::iter::repeat_n(1, correction.dim() - 1));
        let kind = correction.kind();
        correction * t.to_kind(kind).reshape(shape)
    }
}
