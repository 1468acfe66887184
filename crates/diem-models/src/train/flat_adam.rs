//! Adam over one flat buffer: the opt-in "fused" optimizer of [`super::AdamConfig::fused`].
//!
//! libtorch's C++ Adam (what `tch::nn::Adam` runs) loops over the parameter tensors and launches about six
//! kernels per tensor, and the global-norm clipping adds three more per tensor; PyTorch's `_fused_adam_` and
//! `_foreach_*` kernels that would update every tensor in one call are not in tch 0.24's generated API. This
//! optimizer gets the same effect from plain tch ops: at construction the trainable variables are moved into one
//! contiguous buffer (each variable becomes a view of it, with its values unchanged), the moments live in two
//! more buffers of the same length, and a step is a fixed dozen kernels whatever the number of tensors:
//!
//! ```text
//! g  = cat(∇θ)                          (the gradients, flattened into a preallocated buffer)
//! n  = ‖g‖₂;  g ← g · min(c / (n + 1e-6), 1)            (global-norm clipping, as clip_grad_norm_)
//! g ← g + λ θ                            (coupled weight decay; decoupled: θ ← θ (1 − η λ))
//! m ← m + (1 − β1)(g − m)               (= β1 m + (1 − β1) g)
//! v ← v + (1 − β2)(g² − v)              (= β2 v + (1 − β2) g²)
//! θ ← θ − η/(1 − β1ᵗ) · m / (sqrt(v) / sqrt(1 − β2ᵗ) + ε)
//! ```
//!
//! It is the same algorithm as libtorch's Adam (Kingma & Ba 2015, Algorithm 1, with PyTorch's placement of ε),
//! but not bit for bit: the moment updates are written as interpolations (as PyTorch's own `foreach` and fused
//! Adam do), and the norm is one reduction over the whole buffer instead of a sum of per-tensor sums. Two
//! differences in behaviour: a variable without a gradient in a step counts as a zero gradient (its moments
//! decay and it still moves), where libtorch's Adam skips it; and the variables stay views of the buffer after
//! the trainer is gone (harmless: their values, shapes and names are unchanged).

use tch::Tensor;

use super::AdamConfig;
use crate::error::{Error, Result};

/// Adam on one flat buffer holding every trainable variable (see the module documentation).
#[derive(Debug)]
pub(crate) struct FlatAdam {
    /// The variables, now views of `flat`.
    params: Vec<Tensor>,
    /// Their element counts, in order.
    numels: Vec<i64>,
    /// Every variable's values, back to back.
    flat: Tensor,
    /// The gradient buffer `g`.
    grad: Tensor,
    /// First and second moments.
    m: Tensor,
    v: Tensor,
    config: AdamConfig,
    /// Steps taken.
    t: i32,
}

impl FlatAdam {
    /// Moves `params` (the trainable variables, all of one kind and device) into one buffer.
    ///
    /// # Errors
    /// [`Error::Config`] when there are no variables or they differ in kind or device.
    pub(crate) fn new(params: &[Tensor], config: AdamConfig) -> Result<Self> {
        let first = params.first().ok_or_else(|| Error::config("adam.fused", "no trainable variables"))?;
        let (kind, device) = (first.kind(), first.device());
        if params.iter().any(|p| p.kind() != kind || p.device() != device) {
            return Err(Error::config(
                "adam.fused",
                "the fused optimizer needs every trainable variable of one kind and device",
            ));
        }
        let numels: Vec<i64> = params.iter().map(|p| p.numel() as i64).collect();
        let total: i64 = numels.iter().sum();
        let flat = Tensor::empty([total], (kind, device));
        let mut params: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
        tch::no_grad(|| {
            let mut offset = 0;
            for (p, &n) in params.iter_mut().zip(&numels) {
                let size = p.size();
                flat.narrow(0, offset, n).copy_(&p.reshape([n]));
                let stride = contiguous_strides(&size);
                // The variable (the same tensor the VarStore and the layers hold) now lives in the buffer.
                let _ =
                    p.f_set_source_tensor_storage_offset_(&flat, offset, size.as_slice(), stride.as_slice())?;
                offset += n;
            }
            Ok::<_, tch::TchError>(())
        })?;
        Ok(Self {
            params,
            numels,
            grad: Tensor::zeros([total], (kind, device)),
            m: Tensor::zeros([total], (kind, device)),
            v: Tensor::zeros([total], (kind, device)),
            flat,
            config,
            t: 0,
        })
    }

