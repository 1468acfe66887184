//! The model seam: which network a prior holds, and the complete trainable prior around it.
//!
//! - [`NoiseConditionalNet`] (in [`crate::edm`]) is what a network must do: `F_θ(u, e)` with the noise
//!   embedding `e`, dropout switched by `train`. Any struct holding tch variables (`nn::Linear`,
//!   `nn::Conv2D`, your own layers) that implements it can be trained, checkpointed and sampled.
//! - [`ModelFactory`] builds such a network under an [`nn::Path`] and describes it as a [`NetworkConfig`]
//!   (what `config.json` of a checkpoint or a run records). The built-in [`MlpConfig`] and [`UNetConfig`]
//!   are two factories; [`NetworkConfig`] selects between them (and is a factory itself). A user-defined
//!   network describes itself as [`NetworkConfig::Custom`] and is loaded back with its factory
//!   ([`crate::checkpoint::load_with`]).
//! - [`PriorModel`]: the variables ([`nn::VarStore`], f32), the EDM denoiser around the network and the prior
//!   mean `μ_x`, behind accessors.
//!
//! ```
//! use diem_models::{Denoiser, ModelFactory, NetworkConfig, NoiseConditionalNet, PriorModel, VeSchedule};
//! use tch::{nn, nn::Module, Device, Kind, Tensor};
//!
//! /// `F(u, e) = W2 silu(W1 [u, e])`: a user-defined network on 3-D data.
//! #[derive(Debug)]
//! struct TwoLayer { first: nn::Linear, second: nn::Linear }
//!
//! impl NoiseConditionalNet for TwoLayer {
//!     fn forward_t(&self, u: &Tensor, emb: &Tensor, _train: bool) -> Tensor {
//!         let h = Tensor::cat(&[u.shallow_clone(), emb.to_kind(u.kind())], -1);
//!         self.second.forward(&self.first.forward(&h).silu())
//!     }
//!     fn embedding_features(&self) -> i64 { 8 }
//! }
//!
//! struct TwoLayerFactory;
//!
//! impl ModelFactory for TwoLayerFactory {
//!     fn describe(&self) -> NetworkConfig {
//!         NetworkConfig::custom("two-layer", serde_json::json!({ "hidden": 32 }))
//!     }
//!     fn build(&self, path: &nn::Path) -> diem_models::Result<Box<dyn NoiseConditionalNet>> {
//!         let first = nn::linear(path / "first", 3 + 8, 32, Default::default());
//!         let second = nn::linear(path / "second", 32, 3, Default::default());
//!         Ok(Box::new(TwoLayer { first, second }))
//!     }
//! }
//!
//! # fn main() -> diem_models::Result<()> {
//! let model = PriorModel::from_factory(&TwoLayerFactory, VeSchedule::manifold(), Device::Cpu)?;
//! let x_t = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
//! let x_hat = tch::no_grad(|| model.denoise(&x_t, &Tensor::from(0.5f32)));
//! assert_eq!(x_hat.size(), vec![4, 3]);
//! assert_eq!(model.num_parameters(), (11 * 32 + 32) + (32 * 3 + 3));
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::denoiser::Denoiser;
use crate::edm::{EdmDenoiser, NoiseConditionalNet};
use crate::error::{Error, Result};
use crate::mlp::{Mlp, MlpConfig};
use crate::schedule::VeSchedule;
use crate::unet::{UNet, UNetConfig};

/// Which network, with its architecture (a `config.json` section, externally tagged:
/// `{"mlp": {...}}`, `{"unet": {...}}` or `{"custom": {"name": ..., "config": ...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkConfig {
    /// [`Mlp`] (docs/method.md §9a).
    Mlp(MlpConfig),
    /// [`UNet`] (docs/method.md §9b, §9c).
    Unet(UNetConfig),
    /// A user-defined network, built by the [`ModelFactory`] that describes itself with this value.
    Custom(CustomNetwork),
}

