//! Observation model for diem: linear operators with adjoints, Gaussian noise covariances and
//! observation files (docs/method.md §1, §9a–§9d, §12.1).
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
//! | [`FnOperator`] | any closure `x ↦ f(x)`, autograd adjoint | your own forward model |
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
//!
//! # Your own operator
//!
//! A forward model that is not in the table (a tomography projector, a PSF bank) is a type with three
//! methods, [`x_shape`](LinearOperator::x_shape), [`y_shape`](LinearOperator::y_shape) and
//! [`apply`](LinearOperator::apply), and `#[derive(Clone, Debug)]`; or just a closure in an
//! [`FnOperator`]. The adjoint defaults to autograd's vector-Jacobian product of `apply`
//! ([`operator::vjp_adjoint`]); batching, devices and cloning have defaults for an operator shared by the
//! whole batch (the table in [`operator`] lists them and when to override them). The helpers the built-in
//! operators use are public in [`implement`]. [`testing::check_operator`] runs the dot test, the
//! autograd test and a power-method estimate of `‖A‖₂` on it.
//!
//! Such an operator works everywhere an operator is taken, but [`Observation::save`] refuses it with
//! [`Error::NotPersistable`] until it can be read back: implement [`LinearOperator::kind`] (a name such as
//! `"tomo"`) and [`LinearOperator::params`], and register a loader with [`register_operator`] (see
//! [`registry`]). A registered kind also loads inside `compose[..]` and `stack[..]`. The example
//! `examples/custom_operator.rs` walks through all of it.
//!
//! ```
//! use diem_operators::{FnOperator, LinearOperator, NoiseCov, Observation};
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> diem_operators::Result<()> {
//! // Row sums of a 4 × 4 image: a custom operator in one line, adjoint by autograd.
//! let op = FnOperator::new(&[4, 4], &[4], |x| x.sum_dim_intlist([2i64].as_slice(), false, x.kind()))?;
//! let report = diem_operators::testing::check_operator(&op, 1e-10)?;
//! assert!((report.norm - 2.0).abs() < 1e-8); // ‖A‖₂ = √4
//! let x = Tensor::rand([3, 4, 4], (Kind::Float, Device::Cpu));
//! let obs = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(1e-2)?, 0)?;
//! assert_eq!(obs.operator.adjoint(&obs.y).size(), [3, 4, 4]);
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

/// The atomic file writer (the crate `diem-fs`, re-exported so `diem_operators::atomic` keeps working).
pub use diem_fs as atomic;
pub mod blur;
pub mod compose;
pub mod downsample;
pub mod error;
pub mod function;
pub mod identity;
pub mod implement;
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
pub mod registry;
pub mod seed;
pub mod testing;

pub use blur::Blur;
pub use compose::{Compose, Stack};
pub use downsample::{Downsample, Resample};
pub use error::{Error, Result};
pub use function::FnOperator;
pub use identity::Identity;
pub use kspace::KSpace;
pub use mask::Mask;
pub use noise::NoiseCov;
pub use observation::Observation;
pub use operator::{LinearOperator, OperatorClone};
pub use padding::Boundary;
pub use params::operator_from_params;
pub use projection::Projection;
pub use registry::{register_operator, OperatorRegistry};
