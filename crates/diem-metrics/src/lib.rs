//! Sample-quality metrics for diem (SPEC.md §9a, §9d, §10.5, §12.1).
//!
//! - [`Sinkhorn`]: entropic optimal transport between point clouds by log-domain Sinkhorn iterations, in
//!   bounded memory, with the reference's two-sample divergence ([`Sinkhorn::two_sample_divergence`]) and the
//!   debiased symmetric divergence ([`Sinkhorn::divergence`]); [`gaussian_w2_squared`] is the closed form it
//!   approaches for Gaussians.
//! - [`moment_errors`]: relative errors of a sample set's mean and covariance.
//! - [`psnr`] and [`ssim`]: per-image quality of reconstructions.
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
pub mod image;
pub mod moments;
pub mod sinkhorn;

pub use error::{MetricsError, Result};
pub use image::{psnr, ssim};
pub use moments::{moment_errors, relative_error, sample_moments, MomentErrors};
pub use sinkhorn::{gaussian_w2_squared, Sinkhorn, SinkhornReport, DIVERGENCE_FLOOR};
