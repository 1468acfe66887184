//! Observation model for diem: linear operators with explicit adjoints, Gaussian noise covariances and
//! observation files (SPEC.md §1, §9a–§9d, §12.1).
//!
//! Every observation carries its own operator `A_i` (`y_i = A_i x_i + ε_i`, `ε_i ~ N(0, Σ_y)`). Operators
//! are batch-first with per-sample parameters, so one call applies a whole batch of different `A_i`:
//!
//! | operator | map | experiment |
//! | --- | --- | --- |
//! | [`Identity`] | `x` | fully observed |
//! | [`Mask`] | `m ⊙ x` (random pixels, box, exactly-k) | CIFAR-10 §9b, FFHQ inpainting §9d |
//! | [`Projection`] | `A_b vec(x)`, rows on the unit sphere | manifold §9a |
//! | [`KSpace`] | column-masked orthonormal 2-D DFT, Re/Im as channels | MRI §9c |
//! | [`Blur`] | per-sample depthwise correlation, explicit boundary | FFHQ deblur §9d |
//! | [`Downsample`] | average pooling, antialiased bicubic | FFHQ super-resolution §9d |
//! | [`Compose`], [`Stack`] | `A_2 ∘ A_1`, `[A_1; A_2]` | |
//!
//! Layout: images are NCHW tensors; a sample flattens row-major (`index = (c·H + h)·W + w`). Seeded
//! generators draw on the host from [`seed::host_rng`] (`StdRng::seed_from_u64(seed)`), so a seed gives the
//! same operators and noise on every device; [`seed`] is also where every crate derives its seeds.
//!
//! ```
//! use diem_operators::{LinearOperator, Mask, NoiseCov, Observation};
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> diem_operators::Result<()> {
//! let x = Tensor::rand([4, 3, 8, 8], (Kind::Float, Device::Cpu));
//! let op = Mask::random_pixels(4, &[3, 8, 8], 0.5, 0)?;
//! let obs = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(1e-3)?, 1)?;
//! assert_eq!(obs.y.size(), [4, 3, 8, 8]);
//! let back = obs.operator.adjoint(&obs.y); // Aᵀ y, shape [4, 3, 8, 8]
//! assert_eq!(back.size(), x.size());
//! let dir = tempfile::tempdir().expect("temp dir");
//! obs.save(dir.path().join("obs.npz"))?;
//! let again = Observation::load(dir.path().join("obs.npz"), Device::Cpu)?;
//! assert_eq!(again.operator.kind(), "mask");
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod atomic;
pub mod blur;
pub mod compose;
pub mod downsample;
pub mod error;
pub mod identity;
pub mod io;
pub mod kernels;
pub mod kspace;
pub mod mask;
pub mod noise;
pub mod observation;
pub mod operator;
pub mod padding;
pub mod params;
pub mod projection;
pub mod seed;
pub mod testing;

pub use blur::Blur;
pub use compose::{Compose, Stack};
pub use downsample::{Downsample, Resample};
pub use error::{Error, Result};
pub use identity::Identity;
pub use kspace::KSpace;
pub use mask::Mask;
pub use noise::NoiseCov;
pub use observation::Observation;
pub use operator::LinearOperator;
pub use padding::Boundary;
pub use params::operator_from_params;
pub use projection::Projection;
