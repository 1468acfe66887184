//! FID and Inception Score of prior samples against the CIFAR-10 training set (docs/method.md §9b "Evaluation"),
//! with a user-supplied TorchScript Inception network ([`diem_metrics::InceptionNet`]).
//!
//! Samples in `[−2, 2]` are quantized exactly as when saving a uint8 PNG with the mapping of docs/method.md §9b
//! (`u8 = round(clip((x + 2)·64, 0, 255))`, [`crate::to_uint8`]) and fed to the network as f32 in `[0, 255]`.
//! The reference statistics of the training images are computed once and cached in the run directory
//! ([`REFERENCE_STATS_FILE`]), keyed by the network file and the images ([`REFERENCE_META_FILE`]).

use std::path::Path;

use diem_metrics::{fid_is, FeatureStats, FidIs, InceptionNet};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{CifarError, Result};

/// The cached reference statistics (`mu`, `sigma`, `count`) in the run directory.
pub const REFERENCE_STATS_FILE: &str = "fid-reference-stats.npz";
/// What the cached statistics were computed from (JSON).
pub const REFERENCE_META_FILE: &str = "fid-reference.json";

/// What identifies a reference-statistics cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceKey {
    /// The Inception file (as given).
    pub inception: String,
    /// Its size in bytes.
    pub inception_bytes: u64,
    /// The number of reference images.
    pub count: i64,
    /// The sum of all reference pixel bytes (cheap content check).
    pub pixel_sum: i64,
}

/// An Inception network with the training set's reference statistics.
#[derive(Debug)]
pub struct FidEvaluator {
    net: InceptionNet,
    reference: FeatureStats,
}

impl FidEvaluator {
    /// Loads the network from `inception` onto `device` and the reference statistics of `reference_u8`
    /// (`uint8 [N, 3, 32, 32]`, the training images) from the cache in `cache_dir`, or computes them (in
    /// batches of `batch`) and writes the cache.
    ///
    /// # Errors
    /// [`CifarError::Metrics`] when the network cannot be loaded or run; IO errors naming the cache files.
    pub fn new(
        inception: &Path,
        device: Device,
        reference_u8: &Tensor,
        batch: i64,
        cache_dir: &Path,
    ) -> Result<Self> {
        let net = InceptionNet::load(inception, device)?;
        let meta = std::fs::metadata(inception).map_err(|e| CifarError::io(inception, e))?;
        let key = ReferenceKey {
            inception: inception.display().to_string(),
            inception_bytes: meta.len(),
            count: reference_u8.size().first().copied().unwrap_or(0),
            pixel_sum: reference_u8.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]),
        };
        let stats_path = cache_dir.join(REFERENCE_STATS_FILE);
        let meta_path = cache_dir.join(REFERENCE_META_FILE);
        let cached: Option<ReferenceKey> =
            std::fs::read(&meta_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if cached.as_ref() == Some(&key) {
            if let Ok(reference) = FeatureStats::load(&stats_path) {
                return Ok(Self { net, reference });
            }
        }
        let images = reference_u8.to_kind(Kind::Float);
        let (features, _) = net.features_and_logits(&images, batch)?;
        let reference = FeatureStats::from_features(&features)?;
        reference.save(&stats_path)?;
        let text = serde_json::to_vec_pretty(&key)
            .map_err(|source| CifarError::Json { path: meta_path.clone(), source })?;
        diem_em::io::write_atomic(&meta_path, &text)?;
        Ok(Self { net, reference })
    }

    /// The reference statistics.
    pub fn reference(&self) -> &FeatureStats {
        &self.reference
    }

    /// FID and IS (`splits` splits) of `samples_u8` (`uint8 [N, 3, H, W]`) against the reference, the network
    /// running in batches of `batch`.
    ///
    /// # Errors
    /// [`CifarError::Metrics`] (too few samples for the splits, a network that fails, non-finite features).
    pub fn evaluate(&self, samples_u8: &Tensor, batch: i64, splits: usize) -> Result<FidIs> {
        Ok(fid_is(&self.net, &samples_u8.to_kind(Kind::Float), &self.reference, batch, splits)?)
    }
}
