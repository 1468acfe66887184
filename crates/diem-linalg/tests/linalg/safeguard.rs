//! The CG curvature safeguard (`Krylov::solve_safeguarded`) and GMRES's scale-relative regularizer.

use crate::common::{max_abs, randn, rel_err, rng, spd, to_tensor};
use diem_linalg::{gmres_with, Krylov, KrylovParams, Reduction, Safeguard};
use ndarray::Array2;
use proptest::prelude::*;
use tch::{Kind, Tensor};

/// `[N, m, m]` matrices applied row by row to `[N, m]` vectors.
fn bmv(a: &Tensor, v: &Tensor) -> Tensor {
    a.matmul(&v.unsqueeze(-1)).squeeze_dim(-1)
}

/// An MMPS-shaped system per row, `K = σ_y² I + M`, whose "covariance" part `M` is indefinite along
/// `e_1`: `M = diag(1, −σ_y²/2 − δ)` with `δ ≥ 0`, so `K = diag(1 + σ_y², σ_y²/2 − δ)` — curvature along `e_1`
/// below the floor `σ_y²` (positive for small δ: plain CG accepts it and takes a step up to `1/δ'` long).
struct Indefinite {
    k: Tensor,
    noise: f64,
}

impl Indefinite {
    fn new(deltas: &[f64], noise: f64) -> Self {
        let rows: Vec<Tensor> = deltas
            .iter()
            .map(|d| Tensor::from_slice(&[1.0 + noise, 0.0, 0.0, noise / 2.0 - d]).reshape([2, 2]))
            .collect();
        Self { k: Tensor::stack(&rows, 0), noise }
    }

    /// `(K u, u)`: the identity as the image map, so the image is the solution itself.
    fn apply(&self, u: &Tensor) -> (Tensor, Tensor) {
        (bmv(&self.k, u), u.shallow_clone())
    }
}

/// Below-floor curvature: plain CG takes the (huge) step, the floor rejects it, and the fallback replaces it
/// by the stand-in operator's step (`K_h = I`, image `2 u`), flagged per row; rows with admissible curvature
/// are untouched.
#[test]
fn below_floor_steps_are_replaced_by_the_fallback() {
    let noise = 1e-4;
    // Row 0: along e_2 only (curvature σ_y²/2 − 1e-9: accepted by plain CG, step ≈ 2e4); row 1: e_1 only
    // (curvature 1 + σ_y², admissible).
    let pb = Indefinite::new(&[1e-9, 0.0], noise);
    let b = Tensor::from_slice(&[0.0, 1.0, 1.0, 0.0]).reshape([2, 2]);
    let p = KrylovParams::new(1);
    let (x_plain, _, plain) =
        Krylov::Cg.solve_with_image(|u: &Tensor| pb.apply(u), &b, None, &p).expect("plain");
    assert!(x_plain.double_value(&[0, 1]) > 1e4, "plain CG takes the step: {x_plain:?}");
    assert_eq!(plain.breakdowns(), vec![false, false]);

    let floor = |u: &Tensor| u * pb.noise;
    let rejected = Safeguard { floor: Some(&floor), fallback: None };
    let (x, image, report) =
        Krylov::Cg.solve_safeguarded(|u: &Tensor| pb.apply(u), &rejected, &b, None, &p).expect("rejected");
    assert_eq!(x.double_value(&[0, 1]), 0.0, "the below-floor step is rejected");
    assert_eq!(report.breakdowns(), vec![true, false]);
    assert_eq!(report.fallbacks(), vec![false, false]);
    assert!(max_abs(&(image.expect("row 1 stepped") - &x)) == 0.0);

    let stand_in = |u: &Tensor| (u.shallow_clone(), u * 2.0);
    let guard = Safeguard { floor: Some(&floor), fallback: Some(&stand_in) };
    let (x, image, report) =
        Krylov::Cg.solve_safeguarded(|u: &Tensor| pb.apply(u), &guard, &b, None, &p).expect("fallback");
    let image = image.expect("steps were taken");
    // Row 0: α_h = <b, b>/<b, I b> = 1, so x = b and the image is 2 b; row 1: plain CG's exact step.
    assert!((x.double_value(&[0, 1]) - 1.0).abs() < 1e-15, "{x:?}");
    assert!((image.double_value(&[0, 1]) - 2.0).abs() < 1e-15, "{image:?}");
    assert!((x.double_value(&[1, 0]) - 1.0 / (1.0 + noise)).abs() < 1e-15);
    assert_eq!(report.fallbacks(), vec![true, false]);
    assert_eq!(report.breakdowns(), vec![true, false]);
    // The fallback system stops: more iterations change nothing for it.
    let (x3, _, _) = Krylov::Cg
        .solve_safeguarded(|u: &Tensor| pb.apply(u), &guard, &b, None, &KrylovParams::new(3))
        .expect("3 iterations");
    assert!(max_abs(&(x3 - &x)) < 1e-15);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// On SPD systems whose floor holds (`K ⪰ F`), the safeguard changes nothing: the same iterate, image and
    /// report as plain CG, in both reductions.
    #[test]
    fn admissible_systems_are_unchanged(seed in any::<u64>(), rows in 1usize..=4, m in 1usize..=6,
                                        iters in 1usize..=6, global in any::<bool>()) {
        let mut g = rng(seed);
        let mats: Vec<Tensor> = (0..rows).map(|_| to_tensor(&spd(&mut g, m, 0.3))).collect();
        let k = Tensor::stack(&mats, 0);
        let b = randn(&mut g, &[rows as i64, m as i64], 1.0);
        let reduction = if global { Reduction::Global } else { Reduction::PerSystem };
        let p = KrylovParams::new(iters).with_reduction(reduction);
        let op = |u: &Tensor| (bmv(&k, u), u * 3.0);
        // F = 0.3 I ⪯ K (the SPD shift), and a fallback that must never be used.
        let floor = |u: &Tensor| u * 0.29;
        let stand_in = |u: &Tensor| (u * 1e6, u * f64::NAN);
        let guard = Safeguard { floor: Some(&floor), fallback: Some(&stand_in) };
        let (x0, i0, r0) = Krylov::Cg.solve_with_image(op, &b, None, &p).expect("plain");
        let (x1, i1, r1) = Krylov::Cg.solve_safeguarded(op, &guard, &b, None, &p).expect("guarded");
        prop_assert!(x0.equal(&x1));
        prop_assert!(i0.expect("image").equal(&i1.expect("image")));
        prop_assert_eq!(r0.breakdowns(), r1.breakdowns());
        prop_assert!(r1.fallbacks().iter().all(|f| !f));
    }
}

