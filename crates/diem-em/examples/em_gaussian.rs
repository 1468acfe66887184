//! Gaussian EM (`fit_moments`, docs/method.md §7.4) on masked Gaussian data: a 6-D Gaussian with a rank-2 structure,
//! each coordinate deleted with probability 0.5, noise σ_y = 1e-2. Prints the error of the fitted mean and
//! covariance after every iteration, against the truth and against the naive mean of the observed entries.
//!
//! Run with `cargo xtask cargo run -p diem-em --example em_gaussian`.

use diem_em::{fit_gaussian_with, GaussianEmConfig, GaussianPrior};
use diem_models::VeSchedule;
use diem_operators::{Mask, NoiseCov, Observation};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tch::manual_seed(0);
    let (s, n) = (2048, 6);
    let opts = (Kind::Double, Device::Cpu);
    let mean = Tensor::from_slice(&[1.0, -1.0, 0.5, 0.0, 2.0, -0.5]);
    let u = Tensor::randn([n, 2], opts);
    let cov = u.matmul(&u.tr()) + Tensor::eye(n, opts) * 0.1;
    let l = cov.linalg_cholesky(false);
    let x = Tensor::randn([s, n], opts).matmul(&l.tr()) + mean.unsqueeze(0);
    let mask = Tensor::rand([s, n], opts).gt(0.5).to_kind(Kind::Double);
    let obs = Observation::simulate(
        &x,
        Box::new(Mask::new(mask.shallow_clone(), &[n])?),
        NoiseCov::isotropic(1e-2)?,
        1,
    )?;

    let naive = (&obs.y * &mask).sum_dim_intlist(0, false, Kind::Double)
        / mask.sum_dim_intlist(0, false, Kind::Double);
    let err = |a: &Tensor, b: &Tensor| (a - b).square().sum(Kind::Double).sqrt().double_value(&[]);
    println!("naive mean of the observed entries: error {:.4}", err(&naive, &mean));

    let mut config = GaussianEmConfig::spec(n as usize, n as usize);
    config.iterations = 16;
    config.steps = 64;
    let dense = cov.shallow_clone();
    let fit =
        fit_gaussian_with(&obs, &config, VeSchedule::manifold(), 0, None, &mut |it, p: &GaussianPrior| {
            let rel = err(&p.cov_dense(), &dense) / dense.square().sum(Kind::Double).sqrt().double_value(&[]);
            println!(
                "iteration {it:2}: mean error {:.4}, relative covariance error {:.4}",
                err(&p.mean, &mean),
                rel
            );
            Ok(())
        })?;
    println!("fitted mean {:?}", Vec::<f64>::try_from(&fit.mean)?);
    println!("true mean   {:?}", Vec::<f64>::try_from(&mean)?);
    Ok(())
}
