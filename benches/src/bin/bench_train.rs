//! diem's side of `cargo xtask bench train`: M-step training steps of the manifold MLP or a small U-Net through
//! [`diem_models::Trainer::fit`] (the DSM loss, global-norm clipping, Adam; docs/method.md §3.3, §8), timed
//! after a warm-up. Prints one JSON line; `benches/python/torch_train.py` is the PyTorch side.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use diem_benches::posterior_bench::process_cpu_seconds as cpu_seconds;
use diem_models::{LrConfig, NetworkConfig, PriorModel, TimeDistribution, TrainConfig, Trainer, VeSchedule};
use tch::{Device, Kind, Tensor};

/// One timed training run.
#[derive(Parser)]
struct Args {
    /// `mlp` or `unet`.
    #[arg(long)]
    net: String,
    /// The network's configuration as JSON (an `MlpConfig` or a `UNetConfig`).
    #[arg(long)]
    json: String,
    /// Batch size.
    #[arg(long)]
    batch: i64,
    /// Image side of the U-Net's inputs.
    #[arg(long, default_value_t = 32)]
    image: i64,
    /// Timed steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Untimed steps before (a separate trainer: allocator, thread pool and caches warm up).
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// The VE schedule's σ(0) and σ(1).
    #[arg(long, num_args = 2, default_values_t = [1e-3, 1e1])]
    schedule: Vec<f64>,
    /// Initial learning rate (linear decay to 1e-6 over the steps, as the manifold M-step).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Global-norm clipping.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// `tch` (libtorch's per-tensor Adam, the default) or `fused` (`AdamConfig::fused`).
    #[arg(long, default_value = "tch")]
    adam: String,
    /// Seed of the weights, data and draws.
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    tch::manual_seed(args.seed);
    let device = Device::Cpu;
    let (network, data) = match args.net.as_str() {
        "mlp" => {
            let c: diem_models::MlpConfig = serde_json::from_str(&args.json).context("MLP config")?;
            let data = Tensor::randn([4096, c.features], (Kind::Float, device));
            (NetworkConfig::Mlp(c), data)
        }
        "unet" => {
            let c: diem_models::UNetConfig = serde_json::from_str(&args.json).context("U-Net config")?;
            let n = (4 * args.batch).max(256);
            let data = Tensor::randn([n, c.in_channels, args.image, args.image], (Kind::Float, device));
            (NetworkConfig::Unet(c), data)
        }
        other => anyhow::bail!("--net must be mlp or unet, got {other}"),
    };
    let schedule = VeSchedule::new(args.schedule[0], args.schedule[1])?;
    let model = PriorModel::new(network, schedule, device)?;
    let mut config = TrainConfig {
        steps: args.warmup.max(1),
        batch_size: args.batch,
        lr: LrConfig::linear(args.lr, 1e-6),
        clip_norm: Some(args.clip),
        schedule,
        time: TimeDistribution::Beta { alpha: 3.0, beta: 3.0 },
        ..TrainConfig::manifold()
    };
    config.adam.fused = match args.adam.as_str() {
        "tch" => false,
        "fused" => true,
        other => anyhow::bail!("--adam must be tch or fused, got {other}"),
    };
    config.log_every = config.steps;
    Trainer::new(model.var_store(), config.clone())?.fit(model.denoiser(), &data)?;
    config.steps = args.steps.max(1);
    config.log_every = config.steps;
    let mut trainer = Trainer::new(model.var_store(), config)?;
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let report = trainer.fit(model.denoiser(), &data)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let finite = report.records.iter().all(|r| r.loss.is_finite());
    let params = model.var_store().trainable_variables();
    let json = serde_json::json!({
        "impl": format!("diem-{}", args.adam),
        "net": args.net,
        "parameters": model.num_parameters(),
        "param_tensors": params.len(),
        "threads": tch::get_num_threads(),
        "batch": args.batch,
        "steps": args.steps,
        "seconds": seconds,
        "ms_per_step": 1e3 * seconds / args.steps.max(1) as f64,
        "cpu_seconds": cpu,
        "finite": finite,
    });
    println!("{json}");
    Ok(())
}
