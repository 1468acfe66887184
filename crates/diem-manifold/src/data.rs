//! The manifold experiment's data (docs/method.md §9a): ground truth on a random smooth curve in R^5, one random
//! 2×5 projection with unit-sphere rows per point, isotropic noise σ_y = 1e-2, and the two disjoint
//! ground-truth subsets the Sinkhorn metric compares against.

use diem_models::{Randman, RandmanConfig};
use diem_operators::{NoiseCov, Observation, Projection};
use tch::{Device, Kind, Tensor};

use crate::config::DataConfig;
use crate::error::{ManifoldError, Result};

/// Ground truth, observations and the metric's reference sets.
#[derive(Debug)]
pub struct ManifoldData {
    /// The ground-truth points `x_i`, `[S, n]` f32, every feature spanning exactly `[−2, 2]`.
    pub truth: Tensor,
    /// The observations `y_i = A_i x_i + σ_y ε_i` with their per-point projections `A_i ∈ R^{2×n}`.
    pub observation: Observation,
    /// `u1`: the first `metric_points` ground-truth points.
    pub u1: Tensor,
    /// `u2`: the last `metric_points` ground-truth points (disjoint from `u1`).
    pub u2: Tensor,
}

impl ManifoldData {
    /// Generates the data of docs/method.md §9a from `config` on `device`:
    ///
    /// ```text
    /// x_i = randman(z_i),  z_i ~ U(0, 1)      (m = 1, α = 3, ε = 1e-3, features normalized to [−2, 2])
    /// A_i ∈ R^{2×n}, rows ~ N(0, I_n) / ||·||  (uniform on the unit sphere)
    /// y_i = A_i x_i + σ_y ε_i,  ε_i ~ N(0, I_2)
    /// u1 = x_{1..M},  u2 = x_{S−M+1..S}        (M = metric_points ≤ S/2, so they are disjoint)
    /// ```
    ///
    /// Every random draw derives from `config.seed`, so the data are the same on every run and device.
    ///
    /// # Errors
    /// [`ManifoldError::Config`] when `metric_points` exceeds half the points or a size is not positive;
    /// generator and operator errors otherwise.
    pub fn generate(config: &DataConfig, metric_points: i64, device: Device) -> Result<Self> {
        config.validate()?;
        if metric_points < 2 || 2 * metric_points > config.points {
            return Err(ManifoldError::config(
                "metric.points",
                format!(
                    "must lie in [2, points / 2] = [2, {}] so that u1 and u2 are disjoint, got {metric_points}",
                    config.points / 2
                ),
            ));
        }
        let seed = config.seed;
        let manifold =
            Randman::new(RandmanConfig::new(config.manifold_dim, config.ambient_dim), seed.wrapping_add(1))?;
        let (_, points) = manifold.sample(config.points, seed.wrapping_add(2))?;
        let truth = points.to_kind(Kind::Float).to_device(device);
        let projection = Projection::random_sphere(
            config.points,
            config.observed_dim,
            config.ambient_dim,
            seed.wrapping_add(3),
        )?;
        let noise = NoiseCov::isotropic(config.noise_std)?;
        let observation = Observation::simulate(&truth, Box::new(projection), noise, seed.wrapping_add(4))?;
        let u1 = truth.narrow(0, 0, metric_points);
        let u2 = truth.narrow(0, config.points - metric_points, metric_points);
        Ok(Self { truth, observation, u1, u2 })
    }

    /// The number of points `S`.
    pub fn len(&self) -> i64 {
        self.truth.size()[0]
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ambient dimension n.
    pub fn dim(&self) -> i64 {
        self.truth.size()[1]
    }
}

/// Keeps the rows of `x: [N, n]` whose every coordinate lies strictly inside `(−bound, bound)`
/// (docs/method.md §8–9a: the manifold's filter uses bound = 3). Returns the kept rows (possibly none).
pub fn filter_inside(x: &Tensor, bound: f64) -> Tensor {
    let inside = x.abs().lt(bound).all_dim(1, false);
    x.index_select(0, &inside.nonzero().squeeze_dim(1))
}

/// `x: [N, n]` as a row-major host vector of f64 (for plots and reports).
///
/// # Errors
/// [`ManifoldError::Torch`] if the tensor cannot be copied to the host.
pub fn to_host(x: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(x.to_kind(Kind::Double).to_device(Device::Cpu).flatten(0, -1))?)
}
