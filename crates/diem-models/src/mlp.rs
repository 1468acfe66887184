//! The manifold experiment's network (docs/method.md §9a): an MLP on `[c_in x_t, emb(ln σ)]`.
//!
//! ```text
//! input  [u (F), e (E)]                         F + E features
//! hidden Linear → SiLU → LayerNorm (no affine)   for each hidden size
//! output Linear → F
//! ```

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::edm::NoiseConditionalNet;
use crate::error::{Error, Result};
use crate::layers::{layer_norm_last, Linear};

/// The MLP's architecture (a `config.json` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Data features F (input and output size).
    pub features: i64,
    /// Hidden layer sizes.
    pub hidden: Vec<i64>,
    /// Noise-embedding features E.
    pub embedding_features: i64,
}

impl Default for MlpConfig {
    /// The manifold network of docs/method.md §9a: F = 5, hidden (256, 256, 256), E = 64.
    fn default() -> Self {
        Self { features: 5, hidden: vec![256, 256, 256], embedding_features: 64 }
    }
}

impl MlpConfig {
    /// Checks that every size is positive and E is a valid embedding size.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.features < 1 {
            return Err(Error::config("mlp.features", format!("must be ≥ 1, got {}", self.features)));
        }
        if let Some((i, h)) = self.hidden.iter().enumerate().find(|(_, h)| **h < 1) {
            return Err(Error::config(format!("mlp.hidden[{i}]"), format!("must be ≥ 1, got {h}")));
        }
        crate::SineEmbedding::new(self.embedding_features)
            .map_err(|_| Error::config("mlp.embedding_features", "must be even and ≥ 4"))?;
        Ok(())
    }

    /// The number of scalar parameters of this MLP.
    pub fn num_parameters(&self) -> i64 {
        let mut fan_in = self.features + self.embedding_features;
        let mut total = 0;
        for &h in &self.hidden {
            total += Linear::count(fan_in, h, true);
            fan_in = h;
        }
        total + Linear::count(fan_in, self.features, true)
    }
}

/// The MLP `F_θ(u, e)` of docs/method.md §9a. Inputs `u: [N, F]`, `e: [N, E]`; output `[N, F]`. No dropout, so
/// `train` has no effect.
#[derive(Debug)]
pub struct Mlp {
    config: MlpConfig,
    hidden: Vec<Linear>,
    output: Linear,
}

impl Mlp {
    /// Builds the layers under `path` (variables `hidden.{i}.weight|bias`, `output.weight|bias`).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration.
    pub fn new(path: &nn::Path, config: &MlpConfig) -> Result<Self> {
        config.validate()?;
        let mut fan_in = config.features + config.embedding_features;
        let mut hidden = Vec::with_capacity(config.hidden.len());
        for (i, &h) in config.hidden.iter().enumerate() {
            hidden.push(Linear::new(path / "hidden" / i, fan_in, h, true, 1.0));
            fan_in = h;
        }
        let output = Linear::new(path / "output", fan_in, config.features, true, 1.0);
        Ok(Self { config: config.clone(), hidden, output })
    }

    /// The configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }
}

impl NoiseConditionalNet for Mlp {
    fn forward_t(&self, u: &Tensor, emb: &Tensor, _train: bool) -> Tensor {
        let mut h = Tensor::cat(&[u.shallow_clone(), emb.to_kind(u.kind())], -1);
        for layer in &self.hidden {
            h = layer_norm_last(&layer.forward(&h).silu());
        }
        self.output.forward(&h)
    }

    fn embedding_features(&self) -> i64 {
        self.config.embedding_features
    }
}
