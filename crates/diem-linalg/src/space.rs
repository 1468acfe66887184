//! The vector-space abstraction the Krylov solvers are written against (docs/method.md §6).
//!
//! A value of a [`VectorSpace`] type holds the vectors of one or more *independent* linear systems. Every scalar
//! a Krylov recurrence needs (α, β, ρ, ω, Hessenberg entries, Givens rotations) is a [`Scalars`] value that holds
//! one number per system, and every decision (converged? broken down?) is a [`Masks`] value with one flag per
//! system. The solvers then never branch on the host: a system that must stop is frozen by masked updates, so one
//! call solves N systems without any device-to-host synchronization (unless a tolerance is asked).
//!
//! Implementations:
//! - `ndarray::Array1<f32>` and `Array1<f64>`: one system; scalars are `f64`, masks are `bool`.
//! - `tch::Tensor` of shape `[N, ...]`: N systems (the trailing dimensions of a row form one vector); scalars are
//!   [`TensorScalars`] of shape `[N, 1, ..., 1]` in `f64`, so they broadcast against the rows, and masks are
//!   [`TensorMask`] (boolean, same shape). With [`Reduction::Global`] the whole tensor is one vector (the JAX
//!   behaviour of the authors' code) and scalars have shape `[1, ..., 1]`.
//!
//! Inner products always accumulate in `f64`. The solvers can also run their whole state in `f64`
//! ([`VectorSpace::to_work`]) and cast each operator input back to the model dtype ([`VectorSpace::to_model`]).

use ndarray::Array1;
use tch::{Device, Kind, Tensor};

/// How inner products reduce a batch (docs/method.md §6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// One system per leading index: `<u, v>_n = Σ_j u_{n,j} v_{n,j}` (project default).
    #[default]
    PerSystem,
    /// The whole batch is one vector, as JAX's solvers in the authors' code: one set of step sizes for all rows.
    Global,
}

/// Per-system boolean flags (one per independent system).
pub trait Masks: Sized {
    /// Elementwise logical and.
    fn and(&self, other: &Self) -> Self;
    /// Elementwise logical or.
    fn or(&self, other: &Self) -> Self;
    /// Elementwise logical not.
    fn not(&self) -> Self;
    /// Whether any flag is set. Synchronizes with the device: only used when a tolerance is asked.
    fn any(&self) -> bool;
    /// The flags on the host, one per system (synchronizes).
    fn to_vec(&self) -> Vec<bool>;
}

/// Per-system scalars (one `f64` per independent system), with the arithmetic Krylov recurrences need.
pub trait Scalars: Sized {
    /// The matching per-system flags.
    type Mask: Masks;
    /// A value of the same shape as `self` filled with `value`.
    fn fill_like(&self, value: f64) -> Self;
    /// `self + other`.
    fn add(&self, other: &Self) -> Self;
    /// `self − other`.
    fn sub(&self, other: &Self) -> Self;
    /// `self · other`.
    fn mul(&self, other: &Self) -> Self;
    /// `self / other` (IEEE semantics: may produce `inf` or `NaN`, which the solvers mask out).
    fn div(&self, other: &Self) -> Self;
    /// `self · value`.
    fn mul_value(&self, value: f64) -> Self;
    /// `−self`.
    fn neg(&self) -> Self;
    /// `√self`.
    fn sqrt(&self) -> Self;
    /// `|self|`.
    fn abs(&self) -> Self;
    /// `max(self, value)`.
    fn clamp_min(&self, value: f64) -> Self;
    /// Flags where the value is finite.
    fn is_finite(&self) -> Self::Mask;
    /// Flags where `self > other`.
    fn gt(&self, other: &Self) -> Self::Mask;
    /// Flags where `self > value`.
    fn gt_value(&self, value: f64) -> Self::Mask;
    /// Flags where `self ≠ 0`.
    fn nonzero(&self) -> Self::Mask;
    /// Per system: `a` where `mask` is set, else `b`.
    fn select(mask: &Self::Mask, a: &Self, b: &Self) -> Self;
    /// A cheap copy (shares storage for tensors; values are never mutated in place).
    fn copy(&self) -> Self;
    /// The values on the host, one per system (synchronizes).
    fn to_vec(&self) -> Vec<f64>;
}

