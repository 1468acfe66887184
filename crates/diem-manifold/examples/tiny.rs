//! The manifold experiment from a program, at its smallest: the `tiny` preset (128 points of a random 1-D
//! curve in R^5, each seen through its own 2×5 projection), two laps, written to a run directory of your choice
//! (default: a temporary one). It prints the divergence of the prior to held-out ground truth after the Gaussian
//! initialization and after every lap, and where the report and the corner plots are.
//!
//! Run with `cargo xtask cargo run -p diem-manifold --example tiny [-- OUT_DIR]` (seconds in debug mode). For the
//! README's demo (the same code with the `demo` preset) use `cargo xtask demo`.

use diem_manifold::{run_experiment, ManifoldConfig, RunOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let out = std::env::args().nth(1).map_or_else(|| temp.path().join("run"), std::path::PathBuf::from);
    let mut config = ManifoldConfig::tiny();
    config.em.laps = 2;
    let summary = run_experiment(&config, &out, &RunOptions::default())?;
    for record in &summary.records {
        let lap = if record.lap < 0 { "gaussian".to_string() } else { format!("lap {}", record.lap) };
        println!("{lap:>9}: Sinkhorn divergence to the ground truth {:.4}", record.sinkhorn);
    }
    println!("report: {}", summary.report.display());
    Ok(())
}
