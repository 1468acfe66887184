//! DPLR algebra against dense linear algebra (docs/method.md §7.1, §12.1 item 4), f64 to 1e-10.

use crate::common::{randn, rel_err, rng};
use diem_linalg::{Dplr, LinalgError};
use proptest::prelude::*;
use rand::Rng;
use tch::{Kind, Tensor};

/// A random DPLR with `D` of magnitude in [0.5, 2] (random signs when `signed`) and small `U`, `V`, so that
/// both `M` and the capacitance stay well conditioned.
fn random_dplr(seed: u64, batch: &[i64], n: i64, r: i64, signed: bool, symmetric: bool) -> Dplr {
    let mut g = rng(seed);
    let nd: i64 = batch.iter().product::<i64>() * n;
    let d: Vec<f64> = (0..nd)
        .map(|_| {
            let m = g.gen_range(0.5..2.0);
            if signed && g.gen_bool(0.5) {
                -m
            } else {
                m
            }
        })
        .collect();
    let mut dshape = batch.to_vec();
    dshape.push(n);
    let d = Tensor::from_slice(&d).reshape(dshape.as_slice());
    if r == 0 {
        return Dplr::diagonal(d).expect("valid diagonal");
    }
    let scale = 0.4 / (n as f64).sqrt();
    let mut ushape = batch.to_vec();
    ushape.extend([n, r]);
    let u = randn(&mut g, &ushape, scale);
    if symmetric {
        return Dplr::symmetric(d, u).expect("valid symmetric DPLR");
    }
    let mut vshape = batch.to_vec();
    vshape.extend([r, n]);
    let v = randn(&mut g, &vshape, scale);
    Dplr::new(d, Some(u), Some(v)).expect("valid DPLR")
}

fn check_against_dense(m: &Dplr, seed: u64) {
    let n = m.dim();
    let dense = m.to_dense();
    let mut shape = m.batch_shape();
    shape.push(n);
    let x = randn(&mut rng(seed ^ 0xABCD), &shape, 1.0);
    let tol = 1e-10;
    // Product.
    let mx = dense.matmul(&x.unsqueeze(-1)).squeeze_dim(-1);
    assert!(rel_err(&m.matvec(&x), &mx) < tol, "matvec");
    // Solve and inverse.
    let sol = Tensor::linalg_solve(&dense, &x, true);
    assert!(rel_err(&m.solve(&x), &sol) < tol, "solve");
    let inv = dense.inverse();
    let m_inv = m.inverse();
    assert_eq!(m_inv.rank(), m.rank());
    assert!(rel_err(&m_inv.to_dense(), &inv) < tol, "inverse");
    // Diagonal, trace, Frobenius norm.
    assert!(rel_err(&m.diag(), &dense.diagonal(0, -2, -1)) < tol, "diag");
    assert!(rel_err(&m.trace(), &dense.diagonal(0, -2, -1).sum_dim_intlist(-1, false, Kind::Double)) < tol);
    let fro = dense.square().sum_dim_intlist([-2i64, -1].as_slice(), false, Kind::Double);
    assert!(rel_err(&m.frobenius_sq(), &fro) < tol, "frobenius");
    // Log-determinant and sign.
    let (sign, logabs) = Tensor::linalg_slogdet(&dense);
    let (s2, l2) = m.slogdet();
    assert!(rel_err(&s2, &sign) < tol, "slogdet sign");
    assert!(rel_err(&l2, &logabs) < tol, "slogdet logabs");
    // Addition and scalings.
    let eye = Tensor::eye(n, (Kind::Double, tch::Device::Cpu));
    assert!(rel_err(&m.add_scalar(0.7).to_dense(), &(&dense + &eye * 0.7)) < tol, "add_scalar");
    let c = randn(&mut rng(seed ^ 0x1234), &shape, 1.0);
    let added = m.add_diag(&c).expect("add_diag").to_dense();
    assert!(rel_err(&added, &(&dense + c.diag_embed(0, -2, -1))) < tol, "add_diag");
    let left = m.scale_left(&c).expect("scale_left").to_dense();
    assert!(rel_err(&left, &(c.unsqueeze(-1) * &dense)) < tol, "scale_left");
    let right = m.scale_right(&c).expect("scale_right").to_dense();
    assert!(rel_err(&right, &(&dense * c.unsqueeze(-2))) < tol, "scale_right");
    assert!(rel_err(&m.scale(-1.5).to_dense(), &(&dense * -1.5)) < tol, "scale");
    assert!(rel_err(&m.transpose().to_dense(), &dense.transpose(-1, -2)) < tol, "transpose");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn dplr_matches_dense(seed in any::<u64>(), n in 1i64..=8, r_frac in 0.0f64..=1.0, batched in any::<bool>(),
                          signed in any::<bool>(), symmetric in any::<bool>()) {
        let r = (r_frac * n as f64).round() as i64; // covers r = 0 and r = N
        let batch: &[i64] = if batched { &[3] } else { &[] };
        let m = random_dplr(seed, batch, n, r, signed, symmetric);
        check_against_dense(&m, seed);
    }
}

