//! EDM preconditioning around a noise-conditional network (docs/method.md §3.1) and the denoising score-matching
//! loss (docs/method.md §3.3).
//!
//! ```text
//! d_θ(x_t, σ) = c_skip(σ) x_t + c_out(σ) F_θ(c_in(σ) x_t, emb(c_noise(σ)))
//! c_skip = 1/(σ²+1),  c_out = σ/sqrt(σ²+1),  c_in = 1/sqrt(σ²+1),  c_noise = ln σ   (not EDM's ¼ ln σ)
//! ```
//!
//! # References
//! Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
//! 2022, arXiv:2206.00364 (σ_data = 1 here).

use tch::Tensor;

use crate::denoiser::{sigma_like, Denoiser};
use crate::embedding::SineEmbedding;
use crate::error::{Error, Result};

/// A free noise-conditional network `F_θ(u, e)`: `u` has the data's shape `[N, ...]`, `e` is the noise
/// embedding `[N, E]`; the output has `u`'s shape. `train` switches dropout on; it must be `false` for
/// sampling (docs/method.md §3.3).
pub trait NoiseConditionalNet: std::fmt::Debug {
    /// `F_θ(u, e)`.
    fn forward_t(&self, u: &Tensor, emb: &Tensor, train: bool) -> Tensor;
    /// The number of embedding features E the network expects.
    fn embedding_features(&self) -> i64;
}

impl<N: NoiseConditionalNet + ?Sized> NoiseConditionalNet for Box<N> {
    fn forward_t(&self, u: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        (**self).forward_t(u, emb, train)
    }

    fn embedding_features(&self) -> i64 {
        (**self).embedding_features()
    }
}

/// `c_skip(σ) = 1/(σ² + 1)` (docs/method.md §3.1).
pub fn c_skip(sigma: f64) -> f64 {
    1.0 / (sigma * sigma + 1.0)
}

/// `c_out(σ) = σ / sqrt(σ² + 1)` (docs/method.md §3.1).
pub fn c_out(sigma: f64) -> f64 {
    sigma / (sigma * sigma + 1.0).sqrt()
}

/// `c_in(σ) = 1 / sqrt(σ² + 1)` (docs/method.md §3.1).
pub fn c_in(sigma: f64) -> f64 {
    1.0 / (sigma * sigma + 1.0).sqrt()
}

/// `c_noise(σ) = ln σ` (docs/method.md §3.1; the authors' code has no factor ¼).
pub fn c_noise(sigma: f64) -> f64 {
    sigma.ln()
}

/// The loss weight `λ(σ) = 1/σ² + 1` (docs/method.md §3.3), so that `λ c_out² = 1`.
pub fn loss_weight(sigma: f64) -> f64 {
    1.0 / (sigma * sigma) + 1.0
}

/// The EDM-preconditioned denoiser `d_θ` around a network `F_θ` (docs/method.md §3.1), with an optional prior mean
/// `μ_x` that samplers use as their starting mean (docs/method.md §4.1, §8).
#[derive(Debug)]
pub struct EdmDenoiser<Net> {
    net: Net,
    embedding: SineEmbedding,
    mean: Option<Tensor>,
}

impl<Net: NoiseConditionalNet> EdmDenoiser<Net> {
    /// Wraps `net`; the embedding size comes from [`NoiseConditionalNet::embedding_features`].
    ///
    /// # Errors
    /// [`Error::Config`] when that size is not a valid [`SineEmbedding`] size.
    pub fn new(net: Net) -> Result<Self> {
        let embedding = SineEmbedding::new(net.embedding_features())?;
        Ok(Self { net, embedding, mean: None })
    }

    /// The wrapped network.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The noise embedding.
    pub fn embedding(&self) -> &SineEmbedding {
        &self.embedding
    }

    /// The prior mean `μ_x`, if set.
    pub fn mean(&self) -> Option<&Tensor> {
        self.mean.as_ref()
    }

