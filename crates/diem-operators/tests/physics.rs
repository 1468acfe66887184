//! The physics checks of every operator, the way deepinv tests its physics (docs/method.md §12.1 item 1):
//!
//! 1. the explicit adjoint equals the autograd adjoint (the trait's default, `vjp_adjoint`) in f64;
//! 2. the dot test `⟨A x, v⟩ = ⟨x, Aᵀ v⟩` per sample in f64;
//! 3. a power-method estimate of `‖A‖₂` matches a known value: a closed form where there is one (masks,
//!    k-space, identity, average pooling) and always the largest singular value of the dense matrix.
//!
//! Then the seam for custom operators: an operator with only shapes and `apply` gets working defaults, an
//! [`FnOperator`] passes the same checks (proptest over random shapes), and a registered custom kind
//! round-trips bit-exactly through `.npz` and `.safetensors`, alone and inside `compose[..]`.

use std::collections::BTreeMap;
use std::sync::Once;

use diem_operators::operator::vjp_adjoint;
use diem_operators::params::Params;
use diem_operators::testing::{adjoint_gap, check_operator, dense_matrix, dense_norm, power_method};
use diem_operators::{
    register_operator, Blur, Boundary, Compose, Downsample, Error, FnOperator, Identity, KSpace,
    LinearOperator, Mask, NoiseCov, Observation, OperatorRegistry, Projection, Stack,
};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

/// A seeded standard normal tensor `[n, ..shape]` in f64.
fn randn(n: i64, shape: &[i64], seed: u64) -> Tensor {
    let mut full = vec![n];
    full.extend(shape);
    NoiseCov::Isotropic { std: 1.0 }.sample(&full, Kind::Double, Device::Cpu, seed)
}

/// `max |a − b| / max |b|`.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    d / b.abs().max().double_value(&[]).max(1e-300)
}

/// Every built-in operator family at a small shape, with the closed-form `‖A_b‖₂` where there is one.
fn builtins() -> Vec<(String, Box<dyn LinearOperator>, Option<f64>)> {
    let img = [2, 6, 8];
    let mut ops: Vec<(String, Box<dyn LinearOperator>, Option<f64>)> = vec![
        ("identity".into(), Box::new(Identity::new(&img).unwrap()), Some(1.0)),
        ("mask random pixels".into(), Box::new(Mask::random_pixels(3, &img, 0.5, 1).unwrap()), Some(1.0)),
        ("mask box".into(), Box::new(Mask::random_box(3, &img, (2, 3), (1, 1), 2).unwrap()), Some(1.0)),
        ("mask exactly-k".into(), Box::new(Mask::exact_deletions(3, &img, 20, 3).unwrap()), Some(1.0)),
        ("projection".into(), Box::new(Projection::random_sphere(3, 4, 10, 4).unwrap()), None),
        ("kspace lines".into(), Box::new(KSpace::random_lines(2, &img, 2.0, 5).unwrap()), Some(1.0)),
        ("kspace full".into(), Box::new(KSpace::full(&img).unwrap()), Some(1.0)),
        ("downsample average".into(), Box::new(Downsample::average(&[2, 6, 6], 3).unwrap()), Some(1.0 / 3.0)),
        ("downsample bicubic".into(), Box::new(Downsample::bicubic(&[1, 8, 8], 2).unwrap()), None),
        (
            "compose[blur,downsample]".into(),
            Box::new(
                Compose::new(vec![
                    Box::new(Blur::random_motion(2, &[1, 8, 8], 3, 0.5, Boundary::Reflect, 6).unwrap()),
                    Box::new(Downsample::bicubic(&[1, 8, 8], 2).unwrap()),
                ])
                .unwrap(),
            ),
            None,
        ),
        (
            "stack[mask,kspace]".into(),
            Box::new(
                Stack::new(vec![
                    Box::new(Mask::random_pixels(2, &img, 0.3, 7).unwrap()),
                    Box::new(KSpace::random_lines(2, &img, 2.0, 8).unwrap()),
                ])
                .unwrap(),
            ),
            None,
        ),
    ];
    for boundary in [Boundary::Zero, Boundary::Reflect, Boundary::Symmetric, Boundary::Circular] {
        // A circular blur by a non-negative kernel of sum 1 is diagonal in the DFT basis with |k̂(ω)| ≤ 1 and
        // k̂(0) = 1: its norm is 1.
        let closed = (boundary == Boundary::Circular).then_some(1.0);
        ops.push((
            format!("blur gaussian {boundary:?}"),
            Box::new(Blur::gaussian(&[1, 6, 7], 3, 1.0, boundary).unwrap()),
            closed,
        ));
        ops.push((
            format!("blur motion {boundary:?}"),
            Box::new(Blur::random_motion(2, &[2, 6, 6], 5, 0.5, boundary, 9).unwrap()),
            None,
        ));
    }
    // A random dense map as a closure: autograd adjoint.
    let w = randn(1, &[5, 12], 10).squeeze_dim(0);
    let wt = w.shallow_clone();
    let f = FnOperator::new(&[3, 4], &[5], move |x| x.reshape([x.size()[0], 12]).matmul(&wt.tr())).unwrap();
    ops.push(("fn (autograd adjoint)".into(), Box::new(f), None));
    // The same map with an explicit adjoint.
    let (wf, wa) = (w.shallow_clone(), w.shallow_clone());
    let f = FnOperator::new(&[3, 4], &[5], move |x| x.reshape([x.size()[0], 12]).matmul(&wf.tr()))
        .unwrap()
        .with_adjoint(move |y| y.matmul(&wa).reshape([y.size()[0], 3, 4]));
    ops.push(("fn (explicit adjoint)".into(), Box::new(f), None));
    ops
}

