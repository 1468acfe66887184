//! Property tests over every operator family at random shapes (docs/method.md §12.1 item 1): the adjoint identity
//! in f32 and f64, the explicit adjoint against autograd's VJP, linearity, and batched = per-sample.

mod common;

use common::{make_op, randn, rel_diff, KINDS};
use diem_operators::testing::{adjoint_gap, autograd_gap};
use proptest::prelude::*;
use tch::Kind;

fn shapes() -> impl Strategy<Value = (usize, i64, i64, i64, i64, u64)> {
    (0..KINDS, 1i64..4, 1i64..3, 2i64..6, 2i64..6, any::<u64>())
        .prop_map(|(k, n, c, h, w, s)| (k, n, c, 2 * h, 2 * w, s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn adjoint_identity_f32((which, n, c, h, w, seed) in shapes()) {
        tch::manual_seed(seed as i64);
        let op = make_op(which, n, c, h, w, seed);
        let x = randn(n, &op.x_shape(), Kind::Float);
        let u = randn(n, &op.y_shape(), Kind::Float);
        let gap = adjoint_gap(op.as_ref(), &x, &u);
        prop_assert!(gap < 1e-5, "{}: relative adjoint gap {gap:e}", op.kind());
    }

    #[test]
    fn adjoint_identity_f64((which, n, c, h, w, seed) in shapes()) {
        tch::manual_seed(seed as i64);
        let op = make_op(which, n, c, h, w, seed);
        let x = randn(n, &op.x_shape(), Kind::Double);
        let u = randn(n, &op.y_shape(), Kind::Double);
        let gap = adjoint_gap(op.as_ref(), &x, &u);
        prop_assert!(gap < 1e-10, "{}: relative adjoint gap {gap:e}", op.kind());
    }

    #[test]
    fn adjoint_matches_autograd((which, n, c, h, w, seed) in shapes()) {
        tch::manual_seed(seed as i64);
        let op = make_op(which, n, c, h, w, seed);
        let x = randn(n, &op.x_shape(), Kind::Double);
        let u = randn(n, &op.y_shape(), Kind::Double);
        let gap = autograd_gap(op.as_ref(), &x, &u);
        prop_assert!(gap < 1e-10, "{}: explicit adjoint vs VJP {gap:e}", op.kind());
        let gap32 = autograd_gap(op.as_ref(), &x.to_kind(Kind::Float), &u.to_kind(Kind::Float));
        prop_assert!(gap32 < 1e-5, "{}: explicit adjoint vs VJP (f32) {gap32:e}", op.kind());
    }

    #[test]
    fn linear((which, n, c, h, w, seed) in shapes(), a in -3.0f64..3.0, b in -3.0f64..3.0) {
        tch::manual_seed(seed as i64);
        let op = make_op(which, n, c, h, w, seed);
        let x = randn(n, &op.x_shape(), Kind::Double);
        let z = randn(n, &op.x_shape(), Kind::Double);
        let lhs = op.apply(&(&x * a + &z * b));
        let rhs = op.apply(&x) * a + op.apply(&z) * b;
        prop_assert!(rel_diff(&lhs, &rhs) < 1e-10, "{}: apply not linear", op.kind());
        let u = randn(n, &op.y_shape(), Kind::Double);
        let v = randn(n, &op.y_shape(), Kind::Double);
        let lhs = op.adjoint(&(&u * a + &v * b));
        let rhs = op.adjoint(&u) * a + op.adjoint(&v) * b;
        prop_assert!(rel_diff(&lhs, &rhs) < 1e-10, "{}: adjoint not linear", op.kind());
    }

    #[test]
    fn batched_equals_per_sample((which, n, c, h, w, seed) in shapes()) {
        tch::manual_seed(seed as i64);
        let op = make_op(which, n, c, h, w, seed);
        let x = randn(n, &op.x_shape(), Kind::Double);
        let u = randn(n, &op.y_shape(), Kind::Double);
        let ax = op.apply(&x);
        let atu = op.adjoint(&u);
        prop_assert_eq!(ax.size()[1..].to_vec(), op.y_shape());
        for b in 0..n {
            let one = op.narrow(b, 1);
            let axb = one.apply(&x.narrow(0, b, 1));
            prop_assert!(rel_diff(&axb, &ax.narrow(0, b, 1)) < 1e-12, "{}: sample {b} apply", op.kind());
            let atub = op.select(&[b]).adjoint(&u.narrow(0, b, 1));
            prop_assert!(rel_diff(&atub, &atu.narrow(0, b, 1)) < 1e-12, "{}: sample {b} adjoint", op.kind());
        }
    }
}
