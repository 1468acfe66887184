//! Sample-quality metrics for diem (docs/method.md §9a, §9d, §10.5, §12.1).
//!
//! - [`Sinkhorn`]: entropic optimal transport between point clouds by log-domain Sinkhorn iterations, in
//!   bounded memory, with the reference's two-sample divergence ([`Sinkhorn::two_sample_divergence`]) and the
//!   debiased symmetric divergence ([`Sinkhorn::divergence`]); [`gaussian_w2_squared`] is the closed form it
//!   approaches for Gaussians.
//! - [`moment_errors`]: relative errors of a sample set's mean and covariance.
//! - [`psnr`] and [`ssim`]: per-image quality of reconstructions.
//! - FID and Inception Score (docs/method.md §9b, §11.1) from a user-supplied Inception TorchScript file:
//!   [`InceptionNet`] runs the network, [`FeatureStats`] holds (and caches as `.npz`) a feature set's mean and
//!   covariance, [`frechet_distance`] is the FID, [`inception_score`] / [`inception_score_shuffled`] the IS as
//!   torch-fidelity computes it, [`fid_is`] does both for a batch of generated images, and [`to_uint8_range`]
//!   quantizes diem images like a uint8 PNG first. The [`inception`] module docs show how to export the file.
//! - [`Lpips`] (docs/method.md §9d): LPIPS distances from a user-supplied TorchScript file (export in [`lpips`]).
//!
//! No network weights ship with the crate and nothing is downloaded: the TorchScript files are the user's.
//!
//! ```no_run
//! use diem_metrics::Sinkhorn;
//! use tch::{Device, Kind, Tensor};
//! # fn main() -> Result<(), diem_metrics::MetricsError> {
//! let truth = Tensor::randn([2048, 5], (Kind::Double, Device::Cpu));
//! let other = Tensor::randn([2048, 5], (Kind::Double, Device::Cpu));
//! let samples = Tensor::randn([2048, 5], (Kind::Double, Device::Cpu)) * 1.5;
//! let s = Sinkhorn::default().two_sample_divergence(&truth, &other, &samples)?;
//! println!("Sinkhorn divergence: {s:.3e}");
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod error;
pub mod fid;
pub mod image;
pub mod inception;
pub mod isc;
pub mod lpips;
pub mod moments;
pub mod sinkhorn;
mod torchscript;

pub use error::{Error, MetricsError, Result};
pub use fid::{frechet_distance, FeatureStats};
pub use image::{psnr, ssim};
pub use inception::{fid_is, to_uint8_range, FidIs, InceptionNet};
pub use isc::{
    inception_score, inception_score_shuffled, numpy_permutation, DEFAULT_SPLITS, TORCH_FIDELITY_SEED,
};
pub use lpips::Lpips;
pub use moments::{moment_errors, relative_error, sample_moments, MomentErrors};
pub use sinkhorn::{gaussian_w2_squared, Sinkhorn, SinkhornReport, DIVERGENCE_FLOOR};