/// A batch of vectors from independent linear systems: what CG, GMRES and BiCGSTAB need (docs/method.md §6).
///
/// Values are treated as immutable: every operation returns a new value.
pub trait VectorSpace: Sized {
    /// Per-system scalars.
    type Scalar: Scalars;
    /// Per-system inner products `<self, other>`, accumulated in `f64`.
    fn dot(&self, other: &Self, reduction: Reduction) -> Self::Scalar;
    /// `self + a · x` with a per-system `a`.
    fn axpy(&self, a: &Self::Scalar, x: &Self) -> Self;
    /// `a · self` with a per-system `a`.
    fn scale(&self, a: &Self::Scalar) -> Self;
    /// Zeros of the same shape, dtype and device.
    fn zeros_like(&self) -> Self;
    /// A cheap copy (shares storage for tensors).
    fn copy(&self) -> Self;
    /// Per system: the rows of `a` where `mask` is set, else those of `b`.
    fn select(mask: &<Self::Scalar as Scalars>::Mask, a: &Self, b: &Self) -> Self;
    /// The vector in the solvers' working precision (`f64` where the type can hold it; identity otherwise).
    fn to_work(&self) -> Self;
    /// The vector cast back to the dtype of `model` (the dtype the operator expects).
    fn to_model(&self, model: &Self) -> Self;
    /// The machine epsilon of this vector's dtype.
    fn epsilon(&self) -> f64;
}

// ------------------------------------------------------------------------------------------------------------
// Host implementations: one system.

impl Masks for bool {
    fn and(&self, other: &Self) -> Self {
        *self && *other
    }
    fn or(&self, other: &Self) -> Self {
        *self || *other
    }
    fn not(&self) -> Self {
        !*self
    }
    fn any(&self) -> bool {
        *self
    }
    fn to_vec(&self) -> Vec<bool> {
        vec![*self]
    }
}

impl Scalars for f64 {
    type Mask = bool;
    fn fill_like(&self, value: f64) -> Self {
        value
    }
    fn add(&self, other: &Self) -> Self {
        self + other
    }
    fn sub(&self, other: &Self) -> Self {
        self - other
    }
    fn mul(&self, other: &Self) -> Self {
        self * other
    }
    fn div(&self, other: &Self) -> Self {
        self / other
    }
    fn mul_value(&self, value: f64) -> Self {
        self * value
    }
    fn neg(&self) -> Self {
        -self
    }
    fn sqrt(&self) -> Self {
        f64::sqrt(*self)
    }
    fn abs(&self) -> Self {
        f64::abs(*self)
    }
    fn clamp_min(&self, value: f64) -> Self {
        f64::max(*self, value)
    }
    fn is_finite(&self) -> bool {
        f64::is_finite(*self)
    }
    fn gt(&self, other: &Self) -> bool {
        self > other
    }
    fn gt_value(&self, value: f64) -> bool {
        *self > value
    }
    fn nonzero(&self) -> bool {
        *self != 0.0
    }
    fn select(mask: &bool, a: &Self, b: &Self) -> Self {
        if *mask {
            *a
        } else {
            *b
        }
    }
    fn copy(&self) -> Self {
        *self
    }
    fn to_vec(&self) -> Vec<f64> {
        vec![*self]
    }
}

macro_rules! impl_array1 {
    ($t:ty) => {
        impl VectorSpace for Array1<$t> {
            type Scalar = f64;
            fn dot(&self, other: &Self, _reduction: Reduction) -> f64 {
                self.iter().zip(other.iter()).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()
            }
            fn axpy(&self, a: &f64, x: &Self) -> Self {
                let a = *a as $t;
                let mut out = self.clone();
                out.zip_mut_with(x, |o, &xi| *o += a * xi);
                out
            }
            fn scale(&self, a: &f64) -> Self {
                self * (*a as $t)
            }
            fn zeros_like(&self) -> Self {
                Array1::zeros(self.len())
            }
            fn copy(&self) -> Self {
                self.clone()
            }
            fn select(mask: &bool, a: &Self, b: &Self) -> Self {
                if *mask {
                    a.clone()
                } else {
                    b.clone()
                }
            }
            fn to_work(&self) -> Self {
                self.clone()
            }
            fn to_model(&self, _model: &Self) -> Self {
                self.clone()
            }
            fn epsilon(&self) -> f64 {
                f64::from(<$t>::EPSILON)
            }
        }
    };
}
impl_array1!(f32);
impl_array1!(f64);

// ------------------------------------------------------------------------------------------------------------
// Images: a second vector carried beside each operator input.

/// The image `L v` of a solver's vector under a fixed linear map `L`, carried beside the Krylov iterate
/// (docs/method.md §5.8).
///
/// When the operator is a composition `K v = B v + A (L v)` that computes `L v` anyway (MMPS: `L v = σ² Jᵀ Aᵀ v`,
/// one VJP), every iterate `x` is a combination `Σ c_i p_i` of vectors `p_i` the operator was applied to, so
/// `L x = Σ c_i (L p_i)` follows from the images the solver has already seen, without applying `L` once more
/// ([`Krylov::solve_with_image`](crate::Krylov::solve_with_image)). The image of a row may have another shape
/// than the row itself (an `x`-space vector beside a `y`-space one); its leading dimension indexes the same
/// systems.
pub trait Image<S: Scalars>: Sized {
    /// `self + a · x` with a per-system `a` broadcast over each row of the image.
    fn axpy(&self, a: &S, x: &Self) -> Self;
    /// `a · self` with a per-system `a`.
    fn scale(&self, a: &S) -> Self;
    /// Per system: the rows of `a` where `mask` is set, else those of `b`.
    fn select(mask: &S::Mask, a: &Self, b: &Self) -> Self;
    /// Zeros of the same shape, dtype and device.
    fn zeros_like(&self) -> Self;
}