/// How a user-defined network describes itself in `config.json`: a name and any JSON configuration. Two
/// descriptions are the same network when both are equal; a checkpoint loads only with a factory that
/// describes itself exactly as the checkpoint records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomNetwork {
    /// A stable name (not empty), e.g. `"my-lab/resnet-1d"`.
    pub name: String,
    /// The network's own configuration (sizes, options), as the factory chooses; `null` when it has none.
    #[serde(default)]
    pub config: serde_json::Value,
}

impl NetworkConfig {
    /// The description of a user-defined network: [`NetworkConfig::Custom`] with `name` and `config`.
    pub fn custom(name: impl Into<String>, config: serde_json::Value) -> Self {
        Self::Custom(CustomNetwork { name: name.into(), config })
    }

    /// Checks the architecture (for a custom network: a non-empty name).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Mlp(c) => c.validate(),
            Self::Unet(c) => c.validate(),
            Self::Custom(c) if c.name.trim().is_empty() => {
                Err(Error::config("network.custom.name", "must not be empty"))
            }
            Self::Custom(_) => Ok(()),
        }
    }

    /// The number of scalar parameters of a built-in network; 0 for a custom one, whose size is known only
    /// once it is built ([`PriorModel::num_parameters`]).
    pub fn num_parameters(&self) -> i64 {
        match self {
            Self::Mlp(c) => c.num_parameters(),
            Self::Unet(c) => c.num_parameters(),
            Self::Custom(_) => 0,
        }
    }
}

/// Builds a network for a [`PriorModel`]: the model seam. [`ModelFactory::build`] creates the network's
/// variables under the given path (their names and creation order are what checkpoints store and what
/// `tch::manual_seed` makes reproducible); [`ModelFactory::describe`] names the network in checkpoints and
/// run configurations.
///
/// The built-in implementations are [`MlpConfig`], [`UNetConfig`] and [`NetworkConfig`] (which selects one
/// of them); a user-defined network implements it with a [`NetworkConfig::Custom`] description.
pub trait ModelFactory {
    /// The description recorded in `config.json` (a checkpoint's and a run's `network`).
    fn describe(&self) -> NetworkConfig;

    /// Builds the network, creating its variables under `path`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an invalid configuration (or whatever the factory reports).
    fn build(&self, path: &nn::Path) -> Result<Box<dyn NoiseConditionalNet>>;
}

impl ModelFactory for MlpConfig {
    fn describe(&self) -> NetworkConfig {
        NetworkConfig::Mlp(self.clone())
    }

    fn build(&self, path: &nn::Path) -> Result<Box<dyn NoiseConditionalNet>> {
        Ok(Box::new(Mlp::new(path, self)?))
    }
}

impl ModelFactory for UNetConfig {
    fn describe(&self) -> NetworkConfig {
        NetworkConfig::Unet(self.clone())
    }

    fn build(&self, path: &nn::Path) -> Result<Box<dyn NoiseConditionalNet>> {
        Ok(Box::new(UNet::new(path, self)?))
    }
}

impl ModelFactory for NetworkConfig {
    fn describe(&self) -> NetworkConfig {
        self.clone()
    }

    /// Builds the selected built-in network.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an invalid configuration, and for [`NetworkConfig::Custom`]: only its own
    /// factory can build a user-defined network.
    fn build(&self, path: &nn::Path) -> Result<Box<dyn NoiseConditionalNet>> {
        match self {
            Self::Mlp(c) => c.build(path),
            Self::Unet(c) => c.build(path),
            Self::Custom(c) => Err(Error::config(
                "network.custom",
                format!(
                    "`{}` is a user-defined network: build or load it with its own ModelFactory \
                     (PriorModel::from_factory, checkpoint::load_with)",
                    c.name
                ),
            )),
        }
    }
}

/// A built-in network built from a [`NetworkConfig`] (kept for callers that want the concrete type;
/// [`PriorModel`] holds any [`NoiseConditionalNet`]).
#[derive(Debug)]
pub enum Network {
    /// An MLP.
    Mlp(Mlp),
    /// A U-Net.
    UNet(UNet),
}

