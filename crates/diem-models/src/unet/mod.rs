//! The U-Net of the CIFAR-10 and MRI experiments (docs/method.md §9b, §9c): adaLN-style modulation from the noise
//! embedding (modulate, then normalize), self-attention at chosen levels, dropout, and an optional
//! space-to-depth input.
//!
//! ```text
//! descent  ℓ = 0: Conv(C_in → C_0);  ℓ > 0: Conv stride 2 (C_{ℓ−1} → C_ℓ), LN_C;  then B_ℓ blocks; push skip
//! ascent   ℓ = L−1 … 0: pop skip; ℓ < L−1: concat(x, skip), Conv(C_ℓ + C_{ℓ+1} → C_ℓ);  B_ℓ blocks;
//!          ℓ > 0: LN_C, nearest ×2 upsampling;  ℓ = 0: 1×1 Conv(C_0 → C_out)
//! ```

mod blocks;
mod config;

pub use blocks::{AttBlock, LevelBlock, Modulation, ResBlock};
pub use config::UNetConfig;

use tch::nn;
use tch::Tensor;

use crate::edm::NoiseConditionalNet;
use crate::error::{Error, Result};
use crate::layers::{layer_norm_channels, Conv2d};

/// One level of the U-Net: its entry convolution and its blocks, on the way down and on the way up.
#[derive(Debug)]
struct Level {
    down: Conv2d,
    down_blocks: Vec<LevelBlock>,
    up: Option<Conv2d>,
    up_blocks: Vec<LevelBlock>,
}

/// The U-Net `F_θ(u, e)` on images `[N, C_in, H, W]` (NCHW); output `[N, C_out, H, W]`.
/// H and W must be multiples of [`UNetConfig::size_multiple`] (see [`UNet::check_input`]).
#[derive(Debug)]
pub struct UNet {
    config: UNetConfig,
    levels: Vec<Level>,
    output: Conv2d,
}

impl UNet {
    /// Builds the network under `path` (variables `levels.{ℓ}.down|up|down_blocks.{i}|up_blocks.{i}...`,
    /// `output`).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration.
    pub fn new(path: &nn::Path, config: &UNetConfig) -> Result<Self> {
        config.validate()?;
        let (k, e, p) = (config.kernel_size, config.embedding_features, config.dropout);
        let l = config.levels();
        let mut levels = Vec::with_capacity(l);
        for i in 0..l {
            let lp = path / "levels" / i;
            let c = config.channels[i];
            let down = if i == 0 {
                Conv2d::new(&lp / "down", config.inner_in_channels(), c, k, 1)
            } else {
                Conv2d::new(&lp / "down", config.channels[i - 1], c, k, 2)
            };
            let heads = config.heads[i];
            let down_blocks = (0..config.blocks[i])
                .map(|b| LevelBlock::new(&lp / "down_blocks" / b, c, e, k, p, heads))
                .collect();
            let up = (i + 1 < l).then(|| Conv2d::new(&lp / "up", c + config.channels[i + 1], c, k, 1));
            let up_blocks = (0..config.blocks[i])
                .map(|b| LevelBlock::new(&lp / "up_blocks" / b, c, e, k, p, heads))
                .collect();
            levels.push(Level { down, down_blocks, up, up_blocks });
        }
        let output = Conv2d::new(path / "output", config.channels[0], config.inner_out_channels(), 1, 1);
        Ok(Self { config: config.clone(), levels, output })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Checks that an input of shape `[N, C_in, H, W]` fits the network.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the expected shape.
    pub fn check_input(&self, shape: &[i64]) -> Result<()> {
        let m = self.config.size_multiple();
        let ok =
            shape.len() == 4 && shape[1] == self.config.in_channels && shape[2] % m == 0 && shape[3] % m == 0;
        if ok && shape[2] > 0 && shape[3] > 0 {
            Ok(())
        } else {
            Err(Error::shape(
                "UNet input",
                format!("[N, {}, H, W] with H and W positive multiples of {m}", self.config.in_channels),
                shape,
            ))
        }
    }
}

impl NoiseConditionalNet for UNet {
    fn forward_t(&self, u: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let emb = emb.to_kind(u.kind());
        let patch = self.config.patch_size;
        let mut x = if patch > 1 { u.pixel_unshuffle(patch) } else { u.shallow_clone() };
        let mut skips = Vec::with_capacity(self.levels.len());
        for (i, level) in self.levels.iter().enumerate() {
            x = level.down.forward(&x);
            if i > 0 {
                x = layer_norm_channels(&x);
            }
            for block in &level.down_blocks {
                x = block.forward(&x, &emb, train);
            }
            skips.push(x.shallow_clone());
        }
        for (i, level) in self.levels.iter().enumerate().rev() {
            let skip = skips.pop();
            if let (Some(up), Some(skip)) = (&level.up, skip) {
                x = up.forward(&Tensor::cat(&[x, skip], 1));
            }
            for block in &level.up_blocks {
                x = block.forward(&x, &emb, train);
            }
            if i > 0 {
                let (h, w) = (x.size()[2], x.size()[3]);
                x = layer_norm_channels(&x).upsample_nearest2d([2 * h, 2 * w], None, None);
            }
        }
        let x = self.output.forward(&x);
        if patch > 1 {
            x.pixel_shuffle(patch)
        } else {
            x
        }
    }

    fn embedding_features(&self) -> i64 {
        self.config.embedding_features
    }
}