#[test]
fn explicit_adjoint_equals_autograd_adjoint() {
    for (name, op, _) in builtins() {
        let n = op.batch().max(2);
        let u = randn(n, &op.y_shape(), 11);
        let explicit = op.adjoint(&u);
        let auto = vjp_adjoint(op.as_ref(), &u);
        assert_eq!(auto.size(), explicit.size(), "{name}");
        assert_eq!(auto.kind(), Kind::Double, "{name}");
        let gap = rel(&explicit, &auto);
        assert!(gap < 1e-12, "{name}: explicit adjoint vs autograd adjoint {gap:e}");
        // The same inside a no_grad caller (the samplers' E-step runs under no_grad).
        let under = tch::no_grad(|| vjp_adjoint(op.as_ref(), &u));
        assert!(rel(&under, &auto) == 0.0, "{name}: vjp_adjoint differs under no_grad");
        assert!(!under.requires_grad(), "{name}: a no_grad adjoint must carry no graph");
    }
}

#[test]
fn dot_test_per_sample() {
    for (name, op, _) in builtins() {
        let n = op.batch().max(2);
        let x = randn(n, &op.x_shape(), 12);
        let v = randn(n, &op.y_shape(), 13);
        let gap = adjoint_gap(op.as_ref(), &x, &v);
        assert!(gap < 1e-12, "{name}: ⟨Ax, v⟩ vs ⟨x, Aᵀv⟩ relative gap {gap:e}");
    }
}

#[test]
fn power_method_matches_the_dense_norm_and_closed_forms() {
    for (name, op, closed) in builtins() {
        let estimate = power_method(op.as_ref(), 5000, 1e-13, 14);
        let dense = dense_norm(op.as_ref());
        assert_eq!(estimate.len() as i64, op.batch(), "{name}");
        assert_eq!(dense.len(), estimate.len(), "{name}");
        for (b, (&e, &d)) in estimate.iter().zip(&dense).enumerate() {
            assert!(d > 0.0, "{name}: sample {b} is the zero operator");
            assert!((e - d).abs() <= 1e-6 * d, "{name}: sample {b}: power method {e} vs SVD {d}");
            if let Some(c) = closed {
                // Parameters are stored in f32 (1/3 and the Gaussian weights are not exact).
                assert!((d - c).abs() <= 1e-6 * c, "{name}: sample {b}: SVD {d} vs closed form {c}");
            }
        }
    }
}

