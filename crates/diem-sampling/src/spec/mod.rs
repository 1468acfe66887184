//! The posterior vocabulary as data: serde-able descriptions of a sampler ([`SamplerSpec`]) and a posterior
//! method ([`PosteriorMethod`]: MMPS with its covariance, solve and safeguards; DPS; PiGDM; TMPD; DiffPIR),
//! the names the command line and the benchmarks use for them ([`PosteriorMethod::NAMES`],
//! [`PosteriorMethod::from_name`]), their validation (typed errors naming the field) and their cost per
//! denoiser call ([`StepCost`]).
//!
//! A [`PosteriorMethod`] is turned into something that samples by [`PosteriorMethod::build`] (see
//! [`crate::posterior`]). The JSON forms are those of diem's EM configuration files:
//!
//! ```text
//! {"covariance": "tweedie", "solver": {"method": "cg", "iterations": 3}}   MMPS (the safeguards default)
//! {"dps": {"zeta": 1.0}}                                                   DPS
//! {"pgdm": {"solver": {"method": "gmres", "iterations": 5}}}               PiGDM
//! {"tmpd": {}}  {"diffpir": {"lambda": 8.0}}                               TMPD, DiffPIR (defaults)
//! {"tds": {"particles": 16, "ess_threshold": 0.5, "twist": "tweedie"}}     TDS (docs/method.md §5.7)
//! ```

use std::fmt;

use diem_linalg::{Dplr, Krylov};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, SamplingError};
use crate::guidance::{CovHeuristic, DiffPirConfig, MmpsConfig, PgdmConfig, SolverConfig, TmpdConfig};
use crate::tds::TdsSpec;

mod sampler;
pub use sampler::SamplerSpec;

/// The most steps a sampler may take (its time grid is allocated up front; the paper's longest is 4,096).
pub const MAX_STEPS: usize = 1_000_000;

/// The most iterations a Krylov solve may take (the paper's longest is 10·N for the manifold's N = 5).
pub const MAX_ITERATIONS: usize = 100_000;

/// The Krylov method's name in a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverMethod {
    /// Conjugate gradients.
    Cg,
    /// GMRES.
    Gmres,
    /// BiCGSTAB.
    Bicgstab,
}

impl SolverMethod {
    /// The names accepted by [`SolverMethod::from_name`].
    pub const NAMES: [&'static str; 3] = ["cg", "gmres", "bicgstab"];

    /// The method named `"cg"`, `"gmres"` or `"bicgstab"`.
    ///
    /// # Errors
    /// [`SamplingError::Config`] (field `solver`) for any other name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "cg" => Ok(Self::Cg),
            "gmres" => Ok(Self::Gmres),
            "bicgstab" => Ok(Self::Bicgstab),
            other => Err(SamplingError::config(
                "solver",
                format!("unknown solver {other:?} (expected cg, gmres or bicgstab)"),
            )),
        }
    }

    /// The display name: `"CG"`, `"GMRES"`, `"BiCGSTAB"`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cg => "CG",
            Self::Gmres => "GMRES",
            Self::Bicgstab => "BiCGSTAB",
        }
    }

    /// The linear-algebra crate's method.
    pub fn krylov(self) -> Krylov {
        match self {
            Self::Cg => Krylov::Cg,
            Self::Gmres => Krylov::Gmres,
            Self::Bicgstab => Krylov::BiCgStab,
        }
    }
}

/// A Krylov solve inside a guidance step, as configured (docs/method.md §6):
/// `{"method": "cg", "iterations": 3, "rtol": null, "coupled": false}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolverSpec {
    /// `"cg"`, `"gmres"` or `"bicgstab"`.
    pub method: SolverMethod,
    /// Iterations (the cap when `rtol` is set).
    pub iterations: usize,
    /// Optional relative tolerance (stops early; one host synchronization per iteration).
    #[serde(default)]
    pub rtol: Option<f64>,
    /// Couple the systems of one chunk: shared step sizes and one stopping test over the chunk, as the
    /// authors' JAX code solves them under `vmap`, for reproductions that must match it. Default `false`:
    /// one system per sample.
    #[serde(default)]
    pub coupled: bool,
}

