//! One synthetic knee-like volume → the zero-filled reconstructions `Aᵀy` of a slice at several
//! accelerations, as a PNG grid (docs/method.md §9c): ground truth, then R = 2, 4, 6, 8, 10.
//!
//! ```text
//! cargo xtask cargo run -p diem-fastmri --example observation_grid -- [OUT_DIR]
//! ```
//!
//! Needs the project's venv python with h5py (`cargo xtask setup`). Writes `OUT_DIR/observation-grid.png`
//! (default `runs/fastmri-example`) and prints the kept column fraction and the zero-filled PSNR per R.

use std::path::PathBuf;

use diem_fastmri::{
    default_python, make_fixture, prepare, simulate_kspace, to_images, PrepareConfig, PreparedData,
};
use tch::{Device, Kind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).map_or_else(|| PathBuf::from("runs/fastmri-example"), PathBuf::from);
    let python = default_python();
    let raw = out.join("fixture");
    make_fixture(&python, &raw, 1, 41, 64, 3)?;
    let config = PrepareConfig { size_multiple: 8, ..PrepareConfig::default() };
    let prepared = out.join("data");
    prepare(&python, &raw, &prepared, &config)?;
    let data = PreparedData::load(&prepared, Device::Cpu)?;
    // The middle kept slice; with one volume, the figures use the training slices.
    let truth = data.heldout.narrow(0, 15, 1);
    let mut images = to_images(&truth)?;
    for (i, r) in [2.0, 4.0, 6.0, 8.0, 10.0].into_iter().enumerate() {
        let obs = simulate_kspace(&truth, r, 1e-2, 10 + i as u64, 20 + i as u64, 1, None)?;
        let zero_filled = tch::no_grad(|| obs.operator.adjoint(&obs.y));
        let kept = obs.operator.params()[0].1.mean(Kind::Double).double_value(&[]);
        let psnr = diem_metrics::psnr(&zero_filled, &truth, 4.0)?.double_value(&[0]);
        println!(
            "R = {r:>4}: kept column fraction {kept:.3} (1/R = {:.3}), zero-filled PSNR {psnr:.2} dB",
            1.0 / r
        );
        images.extend(to_images(&zero_filled)?);
    }
    let path = out.join("observation-grid.png");
    diem_plot::image_grid(&images, images.len(), 3, &path)?;
    println!("wrote {}", path.display());
    Ok(())
}
