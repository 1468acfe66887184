//! Choosing a Krylov method by value (configuration files, CLI flags).

use crate::report::{KrylovParams, Solved, SolvedWithImage};
use crate::space::{Image, VectorSpace};

/// A Krylov method (docs/method.md §6), for code that picks the solver from configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Krylov {
    /// Conjugate gradients (SPD operators), [`cg_with`](crate::cg_with).
    #[default]
    Cg,
    /// GMRES (any nonsingular operator), [`gmres_with`](crate::gmres_with).
    Gmres,
    /// BiCGSTAB (non-symmetric operators, two applications per iteration), [`bicgstab_with`](crate::bicgstab_with).
    BiCgStab,
}

impl Krylov {
    /// Solves `K x = b` with this method.
    pub fn solve<V: VectorSpace>(
        self,
        op: impl Fn(&V) -> V,
        b: &V,
        x0: Option<&V>,
        p: &KrylovParams,
    ) -> Solved<V> {
        match self {
            Krylov::Cg => crate::cg::cg_with(op, b, x0, p),
            Krylov::Gmres => crate::gmres::gmres_with(op, b, x0, p),
            Krylov::BiCgStab => crate::bicgstab::bicgstab_with(op, b, x0, p),
        }
    }

    /// Solves `K x = b` with this method for an operator that also returns the image `L v` of each input under
    /// a linear map `L`, and returns `L x` beside `x` without applying `L` again (see [`Image`]).
    ///
    /// For `K v = B v + A (L v)`: every iterate is `x = x0 + Σ c_i p_i` over the vectors `p_i` the operator was
    /// applied to (CG's directions, GMRES's basis, BiCGSTAB's `p` and `s`), so `L x = L x0 + Σ c_i (L p_i)`, with
    /// the same coefficients and the same masking of rejected steps. MMPS uses it to drop its last VJP
    /// (docs/method.md §5.1, §5.8): `n` VJPs per call with `n` CG or GMRES iterations instead of `n + 1`. The image is
    /// `None` when no operator input contributed (`x0 = None` and no accepted step), i.e. `L x = 0`; systems whose
    /// solution is zeroed for being non-finite have their image zeroed too.
    ///
    /// ```
    /// use diem_linalg::{Krylov, KrylovParams};
    /// use ndarray::{array, Array1};
    ///
    /// // K v = v / 2 + A (L v) with L = Aᵀ: a 2 × 2 SPD system whose image lives in R³.
    /// let a = array![[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]];
    /// let op = |v: &Array1<f64>| {
    ///     let image = a.t().dot(v);
    ///     (v * 0.5 + a.dot(&image), image)
    /// };
    /// let b = array![1.0, 2.0];
    /// let (x, image, _) = Krylov::Cg.solve_with_image(op, &b, None, &KrylovParams::new(2)).unwrap();
    /// let image = image.expect("CG took a step");
    /// assert!((&image - &a.t().dot(&x)).iter().all(|e| e.abs() < 1e-12)); // L x, with no third application
    /// ```
    pub fn solve_with_image<V: VectorSpace, W: Image<V::Scalar>>(
        self,
        op: impl Fn(&V) -> (V, W),
        b: &V,
        x0: Option<&V>,
        p: &KrylovParams,
    ) -> SolvedWithImage<V, W> {
        match self {
            Krylov::Cg => crate::cg::cg_image(op, b, x0, p),
            Krylov::Gmres => crate::gmres::gmres_image(op, b, x0, p),
            Krylov::BiCgStab => crate::bicgstab::bicgstab_image(op, b, x0, p),
        }
    }

    /// [`Krylov::solve_with_image`] under a CG [`Safeguard`](crate::Safeguard): a curvature floor and a fallback
    /// operator for the directions that fall below it. GMRES and BiCGSTAB ignore the safeguard (their report's
    /// `fallback` flags stay unset).
    pub fn solve_safeguarded<V: VectorSpace, W: Image<V::Scalar>>(
        self,
        op: impl Fn(&V) -> (V, W),
        guard: &crate::Safeguard<'_, V, W>,
        b: &V,
        x0: Option<&V>,
        p: &KrylovParams,
    ) -> SolvedWithImage<V, W> {
        match self {
            Krylov::Cg => crate::cg::cg_safeguarded(op, guard, b, x0, p),
            Krylov::Gmres => crate::gmres::gmres_image(op, b, x0, p),
            Krylov::BiCgStab => crate::bicgstab::bicgstab_image(op, b, x0, p),
        }
    }

    /// The method's lowercase name (`"cg"`, `"gmres"`, `"bicgstab"`).
    pub fn name(self) -> &'static str {
        match self {
            Krylov::Cg => "cg",
            Krylov::Gmres => "gmres",
            Krylov::BiCgStab => "bicgstab",
        }
    }
}

impl std::str::FromStr for Krylov {
    type Err = crate::LinalgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cg" => Ok(Krylov::Cg),
            "gmres" => Ok(Krylov::Gmres),
            "bicgstab" => Ok(Krylov::BiCgStab),
            _ => Err(crate::LinalgError::InvalidParameter {
                op: "Krylov::from_str",
                name: "method",
                value: s.to_string(),
                expected: "one of \"cg\", \"gmres\", \"bicgstab\"",
            }),
        }
    }
}