impl SolverSpec {
    /// `n` iterations of `method`, no tolerance, per-sample systems.
    pub fn new(method: SolverMethod, iterations: usize) -> Self {
        Self { method, iterations, rtol: None, coupled: false }
    }

    /// `n` CG iterations, no tolerance.
    pub fn cg(n: usize) -> Self {
        Self::new(SolverMethod::Cg, n)
    }

    /// `n` GMRES iterations, no tolerance.
    pub fn gmres(n: usize) -> Self {
        Self::new(SolverMethod::Gmres, n)
    }

    /// The solver configuration the guidance wrappers take.
    pub fn to_solver(&self) -> SolverConfig {
        SolverConfig::new(self.method.krylov(), self.iterations).with_rtol(self.rtol).coupled(self.coupled)
    }

    /// Checks the iteration count (`1..=`[`MAX_ITERATIONS`]) and the tolerance (finite, ≥ 0).
    ///
    /// # Errors
    /// [`SamplingError::Config`] naming `iterations` or `rtol`.
    pub fn validate(&self) -> Result<()> {
        self.validate_as("iterations", "rtol")
    }

    fn validate_as(&self, iterations: &'static str, rtol: &'static str) -> Result<()> {
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(SamplingError::config(
                iterations,
                format!("must lie in 1..={MAX_ITERATIONS}, got {}", self.iterations),
            ));
        }
        if let Some(r) = self.rtol {
            if !(r.is_finite() && r >= 0.0) {
                return Err(SamplingError::config(rtol, format!("must be finite and ≥ 0, got {r}")));
            }
        }
        Ok(())
    }

    /// Operator applications of one solve, each one VJP in MMPS's Tweedie system: `iterations` (BiCGSTAB:
    /// twice that), the most a tolerance lets it take.
    pub fn applications(&self) -> usize {
        match self.method {
            SolverMethod::Bicgstab => 2 * self.iterations,
            _ => self.iterations,
        }
    }
}

/// The covariance MMPS uses inside its linear system (docs/method.md §5.1–5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Covariance {
    /// The Tweedie covariance `σ_t² J` through VJPs (the paper's default).
    Tweedie,
    /// `cov_x`: a given Gaussian covariance Σ_x (in an EM run, its current Gaussian prior).
    CovX,
    /// `cov_t`: `σ_t² I`.
    CovT,
    /// `ones`: `σ_t²/(1 + σ_t²) I`.
    Ones,
    /// `zeros`: `V = 0`.
    Zeros,
}

impl Covariance {
    /// The closed-form heuristic (`None` for Tweedie); `cov_x` takes `sigma_x`.
    ///
    /// # Errors
    /// [`SamplingError::Config`] naming `field` when `cov_x` is asked for without a Σ_x.
    pub fn heuristic(self, sigma_x: Option<&Dplr>, field: &'static str) -> Result<Option<CovHeuristic>> {
        Ok(match self {
            Self::Tweedie => None,
            Self::CovX => match sigma_x {
                Some(s) => Some(CovHeuristic::CovX(s.clone())),
                None => {
                    return Err(SamplingError::config(
                        field,
                        "cov_x needs a Gaussian covariance Σ_x, none given",
                    ))
                }
            },
            Self::CovT => Some(CovHeuristic::CovT),
            Self::Ones => Some(CovHeuristic::Ones),
            Self::Zeros => Some(CovHeuristic::Zeros),
        })
    }
}

/// MMPS's safeguards ([`MmpsConfig`]): what a CG direction whose curvature falls below the noise's takes
/// instead of a huge step, and how far a correction may move the estimate away from its observation. Neither
/// changes MMPS where its system is positive definite and its solve converged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeguardSpec {
    /// The closed-form covariance of the fallback step (`"cov_t"`, the default; `"ones"`, `"cov_x"`,
    /// `"zeros"`), or `null` to reject such a step (plain CG: that sample gets no guidance from it).
    #[serde(default = "default_fallback")]
    pub fallback: Option<Covariance>,
    /// γ ≥ 1: a correction may raise the data misfit `‖y − A x̂‖_{Σ_y⁻¹}` of the prior's estimate at most
    /// γ-fold (default 3), or `null` for no limit.
    #[serde(default = "default_damping")]
    pub damping: Option<f64>,
}

