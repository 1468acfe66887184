//! The networks a checkpoint can hold, chosen by configuration: [`NetworkConfig`] → [`Network`], and the
//! complete trainable prior [`PriorModel`] (variables, EDM denoiser, prior mean).

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::edm::{EdmDenoiser, NoiseConditionalNet};
use crate::error::Result;
use crate::mlp::{Mlp, MlpConfig};
use crate::schedule::VeSchedule;
use crate::unet::{UNet, UNetConfig};

/// Which network, with its architecture (a `config.json` section, externally tagged:
/// `{"mlp": {...}}` or `{"unet": {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkConfig {
    /// [`Mlp`] (SPEC.md §9a).
    Mlp(MlpConfig),
    /// [`UNet`] (SPEC.md §9b, §9c).
    Unet(UNetConfig),
}

impl NetworkConfig {
    /// Checks the architecture.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Mlp(c) => c.validate(),
            Self::Unet(c) => c.validate(),
        }
    }

    /// The number of scalar parameters of the network.
    pub fn num_parameters(&self) -> i64 {
        match self {
            Self::Mlp(c) => c.num_parameters(),
            Self::Unet(c) => c.num_parameters(),
        }
    }
}

/// A network built from a [`NetworkConfig`].
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
    /// [`crate::Error::Config`] for an invalid configuration.
    pub fn new(path: &nn::Path, config: &NetworkConfig) -> Result<Self> {
        Ok(match config {
            NetworkConfig::Mlp(c) => Self::Mlp(Mlp::new(path, c)?),
            NetworkConfig::Unet(c) => Self::UNet(UNet::new(path, c)?),
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

/// A trainable diffusion prior: its variables (a [`nn::VarStore`], f32), the EDM denoiser around the
/// configured network, and the optional prior mean `μ_x` (SPEC.md §4.1, §8). Saved and loaded by
/// [`crate::checkpoint`].
#[derive(Debug)]
pub struct PriorModel {
    /// The architecture.
    pub config: NetworkConfig,
    /// The network's variables.
    pub vs: nn::VarStore,
    /// The denoiser `d_θ`; implements [`crate::Denoiser`].
    pub denoiser: EdmDenoiser<Network>,
    /// The noise schedule the model is trained with and sampled on.
    pub schedule: VeSchedule,
}

impl PriorModel {
    /// A freshly initialized prior on `device` (seed with `tch::manual_seed` first for reproducibility).
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an invalid configuration.
    pub fn new(config: NetworkConfig, schedule: VeSchedule, device: Device) -> Result<Self> {
        schedule.validate()?;
        let vs = nn::VarStore::new(device);
        let net = Network::new(&vs.root(), &config)?;
        let denoiser = EdmDenoiser::new(net)?;
        Ok(Self { config, vs, denoiser, schedule })
    }

    /// The number of scalar parameters in the variable store.
    pub fn num_parameters(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}
