//! Solves that carry images (`Krylov::solve_with_image`, docs/method.md §5.8): `L x` without another application of `L`.

use crate::common::{all_finite, max_abs, randn_mat, rng, spd, to_tensor};
use diem_linalg::{Krylov, KrylovParams, Reduction};
use ndarray::{Array1, Array2};
use proptest::prelude::*;
use std::cell::Cell;
use tch::{Kind, Tensor};

/// An MMPS-shaped system per row: `K v = σ² v + A (L v)` with `L = M Aᵀ` (`A : m × d`, `M : d × d`, SPD for CG,
/// else `M + shift I` with a random non-symmetric part).
struct Problem {
    a: Tensor,
    l: Tensor,
    noise: f64,
}

impl Problem {
    fn new(seed: u64, rows: usize, m: usize, d: usize, symmetric: bool) -> Self {
        let mut g = rng(seed);
        let (mut a_rows, mut l_rows) = (Vec::new(), Vec::new());
        for _ in 0..rows {
            let a: Array2<f64> = randn_mat(&mut g, m, d, 1.0 / (d as f64).sqrt());
            let mut mat = spd(&mut g, d, 0.5);
            if !symmetric {
                mat = mat + randn_mat(&mut g, d, d, 0.3 / (d as f64).sqrt());
            }
            l_rows.push(to_tensor(&mat.dot(&a.t())));
            a_rows.push(to_tensor(&a));
        }
        Self { a: Tensor::stack(&a_rows, 0), l: Tensor::stack(&l_rows, 0), noise: 0.3 }
    }

    /// `L v` as `[N, 1, d]` rows: an image of another rank and size than `v : [N, m]`.
    fn image(&self, v: &Tensor) -> Tensor {
        self.l.matmul(&v.unsqueeze(-1)).transpose(1, 2)
    }