fn default_fallback() -> Option<Covariance> {
    Some(Covariance::CovT)
}

fn default_damping() -> Option<f64> {
    Some(3.0)
}

impl Default for SafeguardSpec {
    fn default() -> Self {
        Self { fallback: default_fallback(), damping: default_damping() }
    }
}

impl SafeguardSpec {
    /// No safeguard: MMPS as the paper and the reference code write it.
    pub fn none() -> Self {
        Self { fallback: None, damping: None }
    }

    /// Checks the fallback (closed form) and γ (finite, ≥ 1).
    ///
    /// # Errors
    /// [`SamplingError::Config`] naming `safeguards.fallback` or `safeguards.damping`.
    pub fn validate(&self) -> Result<()> {
        if self.fallback == Some(Covariance::Tweedie) {
            return Err(SamplingError::config(
                "safeguards.fallback",
                "must be a closed-form covariance (cov_t, ones, cov_x or zeros) or null, not tweedie",
            ));
        }
        if let Some(g) = self.damping {
            if !(g.is_finite() && g >= 1.0) {
                return Err(SamplingError::config(
                    "safeguards.damping",
                    format!("must be a finite γ ≥ 1 or null, got {g}"),
                ));
            }
        }
        Ok(())
    }
}

/// MMPS as configured (docs/method.md §5.1–5.2): the covariance inside the system, the solve and the
/// safeguards. Its JSON is the object `{"covariance": …, "solver": …, "safeguards": …}` (safeguards optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmpsSpec {
    /// The covariance inside the system.
    pub covariance: Covariance,
    /// The solve.
    pub solver: SolverSpec,
    /// The safeguards (default: both on; omitted in a file = the defaults).
    #[serde(default)]
    pub safeguards: SafeguardSpec,
}

impl MmpsSpec {
    /// MMPS with `covariance` and `solver`, with the default safeguards.
    pub fn new(covariance: Covariance, solver: SolverSpec) -> Self {
        Self { covariance, solver, safeguards: SafeguardSpec::default() }
    }

    /// The MMPS configuration; `cov_x` (as the covariance or the fallback) takes `sigma_x`.
    pub fn to_mmps(&self, sigma_x: &Dplr) -> MmpsConfig {
        // With a Σ_x given, no covariance can fail to resolve.
        self.mmps_config(Some(sigma_x)).unwrap_or_else(|_| MmpsConfig::new(self.solver.to_solver()))
    }

    /// [`MmpsSpec::to_mmps`] with an optional Σ_x.
    ///
    /// # Errors
    /// [`SamplingError::Config`] naming `covariance` or `safeguards.fallback` when `cov_x` is used without
    /// `sigma_x`.
    pub fn mmps_config(&self, sigma_x: Option<&Dplr>) -> Result<MmpsConfig> {
        let fallback = match self.safeguards.fallback {
            Some(c) => c.heuristic(sigma_x, "safeguards.fallback")?,
            None => None,
        };
        let base = MmpsConfig::new(self.solver.to_solver())
            .with_fallback(fallback)
            .with_damping(self.safeguards.damping);
        Ok(match self.covariance.heuristic(sigma_x, "covariance")? {
            Some(h) => base.with_heuristic(h),
            None => base,
        })
    }

    /// Checks the solve and the safeguards.
    ///
    /// # Errors
    /// [`SamplingError::Config`] naming `solver.iterations`, `solver.rtol`, `safeguards.fallback` or
    /// `safeguards.damping`.
    pub fn validate(&self) -> Result<()> {
        self.solver.validate_as("solver.iterations", "solver.rtol")?;
        self.safeguards.validate()
    }
}

/// DPS as configured (docs/method.md §5.3): `{"zeta": 1.0}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpsSpec {
    /// The step size ζ ≥ 0 (default 1, the DPS paper's; the benchmark code's FFHQ runs use 0.5).
    pub zeta: f64,
}

impl Default for DpsSpec {
    fn default() -> Self {
        Self { zeta: 1.0 }
    }
}

