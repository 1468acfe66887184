//! FID and Inception Score at the scale of docs/method.md §9b, with timings.
//!
//! Without arguments: FID between two synthetic Inception-sized feature sets (N × 2048, Gaussian with a shared
//! random covariance, one mean shifted), which times [`FeatureStats::from_features`] and
//! [`frechet_distance`] at the real feature width. With a TorchScript Inception file (see the
//! `diem_metrics::inception` docs for the export): FID and IS of random uint8 images against a second random set.
//!
//! `cargo xtask cargo run --release -p diem-metrics --example fid_is -- [n] [inception.pt]`

use std::time::Instant;

use diem_metrics::{fid_is, frechet_distance, to_uint8_range, FeatureStats, InceptionNet, DEFAULT_SPLITS};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let inception = args.next();
    tch::manual_seed(0);
    let d = 2048;
    let opts = (Kind::Float, Device::Cpu);
    let mix = Tensor::randn([d, d], opts) / (d as f64).sqrt();
    let shift = Tensor::randn([d], opts) * 0.1;
    let a = Tensor::randn([n, d], opts).matmul(&mix);
    let b = Tensor::randn([n, d], opts).matmul(&mix) + &shift;

    let start = Instant::now();
    let (sa, sb) = (FeatureStats::from_features(&a)?, FeatureStats::from_features(&b)?);
    println!("feature statistics of 2 × [{n}, {d}]: {:.2?}", start.elapsed());
    let start = Instant::now();
    let fid = frechet_distance(&sa, &sb)?;
    println!(
        "FID = {fid:.4} in {:.2?} (mean term alone {:.4})",
        start.elapsed(),
        shift.square().sum(Kind::Double).double_value(&[])
    );

    if let Some(path) = inception {
        let net = InceptionNet::load(&path, Device::cuda_if_available())?;
        let images = |seed| {
            tch::manual_seed(seed);
            to_uint8_range(&Tensor::randn([n, 3, 32, 32], opts).clamp(-2.0, 2.0), -2.0, 2.0)
        };
        let start = Instant::now();
        let reference = FeatureStats::from_features(&net.features_and_logits(&images(1), 250)?.0)?;
        let report = fid_is(&net, &images(2), &reference, 250, DEFAULT_SPLITS)?;
        println!("{path}: {report:?} in {:.2?}", start.elapsed());
    }
    Ok(())
}
