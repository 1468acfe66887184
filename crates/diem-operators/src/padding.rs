//! Boundary extensions as index maps, so that padding is a gather and its adjoint an exact scatter-add.
//!
//! Padding a length-`n` axis by `p` on each side reads the input at `src(q)` for every padded position
//! `q ∈ 0..n + 2p`. For the reflecting conventions the adjoint *folds back*: the gradient at a padded
//! position is added to the interior entry it was copied from (`index_add`), which is exactly the
//! transpose of the gather.

use tch::Tensor;

/// How a convolution extends the image beyond its border.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// Zeros outside the image.
    Zero,
    /// Mirror without repeating the edge (`torch` "reflect"): `… 2 1 | 0 1 2 … n−1 | n−2 …`.
    /// Needs `p ≤ n − 1`.
    Reflect,
    /// Mirror repeating the edge (MATLAB "symmetric"): `… 1 0 | 0 1 … n−1 | n−1 n−2 …`. Needs `p ≤ n`.
    Symmetric,
    /// Periodic wrap-around. Needs `p ≤ n`.
    Circular,
}

impl Boundary {
    /// The integer code stored in observation files.
    pub fn code(self) -> i64 {
        match self {
            Boundary::Zero => 0,
            Boundary::Reflect => 1,
            Boundary::Symmetric => 2,
            Boundary::Circular => 3,
        }
    }

    /// The boundary for a code written by [`Boundary::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Boundary::Zero),
            1 => Some(Boundary::Reflect),
            2 => Some(Boundary::Symmetric),
            3 => Some(Boundary::Circular),
            _ => None,
        }
    }

    /// The largest padding an axis of length `n` supports.
    pub fn max_pad(self, n: i64) -> i64 {
        match self {
            Boundary::Zero => i64::MAX,
            Boundary::Reflect => n - 1,
            Boundary::Symmetric | Boundary::Circular => n,
        }
    }

    /// The source index of every padded position (`None` for [`Boundary::Zero`]).
    pub fn source_indices(self, n: i64, p: i64) -> Option<Vec<i64>> {
        let src = |s: i64| -> i64 {
            match self {
                Boundary::Zero => s,
                Boundary::Reflect => {
                    if s < 0 {
                        -s
                    } else if s >= n {
                        2 * (n - 1) - s
                    } else {
                        s
                    }
                }
                Boundary::Symmetric => {
                    if s < 0 {
                        -s - 1
                    } else if s >= n {
                        2 * n - 1 - s
                    } else {
                        s
                    }
                }
                Boundary::Circular => s.rem_euclid(n),
            }
        };
        (self != Boundary::Zero).then(|| (0..n + 2 * p).map(|q| src(q - p)).collect())
    }
}

/// Pads the last two axes of `x : [.., H, W]` by `(ph, pw)` on each side.
pub(crate) fn pad2d(x: &Tensor, ph: i64, pw: i64, boundary: Boundary) -> Tensor {
    let size = x.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let d = size.len() as i64;
    match (boundary.source_indices(h, ph), boundary.source_indices(w, pw)) {
        (Some(ih), Some(iw)) => {
            let ih = Tensor::from_slice(&ih).to_device(x.device());
            let iw = Tensor::from_slice(&iw).to_device(x.device());
            x.index_select(d - 2, &ih).index_select(d - 1, &iw)
        }
        _ => x.constant_pad_nd([pw, pw, ph, ph]),
    }
}

/// The adjoint of [`pad2d`]: `g : [.., H + 2ph, W + 2pw]` to `[.., H, W]` (fold-back for reflecting
/// boundaries, crop for zeros).
pub(crate) fn pad2d_adjoint(g: &Tensor, h: i64, w: i64, ph: i64, pw: i64, boundary: Boundary) -> Tensor {
    let size = g.size();
    let d = size.len() as i64;
    match (boundary.source_indices(h, ph), boundary.source_indices(w, pw)) {
        (Some(ih), Some(iw)) => {
            let ih = Tensor::from_slice(&ih).to_device(g.device());
            let iw = Tensor::from_slice(&iw).to_device(g.device());
            let mut s1 = size.clone();
            s1[(d - 2) as usize] = h;
            let rows = Tensor::zeros(&s1, (g.kind(), g.device())).index_add(d - 2, &ih, g);
            let mut s2 = s1;
            s2[(d - 1) as usize] = w;
            Tensor::zeros(&s2, (g.kind(), g.device())).index_add(d - 1, &iw, &rows)
        }
        _ => g.narrow(d - 2, ph, h).narrow(d - 1, pw, w),
    }
}