#[test]
fn projection_rows_on_the_sphere_bound_the_norm() {
    // Unit rows: ‖A_b‖₂ ≥ ‖A_bᵀ e_1‖ = 1 and ‖A_b‖₂ ≤ ‖A_b‖_F = √m.
    let (n, m, d) = (6, 4, 10);
    let op = Projection::random_sphere(n, m, d, 25).unwrap();
    let rows =
        op.matrix().to_kind(Kind::Double).square().sum_dim_intlist([2i64].as_slice(), false, Kind::Double);
    assert!((rows - 1.0).abs().max().double_value(&[]) < 1e-6, "rows must lie on the unit sphere");
    for (b, s) in power_method(&op, 5000, 1e-13, 26).into_iter().enumerate() {
        assert!((1.0 - 1e-6..=(m as f64).sqrt() + 1e-6).contains(&s), "sample {b}: ‖A‖₂ = {s}");
    }
}

#[test]
fn dense_matrix_is_the_operator() {
    // The reference the norms are checked against must itself be right: A x = M vec(x) per sample.
    for (name, op, _) in builtins() {
        let m = dense_matrix(op.as_ref());
        let p = op.batch();
        assert_eq!(m.size(), [p, op.y_numel(), op.x_numel()], "{name}");
        let x = randn(p, &op.x_shape(), 15);
        let mx = m.matmul(&x.reshape([p, -1, 1])).reshape([p, -1]);
        let ax = op.apply(&x).reshape([p, -1]);
        assert!(rel(&mx, &ax) < 1e-12, "{name}: dense matrix differs from apply");
    }
}

#[test]
fn check_operator_passes_every_builtin_and_catches_a_wrong_adjoint() {
    for (name, op, _) in builtins() {
        let report = check_operator(op.as_ref(), 1e-10).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.norms.len() as i64, op.batch().max(1), "{name}");
        // Built-in kinds are persistable and rebuild exactly; closures are not.
        assert_eq!(report.persistence_gap.is_some(), !name.starts_with("fn"), "{name}");
        if let Some(gap) = report.persistence_gap {
            assert!(gap == 0.0, "{name}: rebuilt operator differs by {gap:e}");
        }
    }
    // An adjoint that is off by a factor must fail the dot test with a typed error.
    let bad = FnOperator::new(&[4], &[4], |x| x * 2.0).unwrap().with_adjoint(|y| y * 3.0);
    match check_operator(&bad, 1e-10) {
        Err(Error::Check { check: "dot", .. }) => {}
        other => panic!("a wrong adjoint must fail the dot test, got {other:?}"),
    }
    // A non-linear map fails linearity.
    let affine = FnOperator::new(&[4], &[4], |x| x + 1.0).unwrap();
    match check_operator(&affine, 1e-10) {
        Err(Error::Check { check: "linearity", .. }) => {}
        other => panic!("an affine map must fail the linearity check, got {other:?}"),
    }
}

#[test]
fn autograd_adjoint_is_differentiable_in_the_cotangent() {
    // loss(u) = ½‖Aᵀu‖² has gradient A Aᵀ u; MMPS differentiates through the adjoint this way.
    let w = randn(1, &[3, 5], 16).squeeze_dim(0);
    let wt = w.shallow_clone();
    let op = FnOperator::new(&[5], &[3], move |x| x.matmul(&wt.tr())).unwrap();
    let u = randn(2, &[3], 17).set_requires_grad(true);
    let atu = op.adjoint(&u);
    assert!(atu.requires_grad(), "the autograd adjoint of a u that requires grad must carry a graph");
    let loss = (&atu * &atu).sum(Kind::Double) * 0.5;
    let grad = Tensor::run_backward(&[loss], &[&u], false, false).remove(0);
    let expected = u.detach().matmul(&w).matmul(&w.tr());
    assert!(rel(&grad, &expected) < 1e-12, "d/du ½‖Aᵀu‖² must be A Aᵀ u");
}

