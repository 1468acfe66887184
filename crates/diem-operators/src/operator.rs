//! The [`LinearOperator`] trait, its defaults, and the helpers every operator shares.
//!
//! An operator is a batch of per-sample linear maps `A_b : R^{x_shape} → R^{y_shape}` (docs/method.md §1). It holds
//! `P = batch()` parameter sets along a leading axis and is applied to a batch `x : [N, ..x_shape]` with
//! either `N == P` (sample `b` uses parameter set `b`) or `P == 1` (one set shared by all samples).
//!
//! Per-sample flattening: a sample's entries are ordered row-major over its shape, so an image
//! `[C, H, W]` flattens to `index = (c·H + h)·W + w` (NCHW). This differs from the authors' code's `(h·W + w)·C + c`;
//! docs/method.md §0 allows either as long as the denoiser, the operators and the covariances agree.
//!
//! # The seam: what an implementer writes
//!
//! Three methods are required: [`LinearOperator::x_shape`], [`LinearOperator::y_shape`] and
//! [`LinearOperator::apply`]; with `#[derive(Clone, Debug)]` on the type that is a complete operator
//! (cloning comes from the blanket [`OperatorClone`] impl). Everything else has a default:
//!
//! | method | default | override when |
//! | --- | --- | --- |
//! | [`adjoint`](LinearOperator::adjoint) | the autograd adjoint of `apply` ([`vjp_adjoint`]) | a closed form is cheaper |
//! | [`batch`](LinearOperator::batch) | 1 (one map shared by any batch) | the operator holds per-sample parameters |
//! | [`select`](LinearOperator::select), [`narrow`](LinearOperator::narrow) | a clone (valid for `batch() == 1`) | `batch() > 1` |
//! | [`device`](LinearOperator::device), [`to_device`](LinearOperator::to_device) | `Cpu`, a clone | the operator holds tensors |
//! | [`kind`](LinearOperator::kind), [`params`](LinearOperator::params) | the Rust type name, no arrays: not persistable | it should be saved in observation files |
//! | [`boxed_clone`](LinearOperator::boxed_clone) | [`OperatorClone::clone_operator`] | never |
//!
//! An operator given only as a closure is [`crate::FnOperator`]. To save a custom operator in an
//! observation file, implement `kind` (a name of ASCII letters, digits and `_`) and `params`, and register a
//! loader with [`crate::register_operator`]; [`crate::testing::check_operator`] runs the dot test, the
//! autograd test and a power-method norm estimate on any operator. The helpers the built-in operators use
//! ([`check_input`], [`select_rows`], ...) are public, and collected in [`crate::implement`].
//!
//! ```
//! use diem_operators::LinearOperator;
//! use tch::{Kind, Tensor};
//!
//! /// Reverses a signal of length `n` and halves it.
//! #[derive(Clone, Debug)]
//! struct HalfFlip { n: i64 }
//!
//! impl LinearOperator for HalfFlip {
//!     fn x_shape(&self) -> Vec<i64> { vec![self.n] }
//!     fn y_shape(&self) -> Vec<i64> { vec![self.n] }
//!     fn apply(&self, x: &Tensor) -> Tensor { x.flip([1]) * 0.5 }
//! }
//!
//! let op = HalfFlip { n: 4 };
//! let u = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]).reshape([1, 4]);
//! // The default adjoint is autograd's vector-Jacobian product: here Aᵀ u = flip(u) / 2.
//! let back = op.adjoint(&u);
//! assert_eq!(Vec::<f64>::try_from(back.reshape([-1])).unwrap(), [2.0, 1.5, 1.0, 0.5]);
//! let report = diem_operators::testing::check_operator(&op, 1e-10).unwrap();
//! assert!((report.norm - 0.5).abs() < 1e-8);
//! ```

use tch::{Device, Kind, Tensor};

