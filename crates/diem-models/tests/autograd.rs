//! The libtorch link in practice: vector-Jacobian products through tch autograd against analytic values,
//! on the CPU and, when one is present, on a CUDA device.

use diem_models::{vjp, DeviceChoice};
use tch::{Device, Kind, Tensor};

/// f(x) = tanh(x Wᵀ) row by row; its VJP with cotangent u is (u ⊙ (1 − f²)) W.
fn check_vjp_on(device: Device) {
    tch::manual_seed(7);
    let opts = (Kind::Double, device);
    let (n, d, m) = (5, 4, 3);
    let w = Tensor::randn([m, d], opts);
    let x = Tensor::randn([n, d], opts).set_requires_grad(true);
    let f = x.matmul(&w.tr()).tanh();
    let u1 = Tensor::randn([n, m], opts);
    let u2 = Tensor::randn([n, m], opts);

    // Two VJPs from one forward pass: the first must keep the graph.
    let g1 = vjp(&f, &x, &u1, true).unwrap();
    let g2 = vjp(&f, &x, &u2, false).unwrap();

    let fd = f.detach();
    let slope = fd.ones_like() - &fd * &fd;
    for (g, u) in [(&g1, &u1), (&g2, &u2)] {
        let expected = (u * &slope).matmul(&w);
        let err = (g - &expected).abs().max().double_value(&[]);
        assert!(err < 1e-12, "VJP differs from the analytic value by {err} on {device:?}");
        assert_eq!(g.device(), device);
    }
    // Linearity in the cotangent: J^T(u1 + u2) = J^T u1 + J^T u2.
    let x2 = x.detach().set_requires_grad(true);
    let f2 = x2.matmul(&w.tr()).tanh();
    let g12 = vjp(&f2, &x2, &(&u1 + &u2), false).unwrap();
    let err = (&g12 - &g1 - &g2).abs().max().double_value(&[]);
    assert!(err < 1e-12, "VJP is not linear in the cotangent: {err}");
}

#[test]
fn vjp_matches_analytic_jacobian_on_cpu() {
    check_vjp_on(Device::Cpu);
}

#[test]
fn vjp_matches_analytic_jacobian_on_cuda() {
    match DeviceChoice::Cuda(0).resolve() {
        Ok(device) => check_vjp_on(device),
        Err(reason) => eprintln!("skipping the CUDA VJP test: {reason}"),
    }
}

#[test]
fn vjp_without_kept_graph_cannot_be_repeated() {
    let x = Tensor::randn([2, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let f = x.exp();
    let u = f.ones_like();
    let _ = vjp(&f, &x, &u, false).unwrap();
    // The graph was freed: a second backward through it is an error, not a silent wrong answer.
    assert!(vjp(&f, &x, &u, false).is_err());
}

#[test]
fn vjp_rejects_mismatched_cotangent() {
    let x = Tensor::randn([2, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let f = x.sin();
    let u = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
    assert!(vjp(&f, &x, &u, false).is_err());
}