#[test]
fn dplr_edge_ranks_and_batches() {
    for (n, r) in [(1, 0), (1, 1), (5, 0), (5, 5), (6, 2)] {
        for batch in [&[][..], &[2][..], &[2, 3][..]] {
            check_against_dense(&random_dplr(7 + n as u64, batch, n, r, true, false), 11);
        }
    }
}

#[test]
fn dplr_broadcasts_shared_diagonal_over_batched_factors() {
    let mut g = rng(3);
    let d = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]);
    let u = randn(&mut g, &[2, 4, 2], 0.3);
    let m = Dplr::symmetric(d, u).expect("valid");
    assert_eq!(m.batch_shape(), vec![2]);
    check_against_dense(&m, 5);
}

#[test]
fn dplr_rejects_bad_shapes() {
    let d = Tensor::ones([4], (Kind::Double, tch::Device::Cpu));
    let u = Tensor::ones([3, 2], (Kind::Double, tch::Device::Cpu));
    let v = Tensor::ones([2, 4], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(
        Dplr::new(d.shallow_clone(), Some(u), Some(v.shallow_clone())),
        Err(LinalgError::Shape { arg: "u", .. })
    ));
    let u = Tensor::ones([4, 3], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(
        Dplr::new(d.shallow_clone(), Some(u), Some(v)),
        Err(LinalgError::Shape { arg: "v", .. })
    ));
    let u = Tensor::ones([4, 2], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(Dplr::new(d.shallow_clone(), Some(u), None), Err(LinalgError::InvalidParameter { .. })));
    let m = Dplr::diagonal(d).expect("valid");
    let x = Tensor::ones([3], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(m.f_solve(&x), Err(LinalgError::Shape { arg: "x", .. })));
    let uf = Tensor::ones([4, 2], (Kind::Float, tch::Device::Cpu));
    let vf = Tensor::ones([2, 4], (Kind::Float, tch::Device::Cpu));
    let d = Tensor::ones([4], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(Dplr::new(d, Some(uf), Some(vf)), Err(LinalgError::Mismatch { .. })));
}

#[test]
fn dplr_zero_rank_factors_become_diagonal() {
    let d = Tensor::ones([4], (Kind::Double, tch::Device::Cpu));
    let u = Tensor::zeros([4, 0], (Kind::Double, tch::Device::Cpu));
    let v = Tensor::zeros([0, 4], (Kind::Double, tch::Device::Cpu));
    let m = Dplr::new(d, Some(u), Some(v)).expect("valid");
    assert_eq!(m.rank(), 0);
    assert!(m.u().is_none());
}

#[test]
fn dplr_kind_conversion_round_trips() {
    let m = random_dplr(1, &[], 5, 2, false, true);
    let f = m.to_kind(Kind::Float);
    assert_eq!(f.kind(), Kind::Float);
    assert!(rel_err(&f.to_kind(Kind::Double).to_dense(), &m.to_dense()) < 1e-6);
}