    /// Sets (or clears) the prior mean `μ_x` (per-sample shape, no batch dimension).
    pub fn set_mean(&mut self, mean: Option<Tensor>) {
        self.mean = mean.map(|m| m.detach());
    }

    /// `d_θ(x_t, σ)` with dropout on when `train` (docs/method.md §3.1). `x_t: [N, ...]`, `σ: [N]` or `[]`.
    pub fn forward_t(&self, x_t: &Tensor, sigma: &Tensor, train: bool) -> Tensor {
        let n = x_t.size()[0];
        let sigma = sigma.to_kind(x_t.kind());
        let s = sigma_like(&sigma, x_t);
        let s2p1 = &s * &s + 1.0;
        let c_skip = s2p1.reciprocal();
        let c_in = s2p1.rsqrt();
        let c_out = &s * &c_in;
        let c_noise = sigma.log().expand([n], false);
        let emb = self.embedding.forward(&c_noise);
        let f = self.net.forward_t(&(x_t * &c_in), &emb, train);
        c_skip * x_t + c_out * f
    }

    /// The denoising score-matching loss for given clean samples, noise levels and noise (docs/method.md §3.3):
    /// `L = (1/B) Σ_b λ(σ_b) (1/N) Σ_j (d_θ(x_b + σ_b z_b, σ_b)_j − x_{b,j})²`, `λ(σ) = 1/σ² + 1`.
    ///
    /// `x, z: [B, ...]`, `σ: [B]`. Returns a scalar tensor with gradients to the network's parameters.
    ///
    /// # Errors
    /// [`Error::Shape`] when `z` or `σ` do not match `x`.
    pub fn loss(&self, x: &Tensor, sigma: &Tensor, z: &Tensor, train: bool) -> Result<Tensor> {
        let size = x.size();
        if z.size() != size {
            return Err(Error::shape("loss: noise z", format!("{size:?} (like x)"), &z.size()));
        }
        if size.is_empty() || sigma.size() != [size[0]] {
            return Err(Error::shape(
                "loss: sigma",
                format!("[{}]", size.first().unwrap_or(&0)),
                &sigma.size(),
            ));
        }
        let s = sigma_like(sigma, x);
        let x_t = x + &s * z;
        let d = self.forward_t(&x_t, sigma, train);
        let per_sample = (d - x).square().flatten(1, -1).mean_dim(1, false, x.kind());
        let weight = sigma.square().reciprocal() + 1.0;
        Ok((per_sample * weight).mean(x.kind()))
    }

    /// The loss of [`EdmDenoiser::loss`] over a whole set, in evaluation mode (dropout off) and without
    /// gradients, computed in batches of `batch`: the mean over the set's samples as an `f64` (docs/method.md §3.3,
    /// §8 "validation loss"). `x`, `z: [V, ...]` and `σ: [V]` may live on another device than the network;
    /// each batch moves to `device`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes do not match or the set is empty.
    pub fn mean_loss(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        z: &Tensor,
        batch: i64,
        device: tch::Device,
    ) -> Result<f64> {
        let v = x.size().first().copied().unwrap_or(0);
        if v < 1 {
            return Err(Error::shape("mean_loss: x", "[V, ...] with V ≥ 1", &x.size()));
        }
        let _guard = tch::no_grad_guard();
        let batch = batch.max(1);
        let mut total = 0.0;
        let mut start = 0;
        while start < v {
            let len = batch.min(v - start);
            let part = |t: &Tensor| t.narrow(0, start, len).to_device(device);
            let loss = self.loss(&part(x), &part(sigma), &part(z), false)?;
            total += loss.double_value(&[]) * len as f64;
            start += len;
        }
        Ok(total / v as f64)
    }
}

impl<Net: NoiseConditionalNet> Denoiser for EdmDenoiser<Net> {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.forward_t(x_t, sigma, false)
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.mean.as_ref()
    }
}