/// No image: what the plain solvers carry (every operation is free).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoImage;

impl<S: Scalars> Image<S> for NoImage {
    fn axpy(&self, _a: &S, _x: &Self) -> Self {
        NoImage
    }
    fn scale(&self, _a: &S) -> Self {
        NoImage
    }
    fn select(_mask: &S::Mask, _a: &Self, _b: &Self) -> Self {
        NoImage
    }
    fn zeros_like(&self) -> Self {
        NoImage
    }
}

macro_rules! impl_array1_image {
    ($t:ty) => {
        impl Image<f64> for Array1<$t> {
            fn axpy(&self, a: &f64, x: &Self) -> Self {
                VectorSpace::axpy(self, a, x)
            }
            fn scale(&self, a: &f64) -> Self {
                VectorSpace::scale(self, a)
            }
            fn select(mask: &bool, a: &Self, b: &Self) -> Self {
                <Self as VectorSpace>::select(mask, a, b)
            }
            fn zeros_like(&self) -> Self {
                VectorSpace::zeros_like(self)
            }
        }
    };
}
impl_array1_image!(f32);
impl_array1_image!(f64);

// ------------------------------------------------------------------------------------------------------------
// libtorch implementation: a batch of systems.

/// Per-system scalars of a batched tensor solve: an `f64` tensor `[N, 1, ..., 1]` (or `[1, ..., 1]` in
/// [`Reduction::Global`] mode) that broadcasts against the `[N, ...]` rows.
#[derive(Debug)]
pub struct TensorScalars(pub Tensor);

/// Per-system flags of a batched tensor solve: a boolean tensor shaped like [`TensorScalars`].
#[derive(Debug)]
pub struct TensorMask(pub Tensor);

fn host_vec<T: tch::kind::Element + Default + Clone>(t: &Tensor, kind: Kind) -> Vec<T> {
    let flat = t.to_device(Device::Cpu).to_kind(kind).contiguous().view([-1]);
    let n = flat.numel();
    let mut out = vec![T::default(); n];
    flat.copy_data(&mut out, n);
    out
}

impl Masks for TensorMask {
    fn and(&self, other: &Self) -> Self {
        Self(self.0.logical_and(&other.0))
    }
    fn or(&self, other: &Self) -> Self {
        Self(self.0.logical_or(&other.0))
    }
    fn not(&self) -> Self {
        Self(self.0.logical_not())
    }
    fn any(&self) -> bool {
        self.0.any().int64_value(&[]) != 0
    }
    fn to_vec(&self) -> Vec<bool> {
        host_vec::<i64>(&self.0, Kind::Int64).into_iter().map(|v| v != 0).collect()
    }
}

impl Scalars for TensorScalars {
    type Mask = TensorMask;
    fn fill_like(&self, value: f64) -> Self {
        Self(self.0.full_like(value))
    }
    fn add(&self, other: &Self) -> Self {
        Self(&self.0 + &other.0)
    }
    fn sub(&self, other: &Self) -> Self {
        Self(&self.0 - &other.0)
    }
    fn mul(&self, other: &Self) -> Self {
        Self(&self.0 * &other.0)
    }
    fn div(&self, other: &Self) -> Self {
        Self(&self.0 / &other.0)
    }
    fn mul_value(&self, value: f64) -> Self {
        Self(&self.0 * value)
    }
    fn neg(&self) -> Self {
        Self(-&self.0)
    }
    fn sqrt(&self) -> Self {
        Self(self.0.sqrt())
    }
    fn abs(&self) -> Self {
        Self(self.0.abs())
    }
    fn clamp_min(&self, value: f64) -> Self {
        Self(self.0.clamp_min(value))
    }
    fn is_finite(&self) -> TensorMask {
        TensorMask(self.0.isfinite())
    }
    fn gt(&self, other: &Self) -> TensorMask {
        TensorMask(self.0.gt_tensor(&other.0))
    }
    fn gt_value(&self, value: f64) -> TensorMask {
        TensorMask(self.0.gt(value))
    }
    fn nonzero(&self) -> TensorMask {
        TensorMask(self.0.ne(0.0))
    }
    fn select(mask: &TensorMask, a: &Self, b: &Self) -> Self {
        Self(a.0.where_self(&mask.0, &b.0))
    }
    fn copy(&self) -> Self {
        Self(self.0.shallow_clone())
    }
    fn to_vec(&self) -> Vec<f64> {
        host_vec::<f64>(&self.0, Kind::Double)
    }
}

