//! Trains the MLP denoiser on a 2-D mixture of 8 isotropic Gaussians on a circle, compares its denoising
//! error with the analytic [`MixtureDenoiser`] at several noise levels, and saves a checkpoint (with μ_x and
//! the EMA) plus the loss curve.
//!
//! Run with `cargo xtask cargo run -p diem-models --release --example train_mixture -- [STEPS] [OUT_DIR]`
//! (defaults: 4000 steps, `target/train_mixture`). Set `DIEM_DEVICE=cpu|cuda` to pick the device.

use std::path::PathBuf;

use diem_models::{
    checkpoint, device_from_env, Denoiser, LrConfig, MixtureDenoiser, MlpConfig, NetworkConfig, PriorModel,
    TrainConfig, Trainer, VeSchedule,
};
use tch::{Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4000);
    let out = args.next().map_or_else(|| PathBuf::from("target/train_mixture"), PathBuf::from);
    let device = device_from_env()?;
    tch::manual_seed(0);

    // Eight components on the circle of radius 1.5, s = 0.1.
    let angles = Tensor::arange(8, (Kind::Float, device)) * (std::f64::consts::TAU / 8.0);
    let centres = Tensor::stack(&[angles.cos(), angles.sin()], 1) * 1.5;
    let s = 0.1;
    let sample = |n: i64| {
        let idx = Tensor::randint(8, [n], (Kind::Int64, device));
        centres.index_select(0, &idx) + Tensor::randn([n, 2], (Kind::Float, device)) * s
    };
    let data = sample(65_536);

    let config =
        NetworkConfig::Mlp(MlpConfig { features: 2, hidden: vec![256, 256, 256], embedding_features: 64 });
    let mut model = PriorModel::new(config, VeSchedule::manifold(), device)?;
    println!("MLP with {} parameters on {device:?}, {steps} steps", model.num_parameters());
    let train = TrainConfig {
        steps,
        lr: LrConfig::linear(1e-3, 1e-6),
        ema_decay: Some(0.999),
        log_every: (steps / 20).max(1),
        progress: true,
        batch_size: 1024,
        ..TrainConfig::manifold()
    };
    let mut trainer = Trainer::new(model.var_store(), train)?;
    let report = trainer.fit(model.denoiser(), &data)?;
    for r in &report.records {
        println!("step {:>6}  loss {:.4e}  |g| {:.3e}  lr {:.2e}", r.step, r.loss, r.grad_norm, r.lr);
    }

    let exact = MixtureDenoiser::new(centres.shallow_clone(), s)?;
    println!("σ        network MSE   analytic MSE   ratio");
    for sigma in [0.05, 0.2, 0.5, 1.0, 3.0] {
        let x = sample(16_384);
        let x_t = &x + x.randn_like() * sigma;
        let sig = Tensor::full([16_384], sigma, (Kind::Float, device));
        let mse = |y: Tensor| (y - &x).square().sum(Kind::Double).double_value(&[]) / 16_384.0;
        let (net, opt) =
            tch::no_grad(|| (mse(model.denoiser().denoise(&x_t, &sig)), mse(exact.denoise(&x_t, &sig))));
        println!("{sigma:<8} {net:<13.5} {opt:<14.5} {:.3}", net / opt);
    }

    model.set_mean(Some(data.mean_dim(0, false, Kind::Float)));
    checkpoint::save(&out, &model, trainer.ema())?;
    report.write_jsonl(&out.join("loss.jsonl"))?;
    println!("checkpoint and loss curve written to {}", out.display());
    Ok(())
}
