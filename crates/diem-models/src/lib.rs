//! Diffusion priors for diem (docs/method.md §2–3, §7.2, §8–10): noise schedules, denoisers, networks, training
//! and checkpoints, plus the device selection and autograd helpers every higher crate builds on.
//!
//! - [`Schedule`] / [`VeSchedule`]: the exponential VE schedule `σ(t) = a^(1−t) b^t` (§2).
//! - [`Denoiser`]: the map `(x_t, σ) ↦ E[x | x_t]` on batches with per-sample σ, differentiable for MMPS's
//!   vector-Jacobian products; [`score`], [`jacobian`] and [`tweedie_covariance`] build on it (§3.4).
//! - [`EdmDenoiser`]: EDM preconditioning with `c_noise = ln σ` and the [`SineEmbedding`] around a
//!   [`NoiseConditionalNet`]: the [`Mlp`] (§9a), the [`UNet`] (§9b–9c), or your own network.
//! - The model seam ([`network`]): a [`ModelFactory`] builds a network under an `nn::Path` and describes it
//!   for checkpoints; [`MlpConfig`] and [`UNetConfig`] are the built-in factories, [`NetworkConfig`] selects
//!   one, and any tch module with the signature `forward_t(u, emb, train)` plugs in through
//!   [`NoiseConditionalNet`] + [`ModelFactory`] (described as [`NetworkConfig::Custom`]). [`PriorModel`] holds
//!   the variables, the denoiser, the schedule and `μ_x` behind accessors.
//! - Closed-form denoisers: [`GaussianDenoiser`] (DPLR covariance, §7.2) and [`MixtureDenoiser`] (§10.2).
//! - [`Trainer`]: the DSM loss, Adam, clipping, LR schedules, EMA, augmentations (§3.3, §8).
//! - [`checkpoint`]: `config.json` + `weights.safetensors` (+ `ema.safetensors`), atomic and bit-exact.
//! - [`progress`]: the [`ProgressObserver`] trait long computations report to; [`TerminalProgress`] (indicatif
//!   bars, or timestamped log lines without a terminal) is the default.
//! - [`device`] (CUDA when available, else CPU, overridable through `DIEM_DEVICE`) and [`autograd::vjp`].
//! - [`threads`]: the binaries' intra-op thread count and OpenMP wait policy ([`init_process_threads`]).
//!
//! ```
//! use diem_models::{Denoiser, MlpConfig, NetworkConfig, PriorModel, VeSchedule};
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> diem_models::Result<()> {
//! tch::manual_seed(0);
//! let config = NetworkConfig::Mlp(MlpConfig { features: 2, hidden: vec![32, 32], embedding_features: 16 });
//! let model = PriorModel::new(config, VeSchedule::manifold(), Device::Cpu)?;
//! let x_t = Tensor::randn([8, 2], (Kind::Float, Device::Cpu));
//! let sigma = Tensor::full([8], 0.5, (Kind::Float, Device::Cpu));
//! let x_hat = tch::no_grad(|| model.denoise(&x_t, &sigma));
//! assert_eq!(x_hat.size(), vec![8, 2]);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod autograd;
pub mod checkpoint;
pub mod denoiser;
pub mod device;
pub mod edm;
pub mod embedding;
pub mod error;
pub mod gaussian;
pub mod layers;
pub mod mixture;
pub mod mlp;
pub mod network;
pub mod progress;
pub mod randman;
pub mod schedule;
pub mod threads;
pub mod train;
pub mod unet;

pub use autograd::vjp;
pub use denoiser::{jacobian, score, sigma_like, tweedie_covariance, Denoiser};
pub use device::{device_from_env, DeviceChoice, DeviceError, DEVICE_VAR};
pub use edm::{c_in, c_noise, c_out, c_skip, loss_weight, EdmDenoiser, NoiseConditionalNet};
pub use embedding::SineEmbedding;
pub use error::{Error, Result};
pub use gaussian::GaussianDenoiser;
pub use mixture::MixtureDenoiser;
pub use mlp::{Mlp, MlpConfig};
pub use network::{CustomNetwork, ModelFactory, Network, NetworkConfig, PriorDenoiser, PriorModel};
pub use progress::{NoProgress, ProgressObserver, ProgressTask, TerminalProgress};
pub use randman::{frequency_count, normalize_features, Randman, RandmanConfig};
pub use schedule::{Schedule, VeSchedule};
pub use threads::{init_process_threads, ThreadSettings};
pub use train::{
    AdamConfig, AugmentConfig, Batching, Ema, GradientReducer, LossRecord, LrConfig, LrSchedule,
    TimeDistribution, TrainConfig, TrainReport, Trainer,
};
pub use unet::{UNet, UNetConfig};