/// A batch of per-sample linear maps with adjoints (docs/method.md §1).
///
/// Only [`x_shape`](Self::x_shape), [`y_shape`](Self::y_shape) and [`apply`](Self::apply) are required;
/// see the [module documentation](crate::operator) for the defaults of the others. `apply` and `adjoint`
/// are built from differentiable libtorch operations, so autograd flows through them (MMPS differentiates
/// through `A(D(x_t))`), and the adjoint equals autograd's transpose: `⟨A x, u⟩ = ⟨x, Aᵀ u⟩` per sample,
/// and `adjoint(u)` equals the vector-Jacobian product of `apply` with cotangent `u` (docs/method.md
/// §12.1 item 1). The built-in operators cast their parameters to the input's dtype on the fly, so one
/// operator serves f32 and f64 inputs; they are *not* moved across devices implicitly (use
/// [`LinearOperator::to_device`]).
pub trait LinearOperator: OperatorClone + std::fmt::Debug + Send {
    /// Per-sample input shape (without the batch axis).
    fn x_shape(&self) -> Vec<i64>;

    /// Per-sample output shape (without the batch axis).
    fn y_shape(&self) -> Vec<i64>;

    /// `y_b = A_b x_b` for `x : [N, ..x_shape]`, returning `[N, ..y_shape]`.
    ///
    /// # Panics
    /// If `x`'s shape is not `[N, ..x_shape]` with `N == batch()` or `batch() == 1`.
    fn apply(&self, x: &Tensor) -> Tensor;

    /// `x_b = A_bᵀ y_b` for `y : [N, ..y_shape]`, returning `[N, ..x_shape]`.
    ///
    /// Defaults to the autograd adjoint of [`apply`](Self::apply) ([`vjp_adjoint`]): exact for a linear
    /// `apply`, differentiable in `y`, about the cost of one `apply` plus its backward pass.
    ///
    /// # Panics
    /// If `y`'s shape is not `[N, ..y_shape]` with `N == batch()` or `batch() == 1`.
    fn adjoint(&self, y: &Tensor) -> Tensor {
        vjp_adjoint(self, y)
    }

    /// Number of parameter sets `P` along the leading axis. `P == 1` (the default) means one map shared by
    /// any batch.
    fn batch(&self) -> i64 {
        1
    }

    /// The device holding the parameters. Defaults to `Cpu`: an operator that holds tensors overrides it
    /// together with [`to_device`](Self::to_device).
    fn device(&self) -> Device {
        Device::Cpu
    }

    /// The kind string written to observation files: `"mask"`, `"kspace"`, `"compose[blur,downsample]"`, ...
    ///
    /// The default is the Rust type name (`"my_crate::Tomography"`), which is not a valid kind: such an
    /// operator is used everywhere but refused by [`Observation::save`](crate::Observation::save) with
    /// [`Error::NotPersistable`](crate::Error::NotPersistable). A persistable operator returns a name of
    /// ASCII letters, digits and `_`, registered with [`crate::register_operator`].
    fn kind(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }

