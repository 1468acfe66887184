//! The [`LinearOperator`] trait and the helpers every operator shares.
//!
//! An operator is a batch of per-sample linear maps `A_b : R^{x_shape} → R^{y_shape}` (SPEC.md §1). It holds
//! `P = batch()` parameter sets along a leading axis and is applied to a batch `x : [N, ..x_shape]` with
//! either `N == P` (sample `b` uses parameter set `b`) or `P == 1` (one set shared by all samples).
//!
//! Per-sample flattening: a sample's entries are ordered row-major over its shape, so an image
//! `[C, H, W]` flattens to `index = (c·H + h)·W + w` (NCHW). This differs from \[ref\]'s `(h·W + w)·C + c`;
//! SPEC.md §0 allows either as long as the denoiser, the operators and the covariances agree.

use tch::{Device, Kind, Tensor};

/// A batch of per-sample linear maps with explicit adjoints (SPEC.md §1).
///
/// `apply` and `adjoint` are built from differentiable libtorch operations, so autograd flows through them
/// (MMPS differentiates through `A(D(x_t))`), and the explicit adjoint equals autograd's transpose:
/// `⟨A x, u⟩ = ⟨x, Aᵀ u⟩` per sample, and `adjoint(u)` equals the vector-Jacobian product of `apply` with
/// cotangent `u` (SPEC.md §12.1 item 1). Parameters are cast to the input's dtype on the fly, so one
/// operator serves f32 and f64 inputs; they are *not* moved across devices implicitly (use
/// [`LinearOperator::to_device`]).
pub trait LinearOperator: std::fmt::Debug + Send {
    /// The kind string written to observation files: `"mask"`, `"kspace"`, `"compose[blur,downsample]"`, ...
    fn kind(&self) -> String;

    /// Number of parameter sets `P` along the leading axis. `P == 1` means one map shared by any batch.
    fn batch(&self) -> i64;

    /// Per-sample input shape (without the batch axis).
    fn x_shape(&self) -> Vec<i64>;

    /// Per-sample output shape (without the batch axis).
    fn y_shape(&self) -> Vec<i64>;

    /// The device holding the parameters.
    fn device(&self) -> Device;

    /// `y_b = A_b x_b` for `x : [N, ..x_shape]`, returning `[N, ..y_shape]`.
    ///
    /// # Panics
    /// If `x`'s shape is not `[N, ..x_shape]` with `N == batch()` or `batch() == 1`.
    fn apply(&self, x: &Tensor) -> Tensor;

    /// `x_b = A_bᵀ y_b` for `y : [N, ..y_shape]`, returning `[N, ..x_shape]`.
    ///
    /// # Panics
    /// If `y`'s shape is not `[N, ..y_shape]` with `N == batch()` or `batch() == 1`.
    fn adjoint(&self, y: &Tensor) -> Tensor;

    /// The operator made of parameter sets `indices` (in that order). A shared operator (`batch() == 1`)
    /// returns itself.
    ///
    /// # Panics
    /// If an index is outside `0..batch()`.
    fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator>;

    /// Parameter sets `start..start + len` (E-step chunking). A shared operator returns itself.
    ///
    /// # Panics
    /// If the range is outside `0..batch()`.
    fn narrow(&self, start: i64, len: i64) -> Box<dyn LinearOperator> {
        let indices: Vec<i64> = (start..start + len).collect();
        self.select(&indices)
    }

    /// A copy with its parameters on `device`.
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator>;

    /// The named parameter arrays that, with [`LinearOperator::kind`], rebuild the operator through
    /// [`crate::operator_from_params`]. Shapes are stored as int64 arrays (`x_shape`).
    fn params(&self) -> Vec<(String, Tensor)>;

    /// A boxed copy (parameters are shallow copies of the same storage).
    fn boxed_clone(&self) -> Box<dyn LinearOperator>;

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

impl Clone for Box<dyn LinearOperator> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

/// Checks that `t` is `[N, ..expected]` with `N == batch` or `batch == 1`; returns `N`.
///
/// # Panics
/// With a message naming the operator, the argument and both shapes.
#[track_caller]
pub(crate) fn check_input(op: &str, what: &str, t: &Tensor, expected: &[i64], batch: i64) -> i64 {
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
///
/// # Panics
/// If an index is outside `0..rows`.
#[track_caller]
pub(crate) fn select_rows(t: &Tensor, indices: &[i64]) -> Tensor {
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

/// The batch size that a list of parameter-set counts broadcasts to (1 broadcasts), or `None`.
pub(crate) fn broadcast_batch(batches: &[i64]) -> Option<i64> {
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

/// A shape as an int64 parameter array.
pub(crate) fn shape_tensor(shape: &[i64]) -> Tensor {
    Tensor::from_slice(shape)
}

/// `t` cast to `kind` (a no-op when it already has it).
pub(crate) fn as_kind(t: &Tensor, kind: Kind) -> Tensor {
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

/// Checks that `x_shape` is a non-empty list of positive dimensions with at most [`MAX_NUMEL`] entries.
pub(crate) fn check_x_shape(op: &'static str, x_shape: &[i64]) -> crate::Result<()> {
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

/// Checks that a count is at least 1.
pub(crate) fn positive(op: &'static str, name: &str, n: i64) -> crate::Result<i64> {
    if n < 1 {
        return Err(crate::Error::param(op, name, format!("must be ≥ 1, got {n}")));
    }
    Ok(n)
}

/// Checks that a parameter tensor is float32/float64 with finite entries.
pub(crate) fn check_float(op: &'static str, name: &str, t: &Tensor) -> crate::Result<()> {
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
