//! Hot paths of the models: the manifold MLP (3×256) forward, forward + VJP (one MMPS covariance product)
//! and one training step at batch 1024 and 8192, and the CIFAR U-Net forward.
//!
//! `cargo xtask cargo bench -p diem-models`. The U-Net runs at batch 64 on CUDA and at batch 8 on the CPU
//! (a 2-core CPU needs seconds per forward); the batch is in the benchmark's name.

use std::time::Duration;

use criterion::{criterion_main, BenchmarkId, Criterion};
use diem_models::{
    device_from_env, vjp, Denoiser, MlpConfig, NetworkConfig, PriorModel, TrainConfig, Trainer, UNetConfig,
    VeSchedule,
};
use tch::{Device, Kind, Tensor};

fn bench_mlp(c: &mut Criterion) {
    let device = device_from_env().unwrap_or(Device::Cpu);
    tch::manual_seed(0);
    let model = PriorModel::new(NetworkConfig::Mlp(MlpConfig::default()), VeSchedule::manifold(), device)
        .expect("the default MLP config is valid");
    let mut group = c.benchmark_group("mlp_3x256");
    group.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for batch in [1024i64, 8192] {
        let x_t = Tensor::randn([batch, 5], (Kind::Float, device));
        let sigma = Tensor::full([batch], 0.3, (Kind::Float, device));
        group.bench_with_input(BenchmarkId::new("forward", batch), &batch, |b, _| {
            b.iter(|| {
                let y = tch::no_grad(|| model.denoiser().denoise(&x_t, &sigma));
                std::hint::black_box(y.sum(Kind::Float).double_value(&[]))
            })
        });
        let u = Tensor::randn([batch, 5], (Kind::Float, device));
        group.bench_with_input(BenchmarkId::new("forward_vjp", batch), &batch, |b, _| {
            b.iter(|| {
                let x = x_t.detach().set_requires_grad(true);
                let y = model.denoiser().denoise(&x, &sigma);
                let g = vjp(&y, &x, &u, false).expect("the MLP is differentiable");
                std::hint::black_box(g.sum(Kind::Float).double_value(&[]))
            })
        });
        let data = Tensor::randn([batch, 5], (Kind::Float, device));
        let config = TrainConfig { steps: 1_000_000, batch_size: batch, ..TrainConfig::manifold() };
        let mut trainer = Trainer::new(model.var_store(), config).expect("valid training config");
        group.bench_with_input(BenchmarkId::new("train_step", batch), &batch, |b, _| {
            b.iter(|| {
                let (loss, _) = trainer.train_step(model.denoiser(), &data).expect("valid batch");
                std::hint::black_box(loss.double_value(&[]))
            })
        });
    }
    group.finish();
}

fn bench_unet(c: &mut Criterion) {
    let device = device_from_env().unwrap_or(Device::Cpu);
    tch::manual_seed(0);
    let model = PriorModel::new(NetworkConfig::Unet(UNetConfig::cifar()), VeSchedule::default(), device)
        .expect("the CIFAR config is valid");
    let batch = if device.is_cuda() { 64 } else { 8 };
    let x_t = Tensor::randn([batch, 3, 32, 32], (Kind::Float, device));
    let sigma = Tensor::full([batch], 1.0, (Kind::Float, device));
    let mut group = c.benchmark_group("unet_cifar");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    group.bench_with_input(BenchmarkId::new("forward", batch), &batch, |b, _| {
        b.iter(|| {
            let y = tch::no_grad(|| model.denoiser().denoise(&x_t, &sigma));
            std::hint::black_box(y.sum(Kind::Float).double_value(&[]))
        })
    });
    group.finish();
}

// The macro generates an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench_mlp, super::bench_unet);
}
criterion_main!(group::benches);