impl Network {
    /// Builds the network under `path`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an invalid configuration or a custom network.
    pub fn new(path: &nn::Path, config: &NetworkConfig) -> Result<Self> {
        Ok(match config {
            NetworkConfig::Mlp(c) => Self::Mlp(Mlp::new(path, c)?),
            NetworkConfig::Unet(c) => Self::UNet(UNet::new(path, c)?),
            NetworkConfig::Custom(c) => {
                return Err(Error::config(
                    "network.custom",
                    format!("`{}` is a user-defined network, not a built-in one", c.name),
                ))
            }
        })
    }
}

impl NoiseConditionalNet for Network {
    fn forward_t(&self, u: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        match self {
            Self::Mlp(n) => n.forward_t(u, emb, train),
            Self::UNet(n) => n.forward_t(u, emb, train),
        }
    }

    fn embedding_features(&self) -> i64 {
        match self {
            Self::Mlp(n) => n.embedding_features(),
            Self::UNet(n) => n.embedding_features(),
        }
    }
}

/// The EDM denoiser a [`PriorModel`] holds: around any network.
pub type PriorDenoiser = EdmDenoiser<Box<dyn NoiseConditionalNet>>;

/// A trainable diffusion prior: its variables (a [`nn::VarStore`], f32), the EDM denoiser around its network,
/// the noise schedule and the optional prior mean `μ_x` (docs/method.md §4.1, §8). Saved and loaded by
/// [`crate::checkpoint`]; implements [`Denoiser`] (evaluation mode).
#[derive(Debug)]
pub struct PriorModel {
    config: NetworkConfig,
    vs: nn::VarStore,
    denoiser: PriorDenoiser,
    schedule: VeSchedule,
}

impl PriorModel {
    /// A freshly initialized built-in prior on `device` (seed with `tch::manual_seed` first for
    /// reproducibility): [`PriorModel::from_factory`] with `config` as the factory.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an invalid configuration or a [`NetworkConfig::Custom`] one.
    pub fn new(config: NetworkConfig, schedule: VeSchedule, device: Device) -> Result<Self> {
        Self::from_factory(&config, schedule, device)
    }

    /// A freshly initialized prior on `device` around the network `factory` builds (its variables are
    /// created under the store's root, in the factory's order).
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an invalid schedule or description, or a network whose embedding size
    /// is not a valid [`crate::SineEmbedding`] size; the factory's errors.
    pub fn from_factory(factory: &dyn ModelFactory, schedule: VeSchedule, device: Device) -> Result<Self> {
        schedule.validate()?;
        let config = factory.describe();
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let net = factory.build(&vs.root())?;
        let denoiser = EdmDenoiser::new(net)?;
        Ok(Self { config, vs, denoiser, schedule })
    }

    /// The network's description (as checkpoints record it).
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The network's variables.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The variables by name, sorted by name (the order checkpoints and data-parallel broadcasts use).
    pub fn named_variables(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    /// The denoiser `d_θ` (with training-mode forward and the loss for [`crate::Trainer`]).
    pub fn denoiser(&self) -> &PriorDenoiser {
        &self.denoiser
    }

    /// The noise schedule the model is trained with and sampled on.
    pub fn schedule(&self) -> VeSchedule {
        self.schedule
    }

    /// The prior mean `μ_x`, if set.
    pub fn mean(&self) -> Option<&Tensor> {
        self.denoiser.mean()
    }

    /// Sets (or clears) the prior mean `μ_x` (per-sample shape, no batch dimension).
    pub fn set_mean(&mut self, mean: Option<Tensor>) {
        self.denoiser.set_mean(mean);
    }

    /// The number of scalar parameters in the variable store.
    pub fn num_parameters(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}

impl Denoiser for PriorModel {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.denoiser.denoise(x_t, sigma)
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.denoiser.mean()
    }
}