    fn apply(&self, v: &Tensor) -> (Tensor, Tensor) {
        let w = self.image(v);
        let k = v * self.noise + self.a.matmul(&w.transpose(1, 2)).squeeze_dim(-1);
        (k, w)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The carried image is `L x` of the returned `x`, and `x` is the plain solver's, for every method, with and
    /// without a starting point, with GMRES restarts and in both reductions.
    #[test]
    fn image_is_the_map_of_the_solution(seed in any::<u64>(), rows in 1usize..=4, m in 1usize..=6, d in 1usize..=8,
                                        iters in 1usize..=5, start in any::<bool>(), global in any::<bool>(),
                                        restart in prop_oneof![Just(None), Just(Some(2usize))],
                                        method in prop_oneof![Just(Krylov::Cg), Just(Krylov::Gmres), Just(Krylov::BiCgStab)]) {
        let pb = Problem::new(seed, rows, m, d, method == Krylov::Cg);
        let mut g = rng(seed ^ 0x5eed);
        let b = crate::common::randn(&mut g, &[rows as i64, m as i64], 1.0);
        let x0 = crate::common::randn(&mut g, &[rows as i64, m as i64], 0.1);
        let x0 = start.then_some(&x0);
        let reduction = if global { Reduction::Global } else { Reduction::PerSystem };
        let p = KrylovParams::new(iters).with_reduction(reduction).with_restart(restart);
        let (x, image, report) = method.solve_with_image(|v: &Tensor| pb.apply(v), &b, x0, &p).expect("with image");
        let (x_plain, report_plain) = method.solve(|v: &Tensor| pb.apply(v).0, &b, x0, &p).expect("plain");
        prop_assert!(x.equal(&x_plain), "carrying images must not change the iterate");
        prop_assert_eq!(report.applications, report_plain.applications);
        let expected = pb.image(&x);
        let scale = max_abs(&expected).max(1.0);
        match image {
            Some(w) => {
                prop_assert_eq!(w.size(), expected.size());
                let err = max_abs(&(&w - &expected)) / scale;
                prop_assert!(err < 1e-10, "image error {err}");
            }
            None => prop_assert!(max_abs(&expected) == 0.0, "no image, so L x must be zero"),
        }
    }
}

/// f32 rows with f64 recurrences (MMPS's precision policy): the image is `L x` to f32 round-off.
#[test]
fn f32_image_matches_to_round_off() {
    let pb = Problem::new(7, 16, 3, 12, true);
    let (a, l) = (pb.a.to_kind(Kind::Float), pb.l.to_kind(Kind::Float));
    let pb = Problem { a, l, noise: pb.noise };
    let b = crate::common::randn(&mut rng(8), &[16, 3], 1.0).to_kind(Kind::Float);
    for method in [Krylov::Cg, Krylov::Gmres, Krylov::BiCgStab] {
        let (x, image, _) = method
            .solve_with_image(|v: &Tensor| pb.apply(v), &b, None, &KrylovParams::new(3))
            .expect("solve");
        let w = image.expect("some image");
        assert_eq!((x.kind(), w.kind()), (Kind::Float, Kind::Float));
        let expected = pb.image(&x);
        let err = max_abs(&(&w - &expected).to_kind(Kind::Double)) / max_abs(&expected).max(1.0);
        assert!(err < 1e-5, "{method:?}: {err}");
    }
}

/// A system whose operator output turns non-finite keeps its last finite iterate, and its image stays that
/// iterate's image (no `0 · NaN` from the rejected step); the other systems are untouched.
#[test]
fn a_broken_row_keeps_a_finite_image_and_spares_the_others() {
    let pb = Problem::new(11, 3, 4, 6, true);
    let b = crate::common::randn(&mut rng(12), &[3, 4], 1.0);
    for method in [Krylov::Cg, Krylov::Gmres, Krylov::BiCgStab] {
        let calls = Cell::new(0);
        let op = |v: &Tensor| {
            calls.set(calls.get() + 1);
            let (k, w) = pb.apply(v);
            if calls.get() >= 2 {
                let nan_row = Tensor::from_slice(&[0.0f64, f64::NAN, 0.0]).reshape([3, 1]);
                (k + &nan_row, w + nan_row.unsqueeze(-1))
            } else {
                (k, w)
            }
        };
        let (x, image, report) = method.solve_with_image(op, &b, None, &KrylovParams::new(4)).expect("solve");
        let w = image.expect("some image");
        assert!(all_finite(&x) && all_finite(&w), "{method:?}");
        assert!(report.breakdowns()[1], "{method:?}: row 1 broke down");
        let err = max_abs(&(&w - pb.image(&x))) / max_abs(&pb.image(&x)).max(1.0);
        assert!(err < 1e-10, "{method:?}: {err}");
        let (x_ok, _) =
            method.solve(|v: &Tensor| pb.apply(v).0, &b, None, &KrylovParams::new(4)).expect("clean");
        for row in [0, 2] {
            assert!(max_abs(&(x.get(row) - x_ok.get(row))) < 1e-12, "{method:?}: row {row}");
        }
    }
}

/// The host path: one system as `Array1`, its image a vector of another length.
#[test]
fn host_vectors_carry_images() {
    let mut g = rng(3);
    let (m, d) = (3, 7);
    let a = randn_mat(&mut g, m, d, 0.4);
    let l = spd(&mut g, d, 1.0).dot(&a.t());
    let b = crate::common::randn_vec(&mut g, m);
    let op = |v: &Array1<f64>| -> (Array1<f64>, Array1<f64>) {
        let w = l.dot(v);
        (v * 0.2 + a.dot(&w), w)
    };
    for method in [Krylov::Cg, Krylov::Gmres, Krylov::BiCgStab] {
        let (x, image, report) = method.solve_with_image(op, &b, None, &KrylovParams::new(m)).expect("solve");
        let w = image.expect("some image");
        assert!(report.converged_flags()[0], "{method:?}: m iterations solve an m × m system");
        let err = (&w - &l.dot(&x)).iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
        assert!(err < 1e-10, "{method:?}: {err}");
    }
}