/// PiGDM as configured (docs/method.md §5.4): `{"solver": …}` (default GMRES, 5 iterations).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgdmSpec {
    /// The solve of `(Σ_y + r_t² A Aᵀ) v = y − A x̂`.
    pub solver: SolverSpec,
}

impl Default for PgdmSpec {
    fn default() -> Self {
        Self { solver: SolverSpec::gmres(5) }
    }
}

/// TMPD as configured (docs/method.md §5.5): `{"solver": …}` (default GMRES, 5 iterations).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TmpdSpec {
    /// The solve of `(Σ_y + A diag(d) Aᵀ) v = y − A x̂`.
    pub solver: SolverSpec,
}

impl Default for TmpdSpec {
    fn default() -> Self {
        Self { solver: SolverSpec::gmres(5) }
    }
}

/// DiffPIR as configured (docs/method.md §5.6): `{"lambda": 8.0, "solver": …}` (defaults as [`DiffPirConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffPirSpec {
    /// The regularization weight λ > 0.
    pub lambda: f64,
    /// The x-space proximal solve.
    pub solver: SolverSpec,
}

impl Default for DiffPirSpec {
    fn default() -> Self {
        Self { lambda: DiffPirConfig::default().lambda, solver: SolverSpec::gmres(5) }
    }
}

/// A posterior sampling method (docs/method.md §5), as data: what an E-step, `diem posterior` and the
/// benchmarks are told to run. [`PosteriorMethod::build`] turns it into a [`crate::Posterior`] for a prior
/// and a measurement.
///
/// Serialized, MMPS is the plain object of [`MmpsSpec`] (the form of every existing configuration file) and
/// every other method is externally tagged: `{"dps": {"zeta": 0.5}}`, `{"pgdm": {}}`, `{"tmpd": {}}`,
/// `{"diffpir": {"lambda": 8.0}}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PosteriorMethod {
    /// MMPS (docs/method.md §5.1) with the Tweedie covariance or a heuristic (§5.2).
    Mmps(MmpsSpec),
    /// DPS (docs/method.md §5.3): a gradient step after each unguided DDPM step; a sampler, not a denoiser.
    Dps(DpsSpec),
    /// PiGDM (docs/method.md §5.4).
    Pgdm(PgdmSpec),
    /// TMPD with the row-sum covariance (docs/method.md §5.5).
    Tmpd(TmpdSpec),
    /// DiffPIR's proximal step (docs/method.md §5.6).
    DiffPir(DiffPirSpec),
    /// TDS, the twisted diffusion sampler with MMPS's likelihood as its twist (docs/method.md §5.7): particles
    /// per observation; a sampler, not a denoiser.
    Tds(TdsSpec),
}

impl Default for PosteriorMethod {
    /// MMPS, Tweedie covariance, one CG iteration, default safeguards.
    fn default() -> Self {
        Self::Mmps(MmpsSpec::new(Covariance::Tweedie, SolverSpec::cg(1)))
    }
}

impl From<MmpsSpec> for PosteriorMethod {
    fn from(spec: MmpsSpec) -> Self {
        Self::Mmps(spec)
    }
}

/// The cost of one call of a posterior denoiser (one DPS step): network forwards and vector-Jacobian
/// products (docs/method.md §5.8). With a solver tolerance, `vjps` is the most a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCost {
    /// Forward passes of the prior.
    pub forwards: usize,
    /// VJPs through the prior.
    pub vjps: usize,
}

impl PosteriorMethod {
    /// The names [`PosteriorMethod::from_name`] accepts (and `diem posterior --method` lists).
    pub const NAMES: [&'static str; 10] = [
        "mmps",
        "mmps-cov-x",
        "mmps-cov-t",
        "mmps-ones",
        "mmps-zeros",
        "pgdm",
        "tmpd",
        "diffpir",
        "dps",
        "tds",
    ];