    /// Gathers the gradients into the buffer and returns their global norm (before clipping), as a scalar
    /// tensor; scales them by `min(clip / (norm + 1e-6), 1)` when `clip` is given.
    pub(crate) fn gather_and_clip(&mut self, clip: Option<f64>) -> Tensor {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .zip(&self.numels)
                .map(|(p, &n)| {
                    let g = p.grad();
                    if g.defined() {
                        g.reshape([n])
                    } else {
                        Tensor::zeros([n], (self.flat.kind(), self.flat.device()))
                    }
                })
                .collect();
            let _ = Tensor::cat_out(&self.grad, &grads, 0);
            let norm = self.grad.norm();
            if let Some(max) = clip {
                let coef = ((&norm + 1e-6).reciprocal() * max).clamp_max(1.0);
                let _ = self.grad.g_mul_(&coef);
            }
            norm
        })
    }

    /// One Adam step with learning rate `lr` on the gathered (and clipped) gradients.
    pub(crate) fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            self.t += 1;
            let a = self.config;
            let g = &mut self.grad;
            if a.weight_decay != 0.0 {
                if a.decoupled {
                    let _ = self.flat.g_mul_scalar_(1.0 - lr * a.weight_decay);
                } else {
                    let _ = g.g_add_(&(&self.flat * a.weight_decay));
                }
            }
            let _ = self.m.lerp_(g, 1.0 - a.beta1);
            let _ = g.square_();
            let _ = self.v.lerp_(g, 1.0 - a.beta2);
            let bc1 = 1.0 - a.beta1.powi(self.t);
            let bc2 = 1.0 - a.beta2.powi(self.t);
            // g ← sqrt(v) / sqrt(bc2) + ε, then g ← m / g · (−η / bc1), then θ ← θ + g.
            let _ = self.v.sqrt_out(g);
            let _ = g.g_mul_scalar_(1.0 / bc2.sqrt());
            let _ = g.g_add_scalar_(a.eps);
            let _ = self.m.div_out(g, g);
            let _ = g.g_mul_scalar_(-lr / bc1);
            let _ = self.flat.g_add_(g);
        })
    }

    /// The number of scalar parameters it updates.
    #[cfg(test)]
    pub(crate) fn len(&self) -> i64 {
        self.numels.iter().sum()
    }

    /// The kind of the buffers (for tests).
    #[cfg(test)]
    pub(crate) fn kind(&self) -> tch::Kind {
        self.flat.kind()
    }
}

/// Row-major strides of a contiguous tensor of shape `size`.
fn contiguous_strides(size: &[i64]) -> Vec<i64> {
    let mut strides = vec![1; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * size[i + 1].max(1);
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, OptimizerConfig};
    use tch::{Device, Kind};

    /// The flat optimizer follows libtorch's Adam step for step (to rounding) on a small least-squares
    /// problem, clipping included, and keeps the variables where the layers see them.
    #[test]
    fn tracks_libtorch_adam_and_moves_the_layers_variables() {
        let run = |fused: bool| -> (Vec<f64>, Tensor, Tensor) {
            tch::manual_seed(7);
            let vs = nn::VarStore::new(Device::Cpu);
            let w = vs.root().var("w", &[3, 4], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
            let b = vs.root().var("b", &[3], nn::Init::Const(0.5));
            let start = Tensor::cat(&[w.reshape([-1]), b.shallow_clone()], 0).copy();
            let x = Tensor::randn([16, 4], (Kind::Float, Device::Cpu));
            let y = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
            let config = AdamConfig::default();
            let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
            let mut flat = fused.then(|| FlatAdam::new(&vs.trainable_variables(), config).unwrap());
            if let Some(f) = &flat {
                assert_eq!(f.len(), 15);
                assert_eq!(f.kind(), Kind::Float);
            }
            let mut norms = Vec::new();
            for _ in 0..20 {
                opt.zero_grad();
                let loss = (x.linear(&w, Some(&b)) - &y).square().mean(Kind::Float);
                loss.backward();
                match &mut flat {
                    Some(f) => {
                        norms.push(f.gather_and_clip(Some(0.5)).double_value(&[]));
                        f.step(1e-2);
                    }
                    None => {
                        let vars = vs.trainable_variables();
                        let sq: Vec<Tensor> =
                            vars.iter().map(|p| p.grad().square().sum(Kind::Float)).collect();
                        let n = Tensor::stack(&sq, 0).sum(Kind::Float).sqrt();
                        let coef = ((&n + 1e-6).reciprocal() * 0.5).clamp_max(1.0);
                        for p in &vars {
                            let _ = p.grad().g_mul_(&coef);
                        }
                        norms.push(n.double_value(&[]));
                        opt.step();
                    }
                }
            }
            (norms, start, Tensor::cat(&[w.reshape([-1]), b.shallow_clone()], 0))
        };
        let (n_ref, _, p_ref) = run(false);
        let (n_flat, start, p_flat) = run(true);
        for (a, b) in n_ref.iter().zip(&n_flat) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "gradient norms differ: {a} vs {b}");
        }
        // The handles the "layer" holds (w, b) moved: 20 steps of about lr each.
        let moved = (&p_flat - &start).abs().max().double_value(&[]);
        assert!(moved > 0.05, "the variables moved by {moved} only");
        let err = (&p_ref - &p_flat).abs().max().double_value(&[]);
        assert!(err < 1e-5, "parameters differ by {err} after 20 steps");
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[5]), vec![1]);
        assert!(contiguous_strides(&[]).is_empty());
    }
}
