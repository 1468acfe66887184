//! Diagonal-plus-low-rank (DPLR) matrices `M = diag(D) + U V` (docs/method.md §7.1).
//!
//! `D ∈ R^N`, `U ∈ R^{N×r}`, `V ∈ R^{r×N}`, all batched over leading dimensions that broadcast against each
//! other: `D: [..., N]`, `U: [..., N, r]`, `V: [..., r, N]`. A rank of zero (no `U`, `V`) is a pure diagonal.
//! PPCA (docs/method.md §7.3) produces the symmetric case `V = Uᵀ`.
//!
//! | operation | formula |
//! | --- | --- |
//! | product | `M x = D ⊙ x + U (V x)` |
//! | add scalar/diagonal c | `M + c = DPLR(D + c, U, V)` |
//! | left scale by diagonal c | `c M = DPLR(c ⊙ D, diag(c) U, V)` |
//! | right scale by diagonal c | `M c = DPLR(D ⊙ c, U, V diag(c))` |
//! | capacitance | `W = I_r + V diag(1/D) U` |
//! | inverse (Woodbury) | `M⁻¹ = DPLR(1/D, −diag(1/D) U, W⁻¹ V diag(1/D))` |
//! | solve | `M⁻¹ x = x/D − (1/D) ⊙ U W⁻¹ V (x/D)` |
//! | diagonal | `diag(M)_i = D_i + Σ_k U_ik V_ki` |
//! | log-determinant | `ln|det M| = ln|det W| + Σ_i ln|D_i|`, sign `= sign(det W) Π_i sign(D_i)` |
//!
//! ```
//! use diem_linalg::Dplr;
//! use tch::{Kind, Tensor};
//! let d = Tensor::from_slice(&[2.0f64, 3.0, 4.0]);
//! let u = Tensor::from_slice(&[1.0f64, 0.0, 1.0]).reshape([3, 1]);
//! let m = Dplr::symmetric(d, u)?; // diag(2, 3, 4) + u uᵀ
//! let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
//! let y = m.matvec(&x);
//! let back = m.solve(&y);
//! assert!((back - &x).abs().max().double_value(&[]) < 1e-12);
//! # Ok::<(), diem_linalg::LinalgError>(())
//! ```

use crate::error::{LinalgError, Result};
use tch::{Device, Kind, Tensor};

/// A (batched) diagonal-plus-low-rank matrix `M = diag(D) + U V` (docs/method.md §7.1).
///
/// Operations never form the `N × N` matrix except [`Dplr::to_dense`]; the Woodbury identity reduces solves,
/// inverses and determinants to `r × r` problems.
#[derive(Debug)]
pub struct Dplr {
    d: Tensor,
    u: Option<Tensor>,
    v: Option<Tensor>,
}

impl Clone for Dplr {
    fn clone(&self) -> Self {
        Self {
            d: self.d.shallow_clone(),
            u: self.u.as_ref().map(Tensor::shallow_clone),
            v: self.v.as_ref().map(Tensor::shallow_clone),
        }
    }
}