    /// The method named `name` (one of [`PosteriorMethod::NAMES`]) with the solve `solver` (MMPS, PiGDM,
    /// TMPD, DiffPIR), MMPS's default safeguards, DiffPIR's default λ and DPS's default ζ = 1; change them
    /// with [`PosteriorMethod::with_zeta`] and [`PosteriorMethod::without_safeguards`].
    ///
    /// # Errors
    /// [`SamplingError::Config`] (field `method`) for an unknown name, listing the known ones.
    pub fn from_name(name: &str, solver: SolverSpec) -> Result<Self> {
        let mmps = |c| Ok(Self::Mmps(MmpsSpec::new(c, solver)));
        match name {
            "mmps" => mmps(Covariance::Tweedie),
            "mmps-cov-x" => mmps(Covariance::CovX),
            "mmps-cov-t" => mmps(Covariance::CovT),
            "mmps-ones" => mmps(Covariance::Ones),
            "mmps-zeros" => mmps(Covariance::Zeros),
            "pgdm" => Ok(Self::Pgdm(PgdmSpec { solver })),
            "tmpd" => Ok(Self::Tmpd(TmpdSpec { solver })),
            "diffpir" => Ok(Self::DiffPir(DiffPirSpec { solver, ..DiffPirSpec::default() })),
            "dps" => Ok(Self::Dps(DpsSpec::default())),
            "tds" => Ok(Self::Tds(TdsSpec::default())),
            other => Err(SamplingError::config(
                "method",
                format!("unknown method {other:?} (expected one of {})", Self::NAMES.join(", ")),
            )),
        }
    }