    /// The named parameter arrays that, with [`LinearOperator::kind`], rebuild the operator through
    /// [`crate::operator_from_params`]. Shapes are stored as int64 arrays (`x_shape`). Defaults to none.
    fn params(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// The operator made of parameter sets `indices` (in that order). A shared operator (`batch() == 1`)
    /// returns itself, which is the default.
    ///
    /// # Panics
    /// If an index is outside `0..batch()`; by default, if `batch() > 1` (an operator with per-sample
    /// parameters must implement `select`).
    fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator> {
        assert!(
            self.batch() == 1,
            "{}: an operator with batch() = {} > 1 must implement LinearOperator::select (indices {indices:?})",
            self.kind(),
            self.batch()
        );
        self.boxed_clone()
    }

    /// Parameter sets `start..start + len` (E-step chunking). A shared operator returns itself.
    ///
    /// # Panics
    /// If the range is outside `0..batch()`.
    fn narrow(&self, start: i64, len: i64) -> Box<dyn LinearOperator> {
        let indices: Vec<i64> = (start..start + len).collect();
        self.select(&indices)
    }

    /// A copy with its parameters on `device`. The default is a clone, right for an operator without
    /// tensors of its own (one whose `apply` only uses its input's device).
    fn to_device(&self, _device: Device) -> Box<dyn LinearOperator> {
        self.boxed_clone()
    }

    /// A boxed copy (parameters are shallow copies of the same storage). Defaults to
    /// [`OperatorClone::clone_operator`].
    fn boxed_clone(&self) -> Box<dyn LinearOperator> {
        self.clone_operator()
    }

    /// Number of entries of one input sample.
    fn x_numel(&self) -> i64 {
        self.x_shape().iter().product()
    }

    /// Number of entries of one output sample.
    fn y_numel(&self) -> i64 {
        self.y_shape().iter().product()
    }

    /// `AᵀA x`, the normal operator.
    fn gram(&self, x: &Tensor) -> Tensor {
        self.adjoint(&self.apply(x))
    }
}

/// Boxed cloning of operators, implemented for every `T: LinearOperator + Clone + 'static`, so an
/// implementer only derives `Clone` (a type that cannot be `Clone` implements this trait by hand).
pub trait OperatorClone {
    /// A boxed copy of `self`.
    fn clone_operator(&self) -> Box<dyn LinearOperator>;
}

impl<T: LinearOperator + Clone + 'static> OperatorClone for T {
    fn clone_operator(&self) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn LinearOperator> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

/// Whether autograd records operations on this thread now (`torch.is_grad_enabled()`).
fn grad_enabled() -> bool {
    let probe = Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    (&probe * 1.0).requires_grad()
}

/// The autograd adjoint of `op.apply`: the vector-Jacobian product
/// `Aᵀ u = ∂⟨A x, u⟩/∂x = J_A(x)ᵀ u` (docs/method.md §1, §12.1 item 1), the default of
/// [`LinearOperator::adjoint`].
///
/// `x` is a zero tensor `[N, ..x_shape]` in `u`'s dtype and device (`N = u.size()[0]`), recorded under a
/// [`tch::with_grad`] scope so the call also works inside `tch::no_grad` callers. For a linear `apply` the
/// Jacobian does not depend on `x` and the result is exact. When `u` requires grad and autograd is
/// enabled, the backward pass is recorded (`create_graph`), so the result is differentiable in `u`, as the
/// MMPS score needs; otherwise the result is detached. An `apply` that does not depend on its input gives
/// zeros.
///
/// # Panics
/// If `u` is not `[N, ..y_shape]`, or `apply` returns a tensor of another shape.
#[track_caller]
pub fn vjp_adjoint<O: LinearOperator + ?Sized>(op: &O, u: &Tensor) -> Tensor {
    let kind = op.kind();
    let y_shape = op.y_shape();
    let n = check_input(&kind, "cotangent u (autograd adjoint)", u, &y_shape, op.batch());
    let mut shape = vec![n];
    shape.extend(op.x_shape());
    let create_graph = u.requires_grad() && grad_enabled();
    tch::with_grad(|| {
        let x = Tensor::zeros(shape.as_slice(), (u.kind(), u.device())).set_requires_grad(true);
        let ax = op.apply(&x);
        assert!(
            ax.size() == u.size(),
            "{kind}: apply returned shape {:?} for an input of shape {shape:?}, expected {:?}",
            ax.size(),
            u.size()
        );
        if !ax.requires_grad() {
            return x.detach().zeros_like();
        }
        let u = if create_graph { u.shallow_clone() } else { u.detach() };
        let loss = (ax * &u).sum(u.kind());
        let grads = Tensor::run_backward(&[loss], &[&x], create_graph, create_graph);
        match grads.into_iter().next() {
            Some(g) if g.defined() => {
                if create_graph {
                    g
                } else {
                    g.detach()
                }
            }
            _ => x.detach().zeros_like(),
        }
    })
}

/// Checks that `t` is `[N, ..expected]` with `N == batch` or `batch == 1`; returns `N`. Call it first in
/// `apply` (`check_input("Tomo::apply", "x", x, &self.x_shape(), self.batch())`) and `adjoint`: a tensor of
/// the wrong shape is a broken contract of the calling code, reported by a panic that names both shapes.
///
/// # Panics
/// With a message naming the operator, the argument and both shapes.
#[track_caller]
pub fn check_input(op: &str, what: &str, t: &Tensor, expected: &[i64], batch: i64) -> i64 {
    let size = t.size();
    let ok = size.len() == expected.len() + 1 && size[1..] == *expected && (batch == 1 || size[0] == batch);
    assert!(
        ok,
        "{op}: {what} must have shape [N, {}] with N = {batch}{}, got {size:?}",
        expected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        if batch == 1 { " or any N (shared operator)" } else { "" }
    );
    size[0]
}

/// Rows `indices` of a per-sample parameter tensor; a tensor with one row (shared) is returned as is.
/// The building block of [`LinearOperator::select`] for an operator with per-sample parameters
/// `[P, ..]`.
///
/// # Panics
/// If an index is outside `0..rows`.
#[track_caller]
pub fn select_rows(t: &Tensor, indices: &[i64]) -> Tensor {
    let rows = t.size()[0];
    if rows == 1 {
        return t.shallow_clone();
    }
    assert!(
        indices.iter().all(|&i| (0..rows).contains(&i)),
        "select: indices must lie in 0..{rows}, got {indices:?}"
    );
    let index = Tensor::from_slice(indices).to_device(t.device());
    t.index_select(0, &index)
}

/// The batch size that a list of parameter-set counts broadcasts to (1 broadcasts), or `None`: the
/// [`LinearOperator::batch`] of an operator built from several parameter tensors or child operators.
pub fn broadcast_batch(batches: &[i64]) -> Option<i64> {
    let mut out = 1;
    for &b in batches {
        if b != 1 {
            if out != 1 && out != b {
                return None;
            }
            out = b;
        }
    }
    Some(out)
}

/// A shape as an int64 parameter array, the way [`LinearOperator::params`] stores `x_shape` (read back
/// with [`crate::params::Params::shape`]).
pub fn shape_tensor(shape: &[i64]) -> Tensor {
    Tensor::from_slice(shape)
}

/// `t` cast to `kind` (a no-op when it already has it): parameters stored in f32 serve f64 inputs by
/// `as_kind(&self.weights, x.kind())`.
pub fn as_kind(t: &Tensor, kind: Kind) -> Tensor {
    if t.kind() == kind {
        t.shallow_clone()
    } else {
        t.to_kind(kind)
    }
}

/// The most entries one sample may have (2^40): products of dimensions stay far from `i64` overflow, and
/// no real latent comes close.
pub const MAX_NUMEL: i64 = 1 << 40;

/// `Π shape` when it is at most [`MAX_NUMEL`] (and no dimension is negative), else `None`.
pub fn checked_numel(shape: &[i64]) -> Option<i64> {
    shape.iter().try_fold(1i64, |acc, &d| {
        if d < 0 {
            return None;
        }
        acc.checked_mul(d).filter(|&n| n <= MAX_NUMEL)
    })
}

/// Checks that `x_shape` is a non-empty list of positive dimensions with at most [`MAX_NUMEL`] entries
/// (for constructors).
///
/// # Errors
/// [`crate::Error::Shape`] naming `op` and `x_shape`.
pub fn check_x_shape(op: &'static str, x_shape: &[i64]) -> crate::Result<()> {
    if x_shape.is_empty() || x_shape.iter().any(|&d| d < 1) || checked_numel(x_shape).is_none() {
        return Err(crate::Error::Shape {
            op,
            what: "x_shape".into(),
            expected: format!("a non-empty list of positive dimensions with at most {MAX_NUMEL} entries"),
            got: x_shape.to_vec(),
        });
    }
    Ok(())
}

/// Checks that a count is at least 1 (for constructors); returns it.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] naming `op` and `name`.
pub fn positive(op: &'static str, name: &str, n: i64) -> crate::Result<i64> {
    if n < 1 {
        return Err(crate::Error::param(op, name, format!("must be ≥ 1, got {n}")));
    }
    Ok(n)
}

/// Checks that a parameter tensor is float32/float64 with finite entries (for constructors).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] naming `op` and `name`.
pub fn check_float(op: &'static str, name: &str, t: &Tensor) -> crate::Result<()> {
    if !matches!(t.kind(), Kind::Float | Kind::Double) {
        return Err(crate::Error::param(
            op,
            name,
            format!("dtype must be float32 or float64, got {}", crate::io::dtype_name(t.kind())),
        ));
    }
    if t.numel() > 0 && t.isfinite().all().int64_value(&[]) == 0 {
        return Err(crate::Error::param(op, name, "entries must be finite"));
    }
    Ok(())
}
