//! Learning-rate schedules (docs/method.md §8).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shape of the learning rate over a run of `S` optimizer steps, as a function of
/// `progress = min((s + 1)/(S + 1), 1)` at step `s` (0-based) (docs/method.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// `lr = lr_init`.
    Constant,
    /// `lr = lr_init + (end − lr_init) · progress`.
    Linear {
        /// The learning rate approached at the end of the run.
        end: f64,
    },
    /// `lr = lr_init · (end / lr_init)^progress` (geometric interpolation).
    Exponential {
        /// The learning rate approached at the end of the run.
        end: f64,
    },
}

/// The learning rate: initial value, schedule and an optional linear warm-up (docs/method.md §8 has none by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrConfig {
    /// `lr_init`.
    pub init: f64,
    /// The schedule.
    pub schedule: LrSchedule,
    /// Warm-up length W: the scheduled value is multiplied by `min((s + 1)/W, 1)`; 0 = no warm-up.
    #[serde(default)]
    pub warmup_steps: usize,
}

impl LrConfig {
    /// A constant learning rate.
    pub fn constant(init: f64) -> Self {
        Self { init, schedule: LrSchedule::Constant, warmup_steps: 0 }
    }

    /// A linear decay from `init` to `end`.
    pub fn linear(init: f64, end: f64) -> Self {
        Self { init, schedule: LrSchedule::Linear { end }, warmup_steps: 0 }
    }

    /// Checks that every rate is finite and positive (`end ≥ 0` for linear, `> 0` for exponential).
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.init.is_finite() && self.init > 0.0) {
            return Err(Error::config("lr.init", format!("must be finite and > 0, got {}", self.init)));
        }
        match self.schedule {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Linear { end } if end.is_finite() && end >= 0.0 => Ok(()),
            LrSchedule::Exponential { end } if end.is_finite() && end > 0.0 => Ok(()),
            LrSchedule::Linear { end } | LrSchedule::Exponential { end } => {
                Err(Error::config("lr.schedule.end", format!("must be finite and positive, got {end}")))
            }
        }
    }

    /// The learning rate at optimizer step `step` (0-based) of a run of `total` steps (docs/method.md §8):
    /// `progress = min((step + 1)/(total + 1), 1)`, then the schedule, then the warm-up factor.
    pub fn at(&self, step: usize, total: usize) -> f64 {
        let progress = ((step + 1) as f64 / (total + 1) as f64).min(1.0);
        let lr = match self.schedule {
            LrSchedule::Constant => self.init,
            LrSchedule::Linear { end } => self.init + (end - self.init) * progress,
            LrSchedule::Exponential { end } => self.init * (end / self.init).powf(progress),
        };
        if self.warmup_steps > 0 {
            lr * ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_the_progress_formula() {
        let total = 9; // progress = (s+1)/10
        let c = LrConfig::constant(2e-4);
        assert_eq!(c.at(0, total), 2e-4);
        assert_eq!(c.at(100, total), 2e-4);
        let l = LrConfig::linear(1e-3, 1e-6);
        assert!((l.at(0, total) - (1e-3 + (1e-6 - 1e-3) * 0.1)).abs() < 1e-15);
        assert!((l.at(8, total) - (1e-3 + (1e-6 - 1e-3) * 0.9)).abs() < 1e-15);
        // Never reaches `end` inside the run; clamps at it afterwards.
        assert!(l.at(total - 1, total) > 1e-6);
        assert!((l.at(50, total) - 1e-6).abs() < 1e-18);
        let e = LrConfig { init: 1e-2, schedule: LrSchedule::Exponential { end: 1e-4 }, warmup_steps: 0 };
        assert!((e.at(4, total) - 1e-3).abs() < 1e-15); // progress 1/2: geometric mean
        let w = LrConfig { warmup_steps: 4, ..LrConfig::constant(1.0) };
        assert_eq!([w.at(0, 100), w.at(1, 100), w.at(3, 100), w.at(10, 100)], [0.25, 0.5, 1.0, 1.0]);
    }

    #[test]
    fn validation_names_fields() {
        let err = LrConfig::constant(-1.0).validate().unwrap_err().to_string();
        assert!(err.contains("lr.init"), "{err}");
        let err = LrConfig { schedule: LrSchedule::Exponential { end: 0.0 }, ..LrConfig::constant(1.0) }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr.schedule.end"), "{err}");
    }
}
