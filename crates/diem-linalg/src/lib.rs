//! # diem-linalg
//!
//! Matrix-free, batched linear algebra for DiEM and MMPS (docs/method.md §6–§7):
//!
//! - Krylov solvers [`cg()`], [`gmres()`] and [`bicgstab()`] (and their `*_with` forms taking [`KrylovParams`]) over a
//!   [`VectorSpace`] trait, with the operator passed as a closure `Fn(&V) -> V`. The trait is implemented for
//!   `ndarray::Array1<f32 | f64>` (one system) and for `tch::Tensor` `[N, ...]` (N independent systems solved in
//!   one call, with per-row scalars). Truncated solves (1–3 iterations, as MMPS uses them) run without any
//!   device-to-host synchronization; breakdowns are handled per system by masking, so no `NaN`/`inf` escapes.
//! - [`Dplr`]: diagonal-plus-low-rank matrices `diag(D) + U V` with Woodbury solve, inverse and log-determinant.
//! - [`ppca()`]: the PPCA fit (mean and DPLR covariance) used by the Gaussian EM initialization.
//!
//! ```
//! use diem_linalg::{cg, gmres};
//! use tch::{Kind, Tensor};
//! // Two independent 3×3 SPD diagonal systems, one per row.
//! let k = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([2, 3]);
//! let b = Tensor::ones([2, 3], (Kind::Double, tch::Device::Cpu));
//! let (x, report) = cg(|v: &Tensor| &k * v, &b, None, 3, None)?;
//! assert!((&k * &x - &b).abs().max().double_value(&[]) < 1e-10);
//! assert_eq!(report.breakdowns(), vec![false, false]);
//! let (x, _) = gmres(|v: &Tensor| &k * v, &b, None, 3, Some(1e-12))?;
//! assert!((&k * &x - &b).abs().max().double_value(&[]) < 1e-10);
//! # Ok::<(), diem_linalg::LinalgError>(())
//! ```
//!
//! Crate rule: no dependency on any other diem crate.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod bicgstab;
pub mod cg;
pub mod dplr;
pub mod error;
pub mod gmres;
pub mod krylov;
pub mod ppca;
pub mod report;
pub mod space;

pub use bicgstab::{bicgstab, bicgstab_with};
pub use cg::{cg, cg_with, Safeguard, StandIn};
pub use dplr::Dplr;
pub use error::{Error, LinalgError, Result};
pub use gmres::{gmres, gmres_with};
pub use krylov::Krylov;
pub use ppca::{ppca, ppca_with, PpcaMethod, PpcaParams, PpcaPath};
pub use report::{KrylovParams, SolveReport, Solved, SolvedWithImage};
pub use space::{
    kind_epsilon, Image, Masks, NoImage, Reduction, Scalars, TensorMask, TensorScalars, VectorSpace,
};
