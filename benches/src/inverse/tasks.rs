//! The four linear inverse problems of docs/method.md §9d and their measurements.
//!
//! | task | operator (at 256) | σ_y |
//! | --- | --- | --- |
//! | `box` | one 128×128 hole per image, top-left corner uniform in `[16, 112)²` | 1.0 |
//! | `random` | exactly `⌊0.98·H·W⌋` pixels deleted per image without replacement, shared by the channels | 0.01 |
//! | `motion` | one 61×61 motion kernel (intensity 0.5) per run, reflect padding 30, depthwise | 0.1 |
//! | `sr4` | 4× antialiased bicubic down-sampling (256 → 64) | 0.1 |
//!
//! Noise goes on every entry of `A x` (docs/method.md §1). For images smaller than 256 the box side, the margin and
//! the kernel size scale by `size/256` ([`TaskGeometry::for_size`]): the box side and margin are rounded, the
//! kernel size is rounded to the nearest odd number ≥ 3; the SR factor stays 4 (the size must be divisible by
//! 4). Random draws come from `StdRng` seeded with the run's seed (operator) and `seed + NOISE_SEED_OFFSET`
//! (noise), so every method sees the same measurement.

use diem_operators::{Blur, Boundary, Downsample, LinearOperator, Mask, NoiseCov, Observation};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{BenchError, Result};

/// Added to the run's seed to seed the observation noise (the operator uses the seed itself).
pub const NOISE_SEED_OFFSET: u64 = 1_000_003;

/// One of the four tasks of Table 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Box inpainting.
    Box,
    /// Random inpainting (98 % of the pixels deleted).
    Random,
    /// Motion deblurring.
    Motion,
    /// 4× bicubic super-resolution.
    Sr4,
}

/// Sizes of the task operators for one image size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskGeometry {
    /// Image side.
    pub size: i64,
    /// Box side (128 at 256).
    pub box_side: i64,
    /// Box margin (16 at 256).
    pub margin: i64,
    /// Motion kernel side (61 at 256), odd.
    pub kernel: i64,
    /// Pixels deleted by random inpainting, `⌊0.98 · size²⌋`.
    pub deletions: i64,
    /// Super-resolution factor (4).
    pub sr_factor: i64,
}

impl TaskGeometry {
    /// The geometry of `size × size` images (see the module docs for the scaling rule).
    ///
    /// # Errors
    /// [`BenchError::Config`] when `size < 16` or `size` is not divisible by 4.
    pub fn for_size(size: i64) -> Result<Self> {
        if size < 16 || size % 4 != 0 {
            return Err(BenchError::config("--size", format!("must be ≥ 16 and divisible by 4, got {size}")));
        }
        let f = size as f64 / 256.0;
        let box_side = ((128.0 * f).round() as i64).max(1);
        let margin = (16.0 * f).round() as i64;
        let k = (61.0 * f).round() as i64;
        let kernel = (if k % 2 == 0 { k + 1 } else { k }).max(3);
        // ⌊0.98 · size²⌋ in integer arithmetic (exact: 64,225 at 256).
        let deletions = 98 * size * size / 100;
        Ok(Self { size, box_side, margin, kernel, deletions, sr_factor: 4 })
    }
}

impl Task {
    /// All tasks in Table 4's column order.
    pub const ALL: [Self; 4] = [Self::Box, Self::Random, Self::Motion, Self::Sr4];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Box => "box",
            Self::Random => "random",
            Self::Motion => "motion",
            Self::Sr4 => "sr4",
        }
    }

    /// The column title of Table 4.
    pub fn title(self) -> &'static str {
        match self {
            Self::Box => "box inpainting",
            Self::Random => "random inpainting",
            Self::Motion => "motion deblur",
            Self::Sr4 => "super resolution",
        }
    }

    /// Parses [`Task::name`].
    ///
    /// # Errors
    /// [`BenchError::Config`] for an unknown name.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| {
            BenchError::config("--tasks", format!("unknown task {name:?} (box, random, motion, sr4)"))
        })
    }

    /// The observation noise σ_y (docs/method.md §9d).
    pub fn sigma_y(self) -> f64 {
        match self {
            Self::Box => 1.0,
            Self::Random => 0.01,
            Self::Motion | Self::Sr4 => 0.1,
        }
    }

    /// The operator for `n` images of shape `[3, size, size]`, drawn from `seed` (per-image boxes and masks;
    /// one motion kernel shared by the run; a shared down-sampling).
    ///
    /// # Errors
    /// Geometry and operator construction errors.
    pub fn operator(self, n: i64, size: i64, seed: u64) -> Result<Box<dyn LinearOperator>> {
        let g = TaskGeometry::for_size(size)?;
        let shape = [3, size, size];
        Ok(match self {
            Self::Box => {
                Box::new(Mask::random_box(n, &shape, (g.box_side, g.box_side), (g.margin, g.margin), seed)?)
            }
            Self::Random => Box::new(Mask::exact_deletions(n, &shape, g.deletions, seed)?),
            Self::Motion => Box::new(Blur::random_motion(1, &shape, g.kernel, 0.5, Boundary::Reflect, seed)?),
            Self::Sr4 => Box::new(Downsample::bicubic(&shape, g.sr_factor)?),
        })
    }

    /// Simulates `y = A x + ε` for the clean images `x : [N, 3, S, S]` (noise on every entry, docs/method.md §1).
    ///
    /// # Errors
    /// Operator and shape errors.
    pub fn measure(self, x: &Tensor, seed: u64) -> Result<Observation> {
        let size = x.size();
        if size.len() != 4 || size[1] != 3 || size[2] != size[3] {
            return Err(BenchError::config("images", format!("expected [N, 3, S, S], got {size:?}")));
        }
        let op = self.operator(size[0], size[2], seed)?;
        let noise = NoiseCov::isotropic(self.sigma_y())?;
        Ok(Observation::simulate(x, op, noise, seed.wrapping_add(NOISE_SEED_OFFSET))?)
    }

    /// What the image grid shows for an observation `y : [N, ..]` of `x : [N, 3, S, S]`: `Aᵀ y` for the masks
    /// (holes shown as 0, i.e. grey), `y` for the blur, and `y` enlarged by pixel repetition for SR.
    pub fn display(self, obs: &Observation) -> Tensor {
        let _guard = tch::no_grad_guard();
        match self {
            Self::Box | Self::Random => obs.operator.adjoint(&obs.y),
            Self::Motion => obs.y.shallow_clone(),
            Self::Sr4 => {
                let k = obs.operator.x_shape()[1] / obs.operator.y_shape()[1];
                obs.y.repeat_interleave_self_int(k, 2, None).repeat_interleave_self_int(k, 3, None)
            }
        }
    }
}
