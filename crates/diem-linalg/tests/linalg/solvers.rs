//! Krylov solvers on ndarray, f64 (docs/method.md §6, §12.1 item 9).

use crate::common::{nonsym, norm, randn_mat, randn_vec, rng, spd};
use diem_linalg::{bicgstab, cg, gmres, gmres_with, KrylovParams};
use ndarray::{Array1, Array2};
use proptest::prelude::*;

fn residual(a: &Array2<f64>, x: &Array1<f64>, b: &Array1<f64>) -> f64 {
    norm(&(b - &a.dot(x))) / norm(b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// CG solves an SPD m × m system to 1e-8 relative residual in at most m iterations.
    #[test]
    fn cg_solves_spd(seed in any::<u64>(), n in 1usize..=32) {
        let mut g = rng(seed);
        let a = spd(&mut g, n, 0.5);
        let b = randn_vec(&mut g, n);
        let (x, rep) = cg(|v: &Array1<f64>| a.dot(v), &b, None, n, None).expect("cg");
        prop_assert!(residual(&a, &x, &b) < 1e-8, "residual {}", residual(&a, &x, &b));
        prop_assert!(!rep.breakdown);
        prop_assert!(rep.applications <= n);
    }

    /// GMRES solves a nonsingular nonsymmetric m × m system in at most m iterations.
    #[test]
    fn gmres_solves_nonsymmetric(seed in any::<u64>(), n in 1usize..=32) {
        let mut g = rng(seed);
        let a = nonsym(&mut g, n, 1.5);
        let b = randn_vec(&mut g, n);
        let (x, rep) = gmres(|v: &Array1<f64>| a.dot(v), &b, None, n, None).expect("gmres");
        prop_assert!(residual(&a, &x, &b) < 1e-8, "residual {}", residual(&a, &x, &b));
        prop_assert!(!rep.breakdown);
    }

    /// GMRES's residual never increases with n, and its Givens estimate matches the true residual.
    #[test]
    fn gmres_residual_is_monotone(seed in any::<u64>(), n in 2usize..=16) {
        let mut g = rng(seed);
        let a = nonsym(&mut g, n, 0.5);
        let b = randn_vec(&mut g, n);
        let mut last = f64::INFINITY;
        for k in 1..=n {
            let (x, rep) = gmres(|v: &Array1<f64>| a.dot(v), &b, None, k, None).expect("gmres");
            let res = norm(&(&b - &a.dot(&x)));
            prop_assert!(res <= last * (1.0 + 1e-9) + 1e-12, "k = {k}: {res} > {last}");
            prop_assert!((res - rep.residual_norm).abs() <= 1e-8 * norm(&b), "estimate {} vs {res}", rep.residual_norm);
            last = res;
        }
    }

    /// BiCGSTAB converges on well-conditioned nonsymmetric systems.
    #[test]
    fn bicgstab_solves_well_conditioned(seed in any::<u64>(), n in 1usize..=32) {
        let mut g = rng(seed);
        let a = nonsym(&mut g, n, 3.0);
        let b = randn_vec(&mut g, n);
        let (x, rep) = bicgstab(|v: &Array1<f64>| a.dot(v), &b, None, 2 * n + 10, Some(1e-10)).expect("bicgstab");
        prop_assert!(residual(&a, &x, &b) < 1e-8, "residual {}", residual(&a, &x, &b));
        prop_assert!(rep.converged);
    }

    /// CG on an indefinite matrix returns finite values; on a negative-definite one it always flags breakdown.
    #[test]
    fn cg_indefinite_flags_breakdown(seed in any::<u64>(), n in 2usize..=16) {
        let mut g = rng(seed);
        let q = spd(&mut g, n, 0.5);
        let neg = q.mapv(|v| -v);
        let b = randn_vec(&mut g, n);
        let (x, rep) = cg(|v: &Array1<f64>| neg.dot(v), &b, None, n, None).expect("cg");
        prop_assert!(rep.breakdown);
        prop_assert!(x.iter().all(|v| v.is_finite()));
        // Mixed signs: whatever happens, the result is finite.
        let mut mixed = q.clone();
        for i in 0..n / 2 { mixed[[i, i]] -= 3.0 * q[[i, i]] + 1.0; }
        let mixed = (&mixed + &mixed.t()) / 2.0;
        let (x, rep) = cg(|v: &Array1<f64>| mixed.dot(v), &b, None, 3 * n, None).expect("cg");
        prop_assert!(x.iter().all(|v| v.is_finite()));
        prop_assert!(rep.residual_norm.is_finite());
    }

    /// One iteration: CG gives (<b,b>/<b,Kb>) b and GMRES gives (<Kb,b>/||Kb||²) b (docs/method.md §6.1, §6.2).
    #[test]
    fn one_iteration_closed_forms(seed in any::<u64>(), n in 1usize..=32) {
        let mut g = rng(seed);
        let a = spd(&mut g, n, 0.5);
        let b = randn_vec(&mut g, n);
        let kb = a.dot(&b);
        let (x, _) = cg(|v: &Array1<f64>| a.dot(v), &b, None, 1, None).expect("cg");
        let expect = &b * (b.dot(&b) / b.dot(&kb));
        prop_assert!(norm(&(&x - &expect)) <= 1e-12 * norm(&expect));
        let an = nonsym(&mut g, n, 0.2);
        let kb = an.dot(&b);
        let (x, _) = gmres(|v: &Array1<f64>| an.dot(v), &b, None, 1, None).expect("gmres");
        let expect = &b * (kb.dot(&b) / kb.dot(&kb));
        prop_assert!(norm(&(&x - &expect)) <= 1e-10 * norm(&expect).max(1e-300));
    }
}

#[test]
fn cg_negative_curvature_keeps_last_finite_iterate() {
    // diag(1, −2, 3) with b = (1, 1, 0): <b, K b> = −1 < 0 at the first step.
    let a = Array2::from_diag(&Array1::from(vec![1.0, -2.0, 3.0]));
    let b = Array1::from(vec![1.0, 1.0, 0.0]);
    let (x, rep) = cg(|v: &Array1<f64>| a.dot(v), &b, None, 3, None).expect("cg");
    assert!(rep.breakdown);
    assert_eq!(x, Array1::<f64>::zeros(3));
    assert!((rep.residual_norm - 2f64.sqrt()).abs() < 1e-15);
}

#[test]
fn non_finite_operator_output_is_contained() {
    let a = spd(&mut rng(1), 6, 0.5);
    let b = randn_vec(&mut rng(2), 6);
    let calls = std::cell::Cell::new(0);
    let op = |v: &Array1<f64>| {
        calls.set(calls.get() + 1);
        if calls.get() >= 3 {
            v.mapv(|_| f64::NAN)
        } else {
            a.dot(v)
        }
    };
    let (x2, _) = cg(|v: &Array1<f64>| a.dot(v), &b, None, 2, None).expect("cg");
    for solver in 0..3 {
        calls.set(0);
        let (x, rep) = match solver {
            0 => cg(op, &b, None, 6, None),
            1 => gmres(op, &b, None, 6, None),
            _ => bicgstab(op, &b, None, 6, None),
        }
        .expect("solve");
        assert!(rep.breakdown, "solver {solver}");
        assert!(x.iter().all(|v| v.is_finite()), "solver {solver}");
        if solver == 0 {
            assert!(norm(&(&x - &x2)) < 1e-12, "CG keeps its second iterate");
        }
    }
}

#[test]
fn initial_guess_costs_one_application_and_zero_guess_none() {
    let a = spd(&mut rng(3), 5, 0.5);
    let b = randn_vec(&mut rng(4), 5);
    let (_, rep) = cg(|v: &Array1<f64>| a.dot(v), &b, None, 2, None).expect("cg");
    assert_eq!(rep.applications, 2);
    let x0 = randn_vec(&mut rng(5), 5);
    let (x, rep) = cg(|v: &Array1<f64>| a.dot(v), &b, Some(&x0), 5, None).expect("cg");
    assert_eq!(rep.applications, 6);
    assert!(residual(&a, &x, &b) < 1e-8);
    let (x, _) = gmres(|v: &Array1<f64>| a.dot(v), &b, Some(&x0), 5, None).expect("gmres");
    assert!(residual(&a, &x, &b) < 1e-8);
}

#[test]
fn restarted_gmres_and_rtol_stop_early() {
    let a = nonsym(&mut rng(6), 20, 3.0);
    let b = randn_vec(&mut rng(7), 20);
    let p = KrylovParams::new(200).with_restart(Some(5)).with_rtol(Some(1e-10));
    let (x, rep) = gmres_with(|v: &Array1<f64>| a.dot(v), &b, None, &p).expect("gmres");
    assert!(residual(&a, &x, &b) < 1e-9);
    assert!(rep.converged);
    assert!(rep.iterations < 200, "stopped early at {}", rep.iterations);
    let (_, rep) = cg(|v: &Array1<f64>| v.clone(), &b, None, 50, Some(1e-6)).expect("cg");
    assert_eq!(rep.iterations, 1);
}

#[test]
fn zero_rhs_and_invalid_parameters() {
    let a = randn_mat(&mut rng(8), 4, 4, 1.0);
    let b = Array1::<f64>::zeros(4);
    for (x, rep) in [
        cg(|v: &Array1<f64>| a.dot(v), &b, None, 4, None).expect("cg"),
        gmres(|v: &Array1<f64>| a.dot(v), &b, None, 4, None).expect("gmres"),
        bicgstab(|v: &Array1<f64>| a.dot(v), &b, None, 4, None).expect("bicgstab"),
    ] {
        assert_eq!(x, b);
        assert!(!rep.breakdown && rep.converged);
    }
    assert!(cg(|v: &Array1<f64>| a.dot(v), &b, None, 4, Some(-1.0)).is_err());
    let p = KrylovParams::new(3).with_restart(Some(0));
    assert!(gmres_with(|v: &Array1<f64>| a.dot(v), &b, None, &p).is_err());
}