#[test]
fn zero_operator_has_a_zero_autograd_adjoint() {
    let op =
        FnOperator::new(&[3], &[2], |x| Tensor::zeros([x.size()[0], 2], (x.kind(), x.device()))).unwrap();
    let back = op.adjoint(&randn(4, &[2], 18));
    assert_eq!(back.size(), [4, 3]);
    assert_eq!(back.abs().max().double_value(&[]), 0.0);
}

/// A custom operator with nothing but shapes and `apply`.
#[derive(Clone, Debug)]
struct Reverse {
    n: i64,
}

impl LinearOperator for Reverse {
    fn x_shape(&self) -> Vec<i64> {
        vec![self.n]
    }
    fn y_shape(&self) -> Vec<i64> {
        vec![self.n]
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        x.flip([1])
    }
}

#[test]
fn minimal_custom_operator_gets_working_defaults() {
    let op = Reverse { n: 5 };
    assert_eq!((op.batch(), op.device()), (1, Device::Cpu));
    assert!(op.kind().ends_with("Reverse"), "{}", op.kind());
    assert!(op.params().is_empty());
    let x = randn(3, &[5], 19);
    let expected = x.flip([1]);
    let boxed: Box<dyn LinearOperator> = Box::new(op.clone());
    for (what, copy) in [
        ("select", boxed.select(&[2, 0])),
        ("narrow", boxed.narrow(1, 2)),
        ("to_device", boxed.to_device(Device::Cpu)),
        ("clone", boxed.clone()),
        ("boxed_clone", op.boxed_clone()),
    ] {
        assert_eq!((copy.batch(), copy.x_shape(), copy.y_shape()), (1, vec![5], vec![5]), "{what}");
        assert!(copy.apply(&x).equal(&expected), "{what}: apply");
        assert!(copy.adjoint(&x).equal(&expected), "{what}: adjoint (a flip is its own transpose)");
    }
    let report = check_operator(&op, 1e-12).unwrap();
    assert!((report.norm - 1.0).abs() < 1e-12 && report.persistence_gap.is_none(), "{report:?}");
    // It simulates observations, and saving one is refused with a typed error naming it.
    let obs = Observation::simulate(&x, boxed, NoiseCov::isotropic(0.1).unwrap(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for ext in ["npz", "safetensors"] {
        let path = dir.path().join(format!("reverse.{ext}"));
        let err = obs.save(&path).unwrap_err();
        let Error::File { source, .. } = &err else { panic!("{err:?}") };
        assert!(matches!(**source, Error::NotPersistable { .. }), "{err:?}");
        assert!(
            err.to_string().contains("Reverse") && err.to_string().contains("register_operator"),
            "{err}"
        );
        assert!(!path.exists(), "nothing may be written");
    }
    // Also as a child of a composite.
    let composite =
        Compose::new(vec![Box::new(Identity::new(&[5]).unwrap()), Box::new(Reverse { n: 5 })]).unwrap();
    let obs = Observation::simulate(&x, Box::new(composite), NoiseCov::isotropic(0.1).unwrap(), 1).unwrap();
    let err = obs.save(dir.path().join("c.npz")).unwrap_err();
    assert!(err.to_string().contains("cannot be saved"), "{err}");
}

#[test]
#[should_panic(expected = "must implement LinearOperator::select")]
fn batched_custom_operator_without_select_panics_with_a_message() {
    #[derive(Clone, Debug)]
    struct Batched;
    impl LinearOperator for Batched {
        fn x_shape(&self) -> Vec<i64> {
            vec![2]
        }
        fn y_shape(&self) -> Vec<i64> {
            vec![2]
        }
        fn batch(&self) -> i64 {
            3
        }
        fn apply(&self, x: &Tensor) -> Tensor {
            x.shallow_clone()
        }
    }
    let _ = Batched.select(&[0]);
}

#[test]
fn fn_operator_validates_its_shapes() {
    for (x, y, what) in
        [(vec![], vec![2], "x_shape"), (vec![2, 0], vec![2], "x_shape"), (vec![2], vec![-1], "y_shape")]
    {
        match FnOperator::new(&x, &y, |t| t.shallow_clone()) {
            Err(Error::Shape { what: w, .. }) => assert_eq!(w, what, "{x:?} → {y:?}"),
            other => panic!("{x:?} → {y:?}: expected a shape error, got {other:?}"),
        }
    }
}

#[test]
#[should_panic(expected = "the closure returned shape [2, 3], expected [2, 4]")]
fn fn_operator_checks_the_closure_output() {
    let op = FnOperator::new(&[3], &[4], |x| x.shallow_clone()).unwrap();
    let _ = op.apply(&randn(2, &[3], 20));
}

// ── persistence of a registered custom kind ─────────────────────────────────────────────────────────

/// `y_b = w_b ⊙ x_b` with per-sample weights `w : [P, ..x_shape]`; kind `physics_diag`, autograd adjoint.
#[derive(Debug)]
struct Diag {
    w: Tensor,
}

impl Clone for Diag {
    fn clone(&self) -> Self {
        Self { w: self.w.shallow_clone() }
    }
}

impl LinearOperator for Diag {
    fn x_shape(&self) -> Vec<i64> {
        self.w.size()[1..].to_vec()
    }
    fn y_shape(&self) -> Vec<i64> {
        self.x_shape()
    }
    fn batch(&self) -> i64 {
        self.w.size()[0]
    }
    fn device(&self) -> Device {
        self.w.device()
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        diem_operators::implement::check_input("Diag::apply", "x", x, &self.x_shape(), self.batch());
        x * diem_operators::implement::as_kind(&self.w, x.kind())
    }
    fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator> {
        Box::new(Self { w: diem_operators::implement::select_rows(&self.w, indices) })
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self { w: self.w.to_device(device) })
    }
    fn kind(&self) -> String {
        "physics_diag".into()
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        vec![("w".into(), self.w.shallow_clone())]
    }
}

fn load_diag(p: &Params<'_>) -> diem_operators::Result<Box<dyn LinearOperator>> {
    Ok(Box::new(Diag { w: p.float("w")? }))
}

fn register_diag() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| register_operator("physics_diag", load_diag).unwrap());
}

