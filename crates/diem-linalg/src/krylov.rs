//! Choosing a Krylov method by value (configuration files, CLI flags).

use crate::report::{KrylovParams, Solved};
use crate::space::VectorSpace;

/// A Krylov method (SPEC.md §6), for code that picks the solver from configuration.
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
