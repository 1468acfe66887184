//! The time grid shared by all samplers (docs/method.md §4.1).

use crate::error::{Result, SamplingError};

/// A strictly decreasing sequence of times `t_0 > t_1 > … > t_T` in `[0, 1]`; step `k` maps `x_{t_k}` to
/// `x_{t_{k+1}}` (docs/method.md §4.1).
///
/// The default grid is uniform, `t_k = 1 − k/T` ([`TimeGrid::uniform`]); the authors' code writes it as
/// `times = linspace(1, 1/T, T), s = t − 1/T`. Custom grids (e.g. a truncated start) come from
/// [`TimeGrid::from_times`]. After the last step, samplers make one final denoiser call at `σ(t_T)` (σ(0) = σ_min
/// for the uniform grid).
///
/// ```
/// use diem_sampling::TimeGrid;
/// let grid = TimeGrid::uniform(4)?;
/// assert_eq!(grid.times(), &[1.0, 0.75, 0.5, 0.25, 0.0]);
/// assert_eq!(grid.steps(), 4);
/// # Ok::<(), diem_sampling::SamplingError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TimeGrid {
    times: Vec<f64>,
}

impl TimeGrid {
    /// The uniform grid `t_k = 1 − k/T`, `k = 0..T` (docs/method.md §4.1).
    ///
    /// # Errors
    /// [`SamplingError::Config`] when `steps` is 0.
    pub fn uniform(steps: usize) -> Result<Self> {
        Self::uniform_between(1.0, 0.0, steps)
    }

    /// The uniform grid from `start` down to `stop` in `steps` steps.
    ///
    /// # Errors
    /// [`SamplingError::Config`] unless `steps ≥ 1` and `1 ≥ start > stop ≥ 0`.
    pub fn uniform_between(start: f64, stop: f64, steps: usize) -> Result<Self> {
        if steps == 0 {
            return Err(SamplingError::config("TimeGrid.steps", "must be at least 1"));
        }
        let n = steps as f64;
        let times = (0..=steps)
            .map(|k| if k == steps { stop } else { start + (stop - start) * (k as f64 / n) })
            .collect();
        Self::from_times(times)
    }

    /// A custom grid.
    ///
    /// # Errors
    /// [`SamplingError::Config`] unless there are at least two times, all finite, in `[0, 1]` and strictly
    /// decreasing.
    pub fn from_times(times: Vec<f64>) -> Result<Self> {
        if times.len() < 2 {
            return Err(SamplingError::config(
                "TimeGrid.times",
                format!("needs at least 2 times (one step), got {}", times.len()),
            ));
        }
        if let Some(t) = times.iter().find(|t| !(t.is_finite() && (0.0..=1.0).contains(*t))) {
            return Err(SamplingError::config("TimeGrid.times", format!("must lie in [0, 1], got {t}")));
        }
        if let Some(w) = times.windows(2).find(|w| w[1] >= w[0]) {
            return Err(SamplingError::config(
                "TimeGrid.times",
                format!("must be strictly decreasing, got {} then {}", w[0], w[1]),
            ));
        }
        Ok(Self { times })
    }

    /// The times `t_0 > … > t_T`.
    pub fn times(&self) -> &[f64] {
        &self.times
    }

    /// The number of steps `T`.
    pub fn steps(&self) -> usize {
        self.times.len() - 1
    }

    /// The consecutive pairs `(t_k, t_{k+1})`.
    pub fn pairs(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.times.windows(2).map(|w| (w[0], w[1]))
    }

    /// The first (largest) time `t_0`.
    pub fn start(&self) -> f64 {
        self.times[0]
    }

    /// The last (smallest) time `t_T`, where the final denoise happens.
    pub fn end(&self) -> f64 {
        self.times[self.times.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_grid_matches_the_reference() {
        let g = TimeGrid::uniform(8).unwrap();
        assert_eq!(g.steps(), 8);
        assert_eq!(g.start(), 1.0);
        assert_eq!(g.end(), 0.0);
        for (k, (t, s)) in g.pairs().enumerate() {
            assert!((t - (1.0 - k as f64 / 8.0)).abs() < 1e-15);
            assert!((t - s - 1.0 / 8.0).abs() < 1e-15);
        }
    }

    #[test]
    fn rejects_bad_grids() {
        assert!(TimeGrid::uniform(0).is_err());
        assert!(TimeGrid::from_times(vec![1.0]).is_err());
        assert!(TimeGrid::from_times(vec![1.0, 1.0]).is_err());
        assert!(TimeGrid::from_times(vec![0.5, 0.7]).is_err());
        assert!(TimeGrid::from_times(vec![1.5, 0.0]).is_err());
        assert!(TimeGrid::from_times(vec![1.0, f64::NAN]).is_err());
        assert!(TimeGrid::uniform_between(0.2, 0.5, 3).is_err());
        let g = TimeGrid::uniform_between(0.8, 0.2, 3).unwrap();
        assert!((g.times()[1] - 0.6).abs() < 1e-15 && g.end() == 0.2);
    }
}