    /// The method's name in [`PosteriorMethod::NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mmps(m) => match m.covariance {
                Covariance::Tweedie => "mmps",
                Covariance::CovX => "mmps-cov-x",
                Covariance::CovT => "mmps-cov-t",
                Covariance::Ones => "mmps-ones",
                Covariance::Zeros => "mmps-zeros",
            },
            Self::Dps(_) => "dps",
            Self::Pgdm(_) => "pgdm",
            Self::Tmpd(_) => "tmpd",
            Self::DiffPir(_) => "diffpir",
            Self::Tds(_) => "tds",
        }
    }

    /// Sets DPS's ζ (other methods are returned unchanged).
    pub fn with_zeta(self, zeta: f64) -> Self {
        match self {
            Self::Dps(_) => Self::Dps(DpsSpec { zeta }),
            other => other,
        }
    }

    /// Turns MMPS's safeguards off (other methods are returned unchanged).
    pub fn without_safeguards(self) -> Self {
        match self {
            Self::Mmps(m) => Self::Mmps(MmpsSpec { safeguards: SafeguardSpec::none(), ..m }),
            other => other,
        }
    }

    /// The MMPS settings, if this is MMPS.
    pub fn mmps(&self) -> Option<&MmpsSpec> {
        match self {
            Self::Mmps(m) => Some(m),
            _ => None,
        }
    }

    /// The MMPS settings, mutable, if this is MMPS.
    pub fn mmps_mut(&mut self) -> Option<&mut MmpsSpec> {
        match self {
            Self::Mmps(m) => Some(m),
            _ => None,
        }
    }

    /// The Krylov solve, mutable, if the method has one.
    pub fn solver_mut(&mut self) -> Option<&mut SolverSpec> {
        match self {
            Self::Mmps(MmpsSpec { solver, .. })
            | Self::Pgdm(PgdmSpec { solver })
            | Self::Tmpd(TmpdSpec { solver })
            | Self::DiffPir(DiffPirSpec { solver, .. }) => Some(solver),
            Self::Dps(_) | Self::Tds(_) => None,
        }
    }

    /// The Krylov solve, if the method has one (every method but DPS).
    pub fn solver(&self) -> Option<&SolverSpec> {
        match self {
            Self::Mmps(MmpsSpec { solver, .. })
            | Self::Pgdm(PgdmSpec { solver })
            | Self::Tmpd(TmpdSpec { solver })
            | Self::DiffPir(DiffPirSpec { solver, .. }) => Some(solver),
            Self::Dps(_) | Self::Tds(_) => None,
        }
    }

    /// Whether building needs a Gaussian covariance Σ_x (`cov_x` as MMPS's covariance or fallback).
    pub fn needs_sigma_x(&self) -> bool {
        matches!(self, Self::Mmps(m) if m.covariance == Covariance::CovX
            || m.safeguards.fallback == Some(Covariance::CovX))
    }

    /// Whether the method is a sampler of its own (DPS, TDS) rather than a denoiser any sampler can use.
    pub fn is_sampler(&self) -> bool {
        matches!(self, Self::Dps(_) | Self::Tds(_))
    }

    /// Forwards and VJPs of one posterior-denoiser call (one DPS step), docs/method.md §5.8: MMPS with the
    /// Tweedie covariance and `n` CG/GMRES iterations 1 and `n` (BiCGSTAB `2n`; the last product comes from
    /// the solve); MMPS with a heuristic and PiGDM 1 and 1; TMPD 1 and 2; DiffPIR 1 and 0; DPS 1 and 1; TDS 1
    /// and 1 per level, batched over its `K` particles per observation (with the `tweedie` twist, 1 VJP per
    /// observed entry: multiply by `m`).
    pub fn cost_per_call(&self) -> StepCost {
        let vjps = match self {
            Self::Mmps(m) if m.covariance == Covariance::Tweedie => m.solver.applications(),
            Self::Mmps(_) | Self::Pgdm(_) | Self::Dps(_) | Self::Tds(_) => 1,
            Self::Tmpd(_) => 2,
            Self::DiffPir(_) => 0,
        };
        StepCost { forwards: 1, vjps }
    }

    /// Forwards and VJPs of one sampler step with `sampler` (its calls per step times
    /// [`PosteriorMethod::cost_per_call`]; DPS makes one call per step whatever the sampler).
    pub fn cost_per_step(&self, sampler: &SamplerSpec) -> StepCost {
        let calls = if self.is_sampler() { 1 } else { sampler.calls_per_step() };
        let c = self.cost_per_call();
        StepCost { forwards: c.forwards * calls, vjps: c.vjps * calls }
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`SamplingError::Config`] naming the field relative to the method: MMPS's `solver.iterations`,
    /// `solver.rtol`, `safeguards.fallback`, `safeguards.damping`; `dps.zeta`; `pgdm.solver.iterations`, …;
    /// `diffpir.lambda`.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Mmps(m) => m.validate(),
            Self::Dps(d) => {
                if d.zeta.is_finite() && d.zeta >= 0.0 {
                    Ok(())
                } else {
                    Err(SamplingError::config("dps.zeta", format!("must be finite and ≥ 0, got {}", d.zeta)))
                }
            }
            Self::Pgdm(p) => p.solver.validate_as("pgdm.solver.iterations", "pgdm.solver.rtol"),
            Self::Tmpd(t) => t.solver.validate_as("tmpd.solver.iterations", "tmpd.solver.rtol"),
            Self::DiffPir(d) => {
                if !(d.lambda.is_finite() && d.lambda > 0.0) {
                    return Err(SamplingError::config(
                        "diffpir.lambda",
                        format!("must be finite and > 0, got {}", d.lambda),
                    ));
                }
                d.solver.validate_as("diffpir.solver.iterations", "diffpir.solver.rtol")
            }
            Self::Tds(t) => t.validate(),
        }
    }

    /// The guidance wrappers' configurations for this method; `sigma_x` is Σ_x for `cov_x`.
    ///
    /// # Errors
    /// As [`PosteriorMethod::validate`]; [`SamplingError::Config`] when `cov_x` is used without `sigma_x`.
    pub fn resolve(&self, sigma_x: Option<&Dplr>) -> Result<crate::GuidanceConfig> {
        use crate::GuidanceConfig as G;
        self.validate()?;
        Ok(match self {
            Self::Mmps(m) => G::Mmps(m.mmps_config(sigma_x)?),
            Self::Dps(d) => G::Dps { zeta: d.zeta },
            Self::Pgdm(p) => G::Pgdm(PgdmConfig { solver: p.solver.to_solver() }),
            Self::Tmpd(t) => G::Tmpd(TmpdConfig { solver: t.solver.to_solver() }),
            Self::DiffPir(d) => G::DiffPir(DiffPirConfig { lambda: d.lambda, solver: d.solver.to_solver() }),
            Self::Tds(t) => G::Tds(t.to_config()),
        })
    }
}

