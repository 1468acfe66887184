//! Sinkhorn divergence between Gaussian samples, compared with the closed-form 2-Wasserstein distance.
//!
//! `cargo xtask cargo run --release -p diem-metrics --example sinkhorn -- [n] [lambda]`

use std::time::Instant;

use diem_metrics::{gaussian_w2_squared, Sinkhorn};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let lambda: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1e-3);
    let opts = (Kind::Double, Device::Cpu);
    tch::manual_seed(0);
    let shift = Tensor::from_slice(&[0.5, -0.5]);
    let scale = 1.3;
    let truth_a = Tensor::randn([n, 2], opts);
    let truth_b = Tensor::randn([n, 2], opts);
    let model = Tensor::randn([n, 2], opts) * scale + &shift;
    let solver = Sinkhorn { lambda, ..Sinkhorn::default() };
    let start = Instant::now();
    let report = solver.ot(&truth_a, &model)?;
    println!(
        "OT_λ(truth, model) = {:.4} after {} iterations ({:.2?}), marginal error {:.2e}, converged {}",
        report.cost,
        report.iterations,
        start.elapsed(),
        report.marginal_error,
        report.converged
    );
    let s = solver.two_sample_divergence(&truth_a, &truth_b, &model)?;
    let d = solver.divergence(&truth_a, &model)?;
    let eye = Tensor::eye(2, opts);
    let w2 = gaussian_w2_squared(&Tensor::zeros([2], opts), &eye, &shift, &(&eye * (scale * scale)))?;
    println!("two-sample divergence {s:.4}, debiased divergence {d:.4}, closed-form W2² {w2:.4}");
    Ok(())
}
