//! Exponential moving average of the weights (docs/method.md §8).

use tch::{nn, Tensor};

use crate::error::{Error, Result};

/// `θ_ema ← θ_ema + (1 − decay)(θ − θ_ema)` after every optimizer step (docs/method.md §8), over every named
/// variable of a [`nn::VarStore`].
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    /// (name, live variable, average), sorted by name.
    entries: Vec<(String, Tensor, Tensor)>,
}

impl Ema {
    /// Starts an average at the current weights of `vs` ("reset to the current weights at lap start").
    ///
    /// # Errors
    /// [`Error::Config`] unless `0 ≤ decay < 1`.
    pub fn new(vs: &nn::VarStore, decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::config("ema_decay", format!("must lie in [0, 1), got {decay}")));
        }
        let mut entries: Vec<_> = vs
            .variables()
            .into_iter()
            .map(|(name, var)| {
                let avg = var.detach().copy();
                (name, var, avg)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { decay, entries })
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// One EMA update from the live variables.
    pub fn update(&mut self) {
        let _guard = tch::no_grad_guard();
        let w = 1.0 - self.decay;
        for (_, var, avg) in &mut self.entries {
            let _ = avg.lerp_(var, w);
        }
    }

    /// The averaged weights, `(name, tensor)` sorted by name.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.entries.iter().map(|(n, _, a)| (n.clone(), a.shallow_clone())).collect()
    }

    /// Overwrites the averaged weights (e.g. from a checkpoint).
    ///
    /// # Errors
    /// [`Error::Weights`] (with `source` as the path) when a name is missing or a shape differs.
    pub fn set_tensors(&mut self, source: &std::path::Path, tensors: &[(String, Tensor)]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (name, _, avg) in &mut self.entries {
            let Some((_, t)) = tensors.iter().find(|(n, _)| n == name) else {
                return Err(Error::Weights {
                    path: source.into(),
                    name: name.clone(),
                    reason: "missing".into(),
                });
            };
            if t.size() != avg.size() {
                return Err(Error::Weights {
                    path: source.into(),
                    name: name.clone(),
                    reason: format!("shape {:?}, expected {:?}", t.size(), avg.size()),
                });
            }
            avg.f_copy_(t)?;
        }
        Ok(())
    }

    /// Exchanges the averaged weights and the live variables (its own inverse): after one call the model
    /// holds the EMA weights and the EMA the live ones; a second call restores both. Used to evaluate the EMA
    /// model in the middle of training without losing the live weights or the average.
    pub fn swap_with_model(&self) {
        let _guard = tch::no_grad_guard();
        for (_, var, avg) in &self.entries {
            let live = var.copy();
            let mut v = var.shallow_clone();
            v.copy_(avg);
            let mut a = avg.shallow_clone();
            a.copy_(&live);
        }
    }

    /// Copies the averaged weights into the live variables (to sample with, or to start the next lap from).
    pub fn copy_to_model(&self) {
        let _guard = tch::no_grad_guard();
        for (_, var, avg) in &self.entries {
            let mut v = var.shallow_clone();
            v.copy_(avg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn swap_with_model_is_its_own_inverse() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut w = vs.root().zeros("w", &[3]);
        let ema = Ema::new(&vs, 0.5).unwrap();
        tch::no_grad(|| w.copy_(&Tensor::from_slice(&[1.0f32, 2.0, 3.0])));
        ema.swap_with_model();
        assert!(w.equal(&Tensor::zeros([3], (Kind::Float, Device::Cpu))), "the model holds the average");
        ema.swap_with_model();
        assert!(w.equal(&Tensor::from_slice(&[1.0f32, 2.0, 3.0])), "the live weights are back");
        ema.copy_to_model();
        assert!(w.equal(&Tensor::zeros([3], (Kind::Float, Device::Cpu))), "the average survived both swaps");
    }

    #[test]
    fn update_is_the_convex_recursion() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut w = vs.root().zeros("w", &[3]);
        let mut ema = Ema::new(&vs, 0.9).unwrap();
        tch::no_grad(|| w.copy_(&Tensor::ones([3], (Kind::Float, Device::Cpu))));
        ema.update();
        ema.update();
        // 0 → 0.1 → 0.19
        let v = ema.tensors()[0].1.double_value(&[1]);
        assert!((v - 0.19).abs() < 1e-6, "{v}");
        ema.copy_to_model();
        assert!((w.double_value(&[0]) - 0.19).abs() < 1e-6);
        assert!(Ema::new(&vs, 1.0).is_err());
    }
}