/// Broadcasts two batch shapes (numpy rules); `None` when they are incompatible.
pub(crate) fn broadcast_shapes(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

fn shape_err(op: &'static str, arg: &'static str, expected: String, t: &Tensor) -> LinalgError {
    LinalgError::Shape { op, arg, expected, got: t.size() }
}

impl Dplr {
    /// Builds `diag(d) + u v` after checking shapes, dtypes and devices.
    ///
    /// `d: [..., N]`, `u: [..., N, r]`, `v: [..., r, N]`; the batch dimensions must broadcast. `u` and `v` are
    /// given together or not at all; a rank of zero (`r = 0`) is stored as a pure diagonal.
    pub fn new(d: Tensor, u: Option<Tensor>, v: Option<Tensor>) -> Result<Self> {
        const OP: &str = "Dplr::new";
        if d.dim() == 0 {
            return Err(shape_err(OP, "d", "[..., N] with at least one dim".into(), &d));
        }
        if !d.is_floating_point() {
            return Err(LinalgError::Mismatch {
                op: OP,
                message: format!("`d` must be a floating-point tensor, got {:?}", d.kind()),
            });
        }
        let ds = d.size();
        let n = ds[ds.len() - 1];
        let (u, v) = match (u, v) {
            (None, None) => (None, None),
            (Some(u), Some(v)) => {
                if u.dim() < 2 {
                    return Err(shape_err(OP, "u", format!("[..., {n}, r]"), &u));
                }
                if v.dim() < 2 {
                    return Err(shape_err(OP, "v", format!("[..., r, {n}]"), &v));
                }
                let us = u.size();
                let vs = v.size();
                let r = us[us.len() - 1];
                if us[us.len() - 2] != n {
                    return Err(shape_err(OP, "u", format!("[..., {n}, r] (N from d)"), &u));
                }
                if vs[vs.len() - 1] != n || vs[vs.len() - 2] != r {
                    return Err(shape_err(OP, "v", format!("[..., {r}, {n}] (r from u, N from d)"), &v));
                }
                let batch = broadcast_shapes(&ds[..ds.len() - 1], &us[..us.len() - 2])
                    .and_then(|b| broadcast_shapes(&b, &vs[..vs.len() - 2]));
                if batch.is_none() {
                    return Err(LinalgError::Mismatch {
                        op: OP,
                        message: format!("batch dimensions do not broadcast: d {ds:?}, u {us:?}, v {vs:?}"),
                    });
                }
                for (name, t) in [("u", &u), ("v", &v)] {
                    if t.kind() != d.kind() || t.device() != d.device() {
                        return Err(LinalgError::Mismatch {
                            op: OP,
                            message: format!(
                                "`{name}` is {:?} on {:?} but `d` is {:?} on {:?}",
                                t.kind(),
                                t.device(),
                                d.kind(),
                                d.device()
                            ),
                        });
                    }
                }
                if r == 0 {
                    (None, None)
                } else {
                    (Some(u), Some(v))
                }
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(LinalgError::InvalidParameter {
                    op: OP,
                    name: "u, v",
                    value: "only one of them".into(),
                    expected: "both factors or neither",
                })
            }
        };
        Ok(Self { d, u, v })
    }

    /// The pure diagonal `diag(d)` (rank 0); `d: [..., N]`.
    pub fn diagonal(d: Tensor) -> Result<Self> {
        Self::new(d, None, None)
    }

    /// The symmetric case `diag(d) + u uᵀ`; `d: [..., N]`, `u: [..., N, r]`.
    pub fn symmetric(d: Tensor, u: Tensor) -> Result<Self> {
        let v = u.transpose(-1, -2);
        Self::new(d, Some(u), Some(v))
    }

    /// The identity `I_N` of the given dtype and device.
    pub fn identity(n: i64, kind: Kind, device: Device) -> Self {
        Self { d: Tensor::ones([n], (kind, device)), u: None, v: None }
    }

    /// The diagonal part `D`, `[..., N]`.
    pub fn d(&self) -> &Tensor {
        &self.d
    }

    /// The left factor `U`, `[..., N, r]`; `None` when the rank is zero.
    pub fn u(&self) -> Option<&Tensor> {
        self.u.as_ref()
    }

    /// The right factor `V`, `[..., r, N]`; `None` when the rank is zero.
    pub fn v(&self) -> Option<&Tensor> {
        self.v.as_ref()
    }

    /// The size `N` of the (square) matrix.
    pub fn dim(&self) -> i64 {
        let s = self.d.size();
        s[s.len() - 1]
    }

    /// The rank `r` of the low-rank part (0 for a pure diagonal).
    pub fn rank(&self) -> i64 {
        self.u.as_ref().map_or(0, |u| {
            let s = u.size();
            s[s.len() - 1]
        })
    }

    /// The broadcast batch shape of `D`, `U` and `V` (empty when unbatched).
    pub fn batch_shape(&self) -> Vec<i64> {
        let ds = self.d.size();
        let mut b = ds[..ds.len() - 1].to_vec();
        for t in [&self.u, &self.v].into_iter().flatten() {
            let s = t.size();
            b = broadcast_shapes(&b, &s[..s.len() - 2]).unwrap_or(b);
        }
        b
    }

    /// The dtype of the factors.
    pub fn kind(&self) -> Kind {
        self.d.kind()
    }

    /// The device of the factors.
    pub fn device(&self) -> Device {
        self.d.device()
    }

    fn check_vec(&self, op: &'static str, x: &Tensor) -> Result<()> {
        let s = x.size();
        if s.last() != Some(&self.dim()) {
            return Err(shape_err(op, "x", format!("[..., {}]", self.dim()), x));
        }
        Ok(())
    }

    /// `V x` for `x: [..., N]`, as `[..., r, 1]`.
    fn v_times(v: &Tensor, x: &Tensor) -> Tensor {
        v.matmul(&x.unsqueeze(-1))
    }

    /// The product `M x = D ⊙ x + U (V x)` (docs/method.md §7.1); `x: [..., N]`, broadcasting over batch dims.
    pub fn f_matvec(&self, x: &Tensor) -> Result<Tensor> {
        self.check_vec("Dplr::matvec", x)?;
        let dx = &self.d * x;
        Ok(match (&self.u, &self.v) {
            (Some(u), Some(v)) => dx + u.matmul(&Self::v_times(v, x)).squeeze_dim(-1),
            _ => dx,
        })
    }

    /// [`Dplr::f_matvec`], panicking on a shape mismatch (tch convention).
    ///
    /// # Panics
    /// When the last dimension of `x` is not `N`.
    #[track_caller]
    pub fn matvec(&self, x: &Tensor) -> Tensor {
        match self.f_matvec(x) {
            Ok(y) => y,
            Err(e) => panic!("{e}"),
        }
    }

    /// `M + c I = DPLR(D + c, U, V)` (docs/method.md §7.1).
    pub fn add_scalar(&self, c: f64) -> Self {
        Self { d: &self.d + c, ..self.clone() }
    }

    /// `M + diag(c) = DPLR(D + c, U, V)`; `c` broadcasts against `D: [..., N]`.
    pub fn add_diag(&self, c: &Tensor) -> Result<Self> {
        Self::new(
            &self.d + c,
            self.u.as_ref().map(Tensor::shallow_clone),
            self.v.as_ref().map(Tensor::shallow_clone),
        )
    }

    /// `a M = DPLR(a D, a U, V)` for a scalar `a`.
    pub fn scale(&self, a: f64) -> Self {
        Self {
            d: &self.d * a,
            u: self.u.as_ref().map(|u| u * a),
            v: self.v.as_ref().map(Tensor::shallow_clone),
        }
    }

    /// Left scaling `diag(c) M = DPLR(c ⊙ D, diag(c) U, V)` (docs/method.md §7.1); `c: [..., N]`.
    pub fn scale_left(&self, c: &Tensor) -> Result<Self> {
        self.check_vec("Dplr::scale_left", c)?;
        Self::new(
            &self.d * c,
            self.u.as_ref().map(|u| u * c.unsqueeze(-1)),
            self.v.as_ref().map(Tensor::shallow_clone),
        )
    }

    /// Right scaling `M diag(c) = DPLR(D ⊙ c, U, V diag(c))` (docs/method.md §7.1); `c: [..., N]`.
    pub fn scale_right(&self, c: &Tensor) -> Result<Self> {
        self.check_vec("Dplr::scale_right", c)?;
        Self::new(
            &self.d * c,
            self.u.as_ref().map(Tensor::shallow_clone),
            self.v.as_ref().map(|v| v * c.unsqueeze(-2)),
        )
    }

    /// The transpose `Mᵀ = DPLR(D, Vᵀ, Uᵀ)`.
    pub fn transpose(&self) -> Self {
        Self {
            d: self.d.shallow_clone(),
            u: self.v.as_ref().map(|v| v.transpose(-1, -2)),
            v: self.u.as_ref().map(|u| u.transpose(-1, -2)),
        }
    }

    /// The capacitance matrix `W = I_r + V diag(1/D) U`, `[..., r, r]` (docs/method.md §7.1); `None` at rank 0.
    pub fn capacitance(&self) -> Option<Tensor> {
        let (u, v) = (self.u.as_ref()?, self.v.as_ref()?);
        let r = self.rank();
        let vd = v / self.d.unsqueeze(-2);
        Some(vd.matmul(u) + Tensor::eye(r, (self.kind(), self.device())))
    }

    /// Woodbury solve `M⁻¹ x = x/D − (1/D) ⊙ U W⁻¹ V (x/D)` (docs/method.md §7.1); `x: [..., N]`.
    pub fn f_solve(&self, x: &Tensor) -> Result<Tensor> {
        self.check_vec("Dplr::solve", x)?;
        let y = x / &self.d;
        Ok(match (&self.u, &self.v, self.capacitance()) {
            (Some(u), Some(v), Some(w)) => {
                let z = Tensor::f_linalg_solve(&w, &Self::v_times(v, &y), true)?;
                &y - u.matmul(&z).squeeze_dim(-1) / &self.d
            }
            _ => y,
        })
    }

    /// [`Dplr::f_solve`], panicking on a shape mismatch or a singular capacitance (tch convention).
    ///
    /// # Panics
    /// When the last dimension of `x` is not `N`, or when libtorch fails to solve with `W`.
    #[track_caller]
    pub fn solve(&self, x: &Tensor) -> Tensor {
        match self.f_solve(x) {
            Ok(y) => y,
            Err(e) => panic!("{e}"),
        }
    }

    /// The inverse as a DPLR: `M⁻¹ = DPLR(1/D, −diag(1/D) U, W⁻¹ V diag(1/D))` (Woodbury, docs/method.md §7.1).
    pub fn f_inverse(&self) -> Result<Self> {
        let dinv = self.d.reciprocal();
        match (&self.u, &self.v, self.capacitance()) {
            (Some(u), Some(v), Some(w)) => {
                let u2 = -(u * dinv.unsqueeze(-1));
                let v2 = Tensor::f_linalg_solve(&w, v, true)? * dinv.unsqueeze(-2);
                Self::new(dinv, Some(u2), Some(v2))
            }
            _ => Self::new(dinv, None, None),
        }
    }

    /// [`Dplr::f_inverse`], panicking when libtorch fails to solve with the capacitance.
    ///
    /// # Panics
    /// When the capacitance matrix cannot be factorized.
    #[track_caller]
    pub fn inverse(&self) -> Self {
        match self.f_inverse() {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// Sign and log-absolute-determinant, each `[...]` (the batch shape):
    /// `ln|det M| = ln|det W| + Σ_i ln|D_i|`, `sign = sign(det W) Π_i sign(D_i)` (docs/method.md §7.1).
    pub fn slogdet(&self) -> (Tensor, Tensor) {
        let sign_d = self.d.sign().prod_dim_int(-1, false, self.kind());
        let log_d = self.d.abs().log().sum_dim_intlist(-1, false, self.kind());
        match self.capacitance() {
            Some(w) => {
                let (s, l) = Tensor::linalg_slogdet(&w);
                (sign_d * s, log_d + l)
            }
            None => (sign_d, log_d),
        }
    }

    /// `ln|det M|` alone, `[...]`; see [`Dplr::slogdet`].
    pub fn logabsdet(&self) -> Tensor {
        self.slogdet().1
    }

    /// The diagonal `diag(M)_i = D_i + Σ_k U_ik V_ki` (docs/method.md §7.1), `[..., N]`.
    pub fn diag(&self) -> Tensor {
        match (&self.u, &self.v) {
            (Some(u), Some(v)) => &self.d + (u * v.transpose(-1, -2)).sum_dim_intlist(-1, false, self.kind()),
            _ => self.d.shallow_clone(),
        }
    }

    /// `trace(M) = Σ_i diag(M)_i`, `[...]`.
    pub fn trace(&self) -> Tensor {
        self.diag().sum_dim_intlist(-1, false, self.kind())
    }

    /// Squared Frobenius norm `Σ D_i² + 2 Σ_i D_i (UV)_ii + Σ (UᵀU) ⊙ (V Vᵀ)`, `[...]`.
    ///
    /// The last term equals `||U V||_F²` for any `U`, `V` (and `||V U||_F²` of docs/method.md §7.1 when `V = Uᵀ`).
    pub fn frobenius_sq(&self) -> Tensor {
        let k = self.kind();
        let dd = self.d.square().sum_dim_intlist(-1, false, k);
        match (&self.u, &self.v) {
            (Some(u), Some(v)) => {
                let uv_diag = (u * v.transpose(-1, -2)).sum_dim_intlist(-1, false, k);
                let cross = (&self.d * uv_diag).sum_dim_intlist(-1, false, k) * 2.0;
                let utu = u.transpose(-1, -2).matmul(u);
                let vvt = v.matmul(&v.transpose(-1, -2));
                dd + cross + (utu * vvt).sum_dim_intlist([-2i64, -1].as_slice(), false, k)
            }
            _ => dd,
        }
    }

    /// The dense matrix `diag(D) + U V`, `[..., N, N]`.
    pub fn to_dense(&self) -> Tensor {
        let diag = self.d.diag_embed(0, -2, -1);
        match (&self.u, &self.v) {
            (Some(u), Some(v)) => diag + u.matmul(v),
            _ => diag,
        }
    }

    /// The same matrix on another device.
    pub fn to_device(&self, device: Device) -> Self {
        Self {
            d: self.d.to_device(device),
            u: self.u.as_ref().map(|t| t.to_device(device)),
            v: self.v.as_ref().map(|t| t.to_device(device)),
        }
    }

    /// The same matrix in another floating-point dtype.
    pub fn to_kind(&self, kind: Kind) -> Self {
        Self {
            d: self.d.to_kind(kind),
            u: self.u.as_ref().map(|t| t.to_kind(kind)),
            v: self.v.as_ref().map(|t| t.to_kind(kind)),
        }
    }

    /// Detached copies of the factors (no autograd history).
    pub fn detach(&self) -> Self {
        Self {
            d: self.d.detach(),
            u: self.u.as_ref().map(Tensor::detach),
            v: self.v.as_ref().map(Tensor::detach),
        }
    }
}
