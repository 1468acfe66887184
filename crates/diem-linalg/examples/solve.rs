//! Solve a batch of independent linear systems with CG, GMRES and BiCGSTAB, then use a DPLR covariance
//! fitted by PPCA.
//!
//! Run: `cargo xtask cargo run -p diem-linalg --example solve`.
//!
//! Each of the 4 rows of `b` is its own system `K_i x_i = b_i`, with `K_i` a per-row matrix applied as a
//! closure. The same call then runs with truncated budgets (1 and 3 iterations, as MMPS uses them) and with a
//! tolerance. Finally a PPCA fit produces a DPLR covariance `Σ`, and `(Σ + σ² I)⁻¹ x` is computed two ways.

use diem_linalg::{ppca, Krylov, KrylovParams};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), diem_linalg::LinalgError> {
    tch::manual_seed(0);
    let opts = (Kind::Double, Device::Cpu);
    let (rows, n) = (4i64, 16i64);
    // Per-row SPD matrices K_i = B_i B_iᵀ / n + I.
    let bmat = Tensor::randn([rows, n, n], opts);
    let k = bmat.matmul(&bmat.transpose(1, 2)) / n as f64 + Tensor::eye(n, opts);
    let op = |v: &Tensor| k.matmul(&v.unsqueeze(-1)).squeeze_dim(-1);
    let b = Tensor::randn([rows, n], opts);
    let rel_res = |x: &Tensor| {
        let r = &b - op(x);
        (r.square().sum(Kind::Double) / b.square().sum(Kind::Double)).sqrt().double_value(&[])
    };
    println!("{:<9} {:>6} {:>14} {:>10}  breakdowns", "method", "iters", "rel. residual", "K calls");
    for method in [Krylov::Cg, Krylov::Gmres, Krylov::BiCgStab] {
        for (iters, rtol) in [(1, None), (3, None), (64, Some(1e-10))] {
            let p = KrylovParams::new(iters).with_rtol(rtol);
            let (x, report) = method.solve(op, &b, None, &p)?;
            println!(
                "{:<9} {:>6} {:>14.3e} {:>10}  {:?}",
                method.name(),
                report.iterations,
                rel_res(&x),
                report.applications,
                report.breakdowns()
            );
        }
    }

    // PPCA on samples from a rank-2 Gaussian, then a DPLR solve against dense linear algebra.
    let u = Tensor::randn([n, 2], opts);
    let samples =
        Tensor::randn([5000, 2], opts).matmul(&u.transpose(0, 1)) + Tensor::randn([5000, n], opts) * 0.1;
    let (mean, cov) = ppca(&samples, 2)?;
    println!(
        "\nPPCA: |mean|_max = {:.3}, D = {:.4} (true 0.01)",
        mean.abs().max().double_value(&[]),
        cov.d().double_value(&[0])
    );
    let shifted = cov.add_scalar(0.25);
    let x = Tensor::randn([n], opts);
    let woodbury = shifted.f_solve(&x)?;
    let dense = Tensor::linalg_solve(&shifted.to_dense(), &x, true);
    println!(
        "Woodbury vs dense solve: max |diff| = {:.2e}",
        (woodbury - dense).abs().max().double_value(&[])
    );
    let (sign, logdet) = shifted.slogdet();
    println!("slogdet(Σ + 0.25 I) = ({}, {:.6})", sign.double_value(&[]), logdet.double_value(&[]));
    Ok(())
}