/// Casts a per-system scalar to the dtype of the vector it multiplies (avoids promoting `f32` rows to `f64`).
fn scalar_for(a: &TensorScalars, x: &Tensor) -> Tensor {
    if a.0.kind() == x.kind() {
        a.0.shallow_clone()
    } else {
        a.0.to_kind(x.kind())
    }
}

impl VectorSpace for Tensor {
    type Scalar = TensorScalars;
    fn dot(&self, other: &Self, reduction: Reduction) -> TensorScalars {
        let nd = self.dim();
        let keep = |n: i64| -> Vec<i64> {
            let mut shape = vec![1i64; nd.max(1)];
            shape[0] = n;
            shape
        };
        // f64 rows of equal shape: one fused reduction (a batched matrix product), no temporary vector.
        let fused = self.kind() == Kind::Double
            && other.kind() == Kind::Double
            && self.size() == other.size()
            && self.numel() > 0;
        let out = match reduction {
            Reduction::Global if fused => {
                self.reshape([1, 1, -1]).matmul(&other.reshape([1, -1, 1])).reshape(keep(1))
            }
            Reduction::Global => (self * other).sum(Kind::Double).reshape(keep(1)),
            Reduction::PerSystem if nd <= 1 => (self * other).to_kind(Kind::Double),
            Reduction::PerSystem if fused => {
                let n = self.size()[0];
                self.reshape([n, 1, -1]).matmul(&other.reshape([n, -1, 1])).reshape(keep(n))
            }
            Reduction::PerSystem => {
                let dims: Vec<i64> = (1..nd as i64).collect();
                (self * other).sum_dim_intlist(dims.as_slice(), true, Kind::Double)
            }
        };
        TensorScalars(out)
    }
    fn axpy(&self, a: &TensorScalars, x: &Self) -> Self {
        self.addcmul(&scalar_for(a, x), x)
    }
    fn scale(&self, a: &TensorScalars) -> Self {
        self * scalar_for(a, self)
    }
    fn zeros_like(&self) -> Self {
        Tensor::zeros_like(self)
    }
    fn copy(&self) -> Self {
        self.shallow_clone()
    }
    fn select(mask: &TensorMask, a: &Self, b: &Self) -> Self {
        a.where_self(&mask.0, b)
    }
    fn to_work(&self) -> Self {
        if self.is_floating_point() && self.kind() != Kind::Double {
            self.to_kind(Kind::Double)
        } else {
            self.shallow_clone()
        }
    }
    fn to_model(&self, model: &Self) -> Self {
        if self.kind() == model.kind() {
            self.shallow_clone()
        } else {
            self.to_kind(model.kind())
        }
    }
    fn epsilon(&self) -> f64 {
        kind_epsilon(self.kind())
    }
}

/// A per-system tensor (`[N, 1, …]` scalars or flags, or `[1, …]` in global mode) reshaped to broadcast over
/// the rows of `like` (`[N, …]` of any rank), in `kind` when given.
fn rows_like(t: &Tensor, like: &Tensor, kind: Option<Kind>) -> Tensor {
    let t = match kind {
        Some(k) if t.kind() != k => t.to_kind(k),
        _ => t.shallow_clone(),
    };
    let nd = like.dim();
    if nd == 0 {
        return t.reshape(Vec::<i64>::new());
    }
    let mut shape = vec![1i64; nd];
    shape[0] = t.numel() as i64;
    if t.size() == shape {
        t
    } else {
        t.reshape(shape)
    }
}

impl Image<TensorScalars> for Tensor {
    fn axpy(&self, a: &TensorScalars, x: &Self) -> Self {
        self.addcmul(&rows_like(&a.0, x, Some(x.kind())), x)
    }
    fn scale(&self, a: &TensorScalars) -> Self {
        self * rows_like(&a.0, self, Some(self.kind()))
    }
    fn select(mask: &TensorMask, a: &Self, b: &Self) -> Self {
        a.where_self(&rows_like(&mask.0, a, None), b)
    }
    fn zeros_like(&self) -> Self {
        Tensor::zeros_like(self)
    }
}

/// The machine epsilon of a floating-point dtype (`f64::EPSILON` for non-float kinds).
pub fn kind_epsilon(kind: Kind) -> f64 {
    match kind {
        Kind::Float | Kind::ComplexFloat => f64::from(f32::EPSILON),
        Kind::Half | Kind::ComplexHalf => 9.765_625e-4,
        Kind::BFloat16 => 7.812_5e-3,
        _ => f64::EPSILON,
    }
}
