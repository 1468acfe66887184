//! Everything needed to implement [`LinearOperator`] outside this crate, in one
//! import (`use diem_operators::implement::*;`): the trait, its clone helper, the autograd adjoint, the
//! shape and parameter checks the built-in operators use, and persistence ([`Params`],
//! [`register_operator`]).
//!
//! The contract of each helper is on its definition in [`crate::operator`]: `check_*` functions that take
//! a tensor handed to `apply` panic on a broken calling contract; those that check constructor arguments
//! return typed [`Error`](crate::Error)s.
//!
//! ```
//! use diem_operators::implement::*;
//! use tch::{Device, Tensor};
//!
//! /// `y_b = w_b ⊙ x_b` with per-sample weights `[P, n]`: a batched operator (`batch() = P`).
//! #[derive(Debug)]
//! struct Weights { w: Tensor }
//!
//! impl Clone for Weights {
//!     fn clone(&self) -> Self { Self { w: self.w.shallow_clone() } }
//! }
//!
//! impl LinearOperator for Weights {
//!     fn x_shape(&self) -> Vec<i64> { vec![self.w.size()[1]] }
//!     fn y_shape(&self) -> Vec<i64> { self.x_shape() }
//!     fn batch(&self) -> i64 { self.w.size()[0] }
//!     fn device(&self) -> Device { self.w.device() }
//!     fn apply(&self, x: &Tensor) -> Tensor {
//!         check_input("Weights::apply", "x", x, &self.x_shape(), self.batch());
//!         x * as_kind(&self.w, x.kind())
//!     }
//!     fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator> {
//!         Box::new(Self { w: select_rows(&self.w, indices) })
//!     }
//!     fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
//!         Box::new(Self { w: self.w.to_device(device) })
//!     }
//! }
//!
//! let op = Weights { w: Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]) };
//! assert_eq!(op.select(&[1]).batch(), 1);
//! let report = diem_operators::testing::check_operator(&op, 1e-10)?;
//! assert!((report.norms[1] - 4.0).abs() < 1e-9);
//! # Ok::<(), diem_operators::Error>(())
//! ```

pub use crate::function::FnOperator;
pub use crate::operator::{
    as_kind, broadcast_batch, check_float, check_input, check_x_shape, checked_numel, positive, select_rows,
    shape_tensor, vjp_adjoint, LinearOperator, OperatorClone, MAX_NUMEL,
};
pub use crate::params::Params;
pub use crate::registry::{register_operator, OperatorLoader, OperatorRegistry};