fn assert_same(a: &Observation, b: &Observation) {
    assert_eq!(a.operator.kind(), b.operator.kind());
    assert_eq!(a.y.kind(), b.y.kind());
    assert!(a.y.equal(&b.y), "y differs");
    let (pa, pb) = (a.operator.params(), b.operator.params());
    assert_eq!(pa.len(), pb.len());
    for ((na, ta), (nb, tb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        assert_eq!(ta.kind(), tb.kind(), "{na}: dtype");
        assert!(ta.equal(tb), "{na}: values");
    }
}

#[test]
fn registered_custom_operator_round_trips_bit_exactly() {
    register_diag();
    let w = randn(3, &[2, 4, 4], 21); // f64 weights: the dtype must survive too
    let diag = Diag { w };
    let report = check_operator(&diag, 1e-12).unwrap();
    assert_eq!(report.persistence_gap, Some(0.0));
    let blur = Blur::random_motion(3, &[2, 4, 4], 3, 0.5, Boundary::Symmetric, 22).unwrap();
    let candidates: Vec<Box<dyn LinearOperator>> = vec![
        Box::new(diag.clone()),
        Box::new(Compose::new(vec![Box::new(blur), Box::new(diag.clone())]).unwrap()),
        Box::new(Stack::new(vec![Box::new(Identity::new(&[2, 4, 4]).unwrap()), Box::new(diag)]).unwrap()),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, op) in candidates.into_iter().enumerate() {
        let x = randn(3, &op.x_shape(), 23);
        let obs = Observation::simulate(&x, op, NoiseCov::isotropic(0.05).unwrap(), 24).unwrap();
        for ext in ["npz", "safetensors"] {
            let path = dir.path().join(format!("custom-{i}.{ext}"));
            obs.save(&path).unwrap();
            let back = Observation::load(&path, Device::Cpu).unwrap();
            assert_same(&obs, &back);
            assert!(back.operator.apply(&x).equal(&obs.operator.apply(&x)), "{}: apply", obs.operator.kind());
            let u = back.y.ones_like();
            assert!(
                back.operator.adjoint(&u).equal(&obs.operator.adjoint(&u)),
                "{}: adjoint",
                obs.operator.kind()
            );
        }
    }
}

#[test]
fn registry_refuses_builtin_duplicate_and_malformed_kinds() {
    register_diag();
    for kind in ["mask", "compose", "stack", "identity"] {
        match register_operator(kind, load_diag) {
            Err(Error::Registry { kind: k, reason }) => {
                assert_eq!(k, kind);
                assert!(reason.contains("built-in"), "{reason}");
            }
            other => panic!("{kind}: expected a registry error, got {other:?}"),
        }
    }
    assert!(matches!(register_operator("physics_diag", load_diag), Err(Error::Registry { .. })));
    for bad in ["", "a b", "x[y]", "ns::Type"] {
        assert!(matches!(register_operator(bad, load_diag), Err(Error::Registry { .. })), "{bad:?}");
    }
}

#[test]
fn unknown_kinds_say_how_to_register_them() {
    let arrays: BTreeMap<String, Tensor> =
        [("w".to_string(), Tensor::ones([1, 3], (Kind::Float, Device::Cpu)))].into();
    let err = diem_operators::operator_from_params("never_registered", &arrays).unwrap_err();
    assert!(matches!(err, Error::UnknownKind { .. }), "{err:?}");
    assert!(err.to_string().contains("register_operator"), "{err}");
    // An explicit registry is independent of the process-wide one.
    let mut registry = OperatorRegistry::new();
    registry.register("local_diag", load_diag).unwrap();
    assert!(registry.contains("local_diag") && !diem_operators::registry::is_registered("local_diag"));
    let op = registry.operator_from_params("local_diag", &arrays).unwrap();
    assert_eq!((op.batch(), op.x_shape()), (1, vec![3]));
    let op = registry.operator_from_params("compose[identity,local_diag]", &{
        let mut a: BTreeMap<String, Tensor> = BTreeMap::new();
        a.insert("0.x_shape".into(), Tensor::from_slice(&[3i64]));
        a.insert("1.w".into(), Tensor::ones([1, 3], (Kind::Float, Device::Cpu)));
        a
    });
    assert_eq!(op.unwrap().x_shape(), vec![3]);
    assert!(diem_operators::operator_from_params("local_diag", &arrays).is_err());
    assert!(matches!(registry.register("blur", load_diag), Err(Error::Registry { .. })));
    assert!(registry.unregister("local_diag") && !registry.contains("local_diag"));
}

// ── FnOperator on random shapes ─────────────────────────────────────────────────────────────────────

fn shape() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(1i64..5, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn fn_operator_dot_test(x_shape in shape(), y_shape in shape(), n in 1i64..4, seed in any::<u64>()) {
        let (d, m): (i64, i64) = (x_shape.iter().product(), y_shape.iter().product());
        let w = randn(1, &[m, d], seed).squeeze_dim(0);
        let wt = w.shallow_clone();
        let ys = y_shape.clone();
        let op = FnOperator::new(&x_shape, &y_shape, move |x| {
            let n = x.size()[0];
            let out = [&[n][..], &ys].concat();
            x.reshape([n, d]).matmul(&wt.tr().to_kind(x.kind())).reshape(out.as_slice())
        })
        .unwrap();
        let x = randn(n, &x_shape, seed ^ 1);
        let v = randn(n, &y_shape, seed ^ 2);
        let atv = op.adjoint(&v);
        prop_assert_eq!(atv.size(), [&[n][..], &x_shape].concat());
        let gap = adjoint_gap(&op, &x, &v);
        prop_assert!(gap < 1e-12, "dot test gap {gap:e}");
        // The autograd adjoint is Wᵀ v exactly (up to rounding).
        let expected = v.reshape([n, m]).matmul(&w).reshape(atv.size().as_slice());
        prop_assert!(rel(&atv, &expected) < 1e-12);
        // f32 cotangents give f32 adjoints.
        let atv32 = op.adjoint(&v.to_kind(Kind::Float));
        prop_assert_eq!(atv32.kind(), Kind::Float);
    }
}