/// GMRES solves `(c K) x = b` as `x / c` whatever the scale `c`: its floors and regularizer are relative. With
/// the former absolute f32 epsilon (1.2e-7) the regularizer was comparable to `c K` itself at `c = 1e-6` and
/// shrank the solution by several percent.
#[test]
fn gmres_is_scale_invariant() {
    let mut g = rng(7);
    let m = 4;
    let a: Array2<f64> = spd(&mut g, m, 0.2);
    let k = to_tensor(&a).unsqueeze(0).to_kind(Kind::Float);
    let b = randn(&mut g, &[1, m as i64], 1.0).to_kind(Kind::Float);
    let p = KrylovParams::new(m);
    let (x1, _) = gmres_with(|u: &Tensor| bmv(&k, u), &b, None, &p).expect("unit scale");
    for c in [1e-3, 1e-6, 1e-9, 1e3] {
        let kc = &k * c;
        let (xc, report) = gmres_with(|u: &Tensor| bmv(&kc, u), &b, None, &p).expect("scaled");
        let err = rel_err(&(xc.to_kind(Kind::Double) * c), &x1.to_kind(Kind::Double));
        assert!(err < 1e-5, "scale {c}: relative error {err}");
        assert!(report.residual_norms()[0] <= 1e-5 * max_abs(&b.to_kind(Kind::Double)) * 2.0);
    }
    // The MMPS-sized case: K = σ_y² I + M with σ_y = 1e-3 and M ≈ σ_y², in f32.
    let sy2 = 1e-6;
    let kk = (to_tensor(&a) * sy2 + Tensor::eye(m as i64, (Kind::Double, tch::Device::Cpu)) * sy2)
        .unsqueeze(0)
        .to_kind(Kind::Float);
    let (x, _) = gmres_with(|u: &Tensor| bmv(&kk, u), &b, None, &p).expect("mmps-sized");
    let exact = Tensor::linalg_solve(&kk.to_kind(Kind::Double), &b.to_kind(Kind::Double), true);
    let err = rel_err(&(x.to_kind(Kind::Double) * sy2), &(exact * sy2));
    assert!(err < 1e-5, "σ_y = 1e-3: relative error {err}");
}
