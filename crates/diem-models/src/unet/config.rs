//! The U-Net's configuration and its analytic parameter count (docs/method.md §9b, §9c).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::{Conv2d, Linear};

/// The U-Net's architecture (a `config.json` section). Levels are given by `channels`; `blocks` and `heads`
/// have one entry per level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels of the images the network sees (before space-to-depth).
    pub in_channels: i64,
    /// Channels of the network's output image (before depth-to-space).
    pub out_channels: i64,
    /// Channels `C_ℓ` per level.
    pub channels: Vec<i64>,
    /// Residual blocks `B_ℓ` per level (each block is a ResBlock, plus an AttBlock where `heads[ℓ] > 0`).
    pub blocks: Vec<usize>,
    /// Attention heads `h_ℓ` per level; 0 = no attention at that level.
    pub heads: Vec<i64>,
    /// Convolution kernel size (odd; "same" padding).
    pub kernel_size: i64,
    /// Noise-embedding features E.
    pub embedding_features: i64,
    /// Dropout probability inside the ResBlocks (training only).
    pub dropout: f64,
    /// Space-to-depth factor applied to the input (and undone on the output); 1 = none, 4 for MRI.
    pub patch_size: i64,
}

impl UNetConfig {
    /// The corrupted CIFAR-10 network (docs/method.md §9b, paper Table 3): input (3, 32, 32), channels
    /// (128, 256, 384), blocks (5, 5, 5), attention with 4 heads at level 1 (16×16), kernel 3, E = 256,
    /// dropout 0.1. It has 57,560,451 parameters ([`UNetConfig::num_parameters`]).
    pub fn cifar() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            channels: vec![128, 256, 384],
            blocks: vec![5, 5, 5],
            heads: vec![0, 4, 0],
            kernel_size: 3,
            embedding_features: 256,
            dropout: 0.1,
            patch_size: 1,
        }
    }

    /// The accelerated-MRI network (docs/method.md §9c): input (1, 320, 320) turned into (16, 80, 80) by
    /// space-to-depth 4, channels (128, 256, 384, 512), blocks (3, 3, 3, 3), attention with 4 heads at level 3
    /// (10×10), kernel 3, E = 256, dropout 0.1. It has 77,648,912 parameters
    /// ([`UNetConfig::num_parameters`]).
    pub fn mri() -> Self {
        Self {
            in_channels: 1,
            out_channels: 1,
            channels: vec![128, 256, 384, 512],
            blocks: vec![3, 3, 3, 3],
            heads: vec![0, 0, 0, 4],
            kernel_size: 3,
            embedding_features: 256,
            dropout: 0.1,
            patch_size: 4,
        }
    }

    /// Number of levels L.
    pub fn levels(&self) -> usize {
        self.channels.len()
    }

    /// Input channels of the first convolution (`in_channels · patch_size²`).
    pub fn inner_in_channels(&self) -> i64 {
        self.in_channels * self.patch_size * self.patch_size
    }

    /// Output channels of the last 1×1 convolution (`out_channels · patch_size²`).
    pub fn inner_out_channels(&self) -> i64 {
        self.out_channels * self.patch_size * self.patch_size
    }

    /// The factor by which the image height and width must be divisible: `patch_size · 2^(L−1)`.
    pub fn size_multiple(&self) -> i64 {
        self.patch_size << (self.levels().saturating_sub(1))
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first invalid field.
    pub fn validate(&self) -> Result<()> {
        let l = self.channels.len();
        if l == 0 {
            return Err(Error::config("unet.channels", "needs at least one level"));
        }
        if self.blocks.len() != l {
            return Err(Error::config(
                "unet.blocks",
                format!("needs {l} entries (one per level), got {}", self.blocks.len()),
            ));
        }
        if self.heads.len() != l {
            return Err(Error::config(
                "unet.heads",
                format!("needs {l} entries (one per level), got {}", self.heads.len()),
            ));
        }
        for (name, v) in [
            ("unet.in_channels", self.in_channels),
            ("unet.out_channels", self.out_channels),
            ("unet.patch_size", self.patch_size),
        ] {
            if v < 1 {
                return Err(Error::config(name, format!("must be ≥ 1, got {v}")));
            }
        }
        if self.kernel_size < 1 || self.kernel_size % 2 == 0 {
            return Err(Error::config(
                "unet.kernel_size",
                format!("must be odd and ≥ 1, got {}", self.kernel_size),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("unet.dropout", format!("must lie in [0, 1), got {}", self.dropout)));
        }
        for (i, (&c, &h)) in self.channels.iter().zip(&self.heads).enumerate() {
            if c < 1 {
                return Err(Error::config(format!("unet.channels[{i}]"), format!("must be ≥ 1, got {c}")));
            }
            if h < 0 || (h > 0 && c % h != 0) {
                return Err(Error::config(
                    format!("unet.heads[{i}]"),
                    format!("must be 0 or a divisor of channels[{i}] = {c}, got {h}"),
                ));
            }
        }
        crate::SineEmbedding::new(self.embedding_features)
            .map_err(|_| Error::config("unet.embedding_features", "must be even and ≥ 4"))?;
        Ok(())
    }

    /// Parameters of one modulation MLP `Linear(E→E), SiLU, Linear(E→3C)`.
    fn modulation_count(&self, c: i64) -> i64 {
        let e = self.embedding_features;
        Linear::count(e, e, true) + Linear::count(e, 3 * c, true)
    }

    /// Parameters of `blocks[level]` × (ResBlock + optional AttBlock) at one level.
    fn level_blocks_count(&self, level: usize) -> i64 {
        let c = self.channels[level];
        let k = self.kernel_size;
        let res = self.modulation_count(c) + 2 * Conv2d::count(c, c, k);
        let att = if self.heads[level] > 0 {
            self.modulation_count(c) + 3 * Linear::count(c, c, true) + Linear::count(c, c, false)
        } else {
            0
        };
        self.blocks[level] as i64 * (res + att)
    }

    /// The number of scalar parameters, computed from the architecture (equals the number of entries in the
    /// [`crate::UNet`]'s variables; a test checks both).
    pub fn num_parameters(&self) -> i64 {
        let k = self.kernel_size;
        let l = self.levels();
        let mut total = 0;
        for i in 0..l {
            let c = self.channels[i];
            total += if i == 0 {
                Conv2d::count(self.inner_in_channels(), c, k)
            } else {
                Conv2d::count(self.channels[i - 1], c, k)
            };
            total += 2 * self.level_blocks_count(i);
            if i + 1 < l {
                total += Conv2d::count(c + self.channels[i + 1], c, k);
            }
        }
        total + Conv2d::count(self.channels[0], self.inner_out_channels(), 1)
    }
}

impl std::fmt::Display for UNetConfig {
    /// One line for reports: `U-Net, space-to-depth 4, channels [..], blocks [..], heads [..], E = 256,
    /// dropout 0.1 (N parameters)` (the space-to-depth part only when the patch size exceeds 1).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("U-Net, ")?;
        if self.patch_size > 1 {
            write!(f, "space-to-depth {}, ", self.patch_size)?;
        }
        write!(
            f,
            "channels {:?}, blocks {:?}, heads {:?}, E = {}, dropout {} ({} parameters)",
            self.channels,
            self.blocks,
            self.heads,
            self.embedding_features,
            self.dropout,
            self.num_parameters()
        )
    }
}
