//! [`SamplerSpec`]: a reverse-diffusion sampler as data (docs/method.md §4), with its names, validation, cost
//! in denoiser calls and the sampler it builds.

use std::fmt;

use diem_models::Schedule;
use serde::{Deserialize, Serialize};

use super::MAX_STEPS;
use crate::error::{Result, SamplingError};
use crate::sampler::{Sampler, TimeGrid};
use crate::{Ddim, Ddpm, DpmPp2m, Euler, Heun, PredictorCorrector};

/// A reverse-diffusion sampler as configured (docs/method.md §4), externally tagged:
/// `{"ddpm": {"steps": 256}}`, `{"ddim": {"steps": 256}}`, `{"pc": {"steps": 4096, "corrections": 1, "tau": 0.1}}`,
/// and the probability-flow ODE solvers of docs/method.md §4.5: `{"euler": {"steps": 64}}`,
/// `{"heun": {"steps": 32}}`, `{"dpmpp2m": {"steps": 32}}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerSpec {
    /// DDPM (η = 1), docs/method.md §4.2.
    Ddpm {
        /// Steps T.
        steps: usize,
    },
    /// DDIM (η = 0), docs/method.md §4.3.
    Ddim {
        /// Steps T.
        steps: usize,
    },
    /// Predictor-corrector, docs/method.md §4.4.
    Pc {
        /// Steps T.
        steps: usize,
        /// Langevin corrections C per step.
        corrections: usize,
        /// Langevin step τ_L.
        tau: f64,
    },
    /// Euler on the probability-flow ODE (= DDIM with η = 0 in VE), docs/method.md §4.5.
    Euler {
        /// Steps T.
        steps: usize,
    },
    /// Heun (EDM's second-order solver, two denoiser calls per step), docs/method.md §4.5.
    Heun {
        /// Steps T.
        steps: usize,
    },
    /// DPM-Solver++(2M) (second order, multistep, one denoiser call per step), docs/method.md §4.5.
    Dpmpp2m {
        /// Steps T.
        steps: usize,
    },
}

impl SamplerSpec {
    /// The names [`SamplerSpec::from_name`] accepts.
    pub const NAMES: [&'static str; 6] = ["ddpm", "ddim", "pc", "euler", "heun", "dpmpp2m"];

    /// The sampler named `"ddpm"`, `"ddim"`, `"pc"` (one Langevin correction with τ = 0.1), `"euler"`,
    /// `"heun"` or `"dpmpp2m"` with `steps` steps.
    ///
    /// # Errors
    /// [`SamplingError::Config`] (field `sampler`) for another name.
    pub fn from_name(name: &str, steps: usize) -> Result<Self> {
        Ok(match name {
            "ddpm" => Self::Ddpm { steps },
            "ddim" => Self::Ddim { steps },
            "pc" => Self::Pc { steps, corrections: 1, tau: 0.1 },
            "euler" => Self::Euler { steps },
            "heun" => Self::Heun { steps },
            "dpmpp2m" => Self::Dpmpp2m { steps },
            other => {
                return Err(SamplingError::config(
                    "sampler",
                    format!("unknown sampler {other:?} (expected one of {})", Self::NAMES.join(", ")),
                ))
            }
        })
    }

    /// The number of steps T.
    pub fn steps(&self) -> usize {
        match *self {
            Self::Ddpm { steps }
            | Self::Ddim { steps }
            | Self::Pc { steps, .. }
            | Self::Euler { steps }
            | Self::Heun { steps }
            | Self::Dpmpp2m { steps } => steps,
        }
    }

    /// The same sampler with `steps` steps (its other settings kept).
    pub fn with_steps(self, steps: usize) -> Self {
        match self {
            Self::Ddpm { .. } => Self::Ddpm { steps },
            Self::Ddim { .. } => Self::Ddim { steps },
            Self::Pc { corrections, tau, .. } => Self::Pc { steps, corrections, tau },
            Self::Euler { .. } => Self::Euler { steps },
            Self::Heun { .. } => Self::Heun { steps },
            Self::Dpmpp2m { .. } => Self::Dpmpp2m { steps },
        }
    }

    /// Denoiser calls per step (`1 + C` for PC, 2 for Heun).
    pub fn calls_per_step(&self) -> usize {
        match *self {
            Self::Ddpm { .. } | Self::Ddim { .. } | Self::Euler { .. } | Self::Dpmpp2m { .. } => 1,
            Self::Heun { .. } => 2,
            Self::Pc { corrections, .. } => 1 + corrections,
        }
    }

    /// Checks the step count (`1..=`[`MAX_STEPS`]) and PC's τ (in `(0, 1]`).
    ///
    /// # Errors
    /// [`SamplingError::Config`] naming `steps` or `pc.tau`.
    pub fn validate(&self) -> Result<()> {
        if self.steps() == 0 || self.steps() > MAX_STEPS {
            return Err(SamplingError::config(
                "steps",
                format!("must lie in 1..={MAX_STEPS}, got {}", self.steps()),
            ));
        }
        if let Self::Pc { tau, .. } = *self {
            if !(tau > 0.0 && tau <= 1.0) {
                return Err(SamplingError::config("pc.tau", format!("must lie in (0, 1], got {tau}")));
            }
        }
        Ok(())
    }

    /// Builds the sampler on `schedule` with the uniform grid of T steps.
    ///
    /// # Errors
    /// [`SamplingError::Config`] for zero steps or a bad τ.
    pub fn build(&self, schedule: impl Schedule + 'static) -> Result<Box<dyn Sampler>> {
        let grid = TimeGrid::uniform(self.steps())?;
        Ok(match *self {
            Self::Ddpm { .. } => Box::new(Ddpm::new(schedule, grid)),
            Self::Ddim { .. } => Box::new(Ddim::new(schedule, grid)),
            Self::Pc { corrections, tau, .. } => {
                Box::new(PredictorCorrector::new(schedule, grid, corrections, tau)?)
            }
            Self::Euler { .. } => Box::new(Euler::new(schedule, grid)),
            Self::Heun { .. } => Box::new(Heun::new(schedule, grid)),
            Self::Dpmpp2m { .. } => Box::new(DpmPp2m::new(schedule, grid)),
        })
    }
}

impl fmt::Display for SamplerSpec {
    /// `DDPM, T = 256`, `DDIM, T = 64`, `PC, T = 4096, C = 1, τ = 0.1`, `Euler, T = 64`, `Heun, T = 32`,
    /// `DPM-Solver++(2M), T = 32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Ddpm { steps } => write!(f, "DDPM, T = {steps}"),
            Self::Ddim { steps } => write!(f, "DDIM, T = {steps}"),
            Self::Pc { steps, corrections, tau } => {
                write!(f, "PC, T = {steps}, C = {corrections}, τ = {tau}")
            }
            Self::Euler { steps } => write!(f, "Euler, T = {steps}"),
            Self::Heun { steps } => write!(f, "Heun, T = {steps}"),
            Self::Dpmpp2m { steps } => write!(f, "DPM-Solver++(2M), T = {steps}"),
        }
    }
}
