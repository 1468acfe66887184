//! The example `closure_operator` (`diem fit` as a library call with an operator known only as a closure) runs
//! to the end, and what it relies on holds: the closure's autograd adjoint is the adjoint, and the run it makes
//! leaves a complete run directory.

use diem_operators::testing::check_operator;
use diem_operators::{FnOperator, LinearOperator};
use tch::{Device, Kind, Tensor};

#[path = "../examples/closure_operator.rs"]
mod closure_operator_example;

#[test]
fn the_closure_operator_example_runs() {
    tch::set_num_threads(1);
    closure_operator_example::main().unwrap();
}

/// The example's instrument, checked the way the built-in operators are: dot test, adjoint against autograd,
/// linearity, and a power-method norm against the dense matrix's largest singular value.
#[test]
fn the_example_instrument_passes_the_operator_checks() {
    let blur = |x: &Tensor| x.narrow(1, 0, 6) * 0.25 + x.narrow(1, 1, 6) * 0.5 + x.narrow(1, 2, 6) * 0.25;
    let op = FnOperator::new(&[8], &[6], blur).unwrap();
    let report = check_operator(&op, 1e-6).unwrap();
    // The 6×8 banded matrix with rows (0.25, 0.5, 0.25): its norm is below the row sum 1 and above the middle tap.
    let norm = report.norm;
    assert!(norm > 0.5 && norm < 1.0, "{report:?}");
    // The adjoint spreads each record back over its three taps.
    let u = Tensor::zeros([1, 6], (Kind::Double, Device::Cpu));
    let _ = u.narrow(1, 0, 1).fill_(1.0);
    let back = op.adjoint(&u);
    let want = Tensor::from_slice(&[0.25f64, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0]).unsqueeze(0);
    assert!(back.allclose(&want, 1e-12, 1e-12, false), "{back}");
}
