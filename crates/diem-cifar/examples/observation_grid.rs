//! Reads a CIFAR-10 binary data set (the `.tar.gz` or its extracted folder), observes its first training
//! images with random pixel deletion at rate ρ (docs/method.md §9b: mask shared by the channels, noise 1e-3) and
//! writes an image grid: ground truth in the first row, observations (deleted pixels black) in the second.
//!
//! ```text
//! cargo xtask cargo run -p diem-cifar --example observation_grid -- [DATA] [RHO] [OUT.png]
//! ```
//!
//! `DATA` (empty or absent) defaults to a synthetic data set in the CIFAR-10 binary format written to a temporary folder, `RHO`
//! to 0.75 and `OUT.png` to `observation-grid.png`.

use std::path::PathBuf;

use diem_cifar::observer::write_grid;
use diem_cifar::{observe, to_uint8, write_synthetic, CifarSource, SyntheticSpec, NOISE_STD};
use tch::{Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tmp = tempfile::tempdir()?;
    let data = match args.first().filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let spec = SyntheticSpec { train_per_file: 8, test: 8, seed: 0 };
            write_synthetic(tmp.path(), tmp.path(), &spec)?.archive
        }
    };
    let rho: f64 = args.get(1).map_or(Ok(0.75), |r| r.parse())?;
    let out = PathBuf::from(args.get(2).map_or("observation-grid.png", String::as_str));

    let source = CifarSource::find(&data)?;
    let cifar = source.read()?;
    println!(
        "{}: {} training and {} test images",
        source.path().display(),
        cifar.train.len(),
        cifar.test.len()
    );
    let truth = cifar.train.head(8).images();
    let obs = observe(&truth, rho, 0, NOISE_STD, 8, None)?;
    let mask = obs.operator.apply(&Tensor::ones(obs.y.size(), (Kind::Float, obs.y.device())));
    println!("deleted fraction {:.3} (ρ = {rho})", 1.0 - mask.mean(Kind::Double).double_value(&[]));
    let shown = to_uint8(&obs.y) * mask.to_kind(Kind::Uint8);
    let rows = Tensor::cat(&[to_uint8(&truth), shown], 0);
    write_grid(&rows, 8, &out)?;
    println!("wrote {}", out.display());
    Ok(())
}