impl fmt::Display for PosteriorMethod {
    /// The method's name, its solve and (DPS) ζ, e.g. `mmps (CG, 3 iterations)`, `dps (ζ = 1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.solver()) {
            (Self::Dps(d), _) => write!(f, "dps (ζ = {})", d.zeta),
            (Self::Tds(t), _) => write!(f, "tds (K = {}, {} twist)", t.particles, t.twist.name()),
            (Self::DiffPir(d), Some(s)) => {
                write!(f, "diffpir (λ = {}, {}, {} iterations)", d.lambda, s.method.label(), s.iterations)
            }
            (_, Some(s)) => write!(f, "{} ({}, {} iterations)", self.name(), s.method.label(), s.iterations),
            (_, None) => f.write_str(self.name()),
        }
    }
}

const MMPS_FIELDS: [&str; 3] = ["covariance", "solver", "safeguards"];
const TAGS: [&str; 5] = ["dps", "pgdm", "tmpd", "diffpir", "tds"];

impl Serialize for PosteriorMethod {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        fn tagged<S: Serializer, T: Serialize>(
            serializer: S,
            tag: &str,
            value: &T,
        ) -> std::result::Result<S::Ok, S::Error> {
            let mut m = serializer.serialize_map(Some(1))?;
            m.serialize_entry(tag, value)?;
            m.end()
        }
        match self {
            Self::Mmps(m) => m.serialize(serializer),
            Self::Dps(d) => tagged(serializer, "dps", d),
            Self::Pgdm(p) => tagged(serializer, "pgdm", p),
            Self::Tmpd(t) => tagged(serializer, "tmpd", t),
            Self::DiffPir(d) => tagged(serializer, "diffpir", d),
            Self::Tds(t) => tagged(serializer, "tds", t),
        }
    }
}

impl<'de> Deserialize<'de> for PosteriorMethod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(MethodVisitor)
    }
}

struct MethodVisitor;

impl<'de> Visitor<'de> for MethodVisitor {
    type Value = PosteriorMethod;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an MMPS object {covariance, solver, safeguards} or one of {dps: …}, {pgdm: …}, {tmpd: …}, {diffpir: …}, {tds: …}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<PosteriorMethod, A::Error> {
        let all: Vec<&'static str> = MMPS_FIELDS.iter().chain(TAGS.iter()).copied().collect();
        let unknown = |k: &str| {
            de::Error::unknown_field(
                k,
                &["covariance", "solver", "safeguards", "dps", "pgdm", "tmpd", "diffpir", "tds"],
            )
        };
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("covariance"));
        };
        if TAGS.contains(&first.as_str()) {
            let method = match first.as_str() {
                "dps" => PosteriorMethod::Dps(map.next_value()?),
                "pgdm" => PosteriorMethod::Pgdm(map.next_value()?),
                "tmpd" => PosteriorMethod::Tmpd(map.next_value()?),
                "tds" => PosteriorMethod::Tds(map.next_value()?),
                _ => PosteriorMethod::DiffPir(map.next_value()?),
            };
            if let Some(extra) = map.next_key::<String>()? {
                return Err(de::Error::custom(format!(
                    "a {first} method takes no other key, got `{extra}` beside it"
                )));
            }
            return Ok(method);
        }
        let (mut covariance, mut solver, mut safeguards) = (None, None, None);
        let mut key = Some(first);
        while let Some(k) = key {
            match k.as_str() {
                "covariance" if covariance.is_none() => covariance = Some(map.next_value()?),
                "solver" if solver.is_none() => solver = Some(map.next_value()?),
                "safeguards" if safeguards.is_none() => safeguards = Some(map.next_value()?),
                "covariance" => return Err(de::Error::duplicate_field("covariance")),
                "solver" => return Err(de::Error::duplicate_field("solver")),
                "safeguards" => return Err(de::Error::duplicate_field("safeguards")),
                other if all.contains(&other) => {
                    return Err(de::Error::custom(format!(
                        "`{other}` names a method of its own: it cannot stand beside MMPS's fields"
                    )))
                }
                other => return Err(unknown(other)),
            }
            key = map.next_key::<String>()?;
        }
        Ok(PosteriorMethod::Mmps(MmpsSpec {
            covariance: covariance.ok_or_else(|| de::Error::missing_field("covariance"))?,
            solver: solver.ok_or_else(|| de::Error::missing_field("solver"))?,
            safeguards: safeguards.unwrap_or_default(),
        }))
    }
}
