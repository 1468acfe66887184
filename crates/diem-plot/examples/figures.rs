//! Draws one figure of each kind into a folder: a banded log-log curve, a corner plot of a noisy circle
//! against the exact circle, and an image grid.
//!
//! `cargo run -p diem-plot --example figures -- [OUT_DIR]` (default `target/figures`).

use std::path::PathBuf;

use diem_plot::{corner_plot, image_grid, line_plot, CornerPlot, Image, LinePlot, Series};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/figures".into()));
    std::fs::create_dir_all(&out)?;

    let x: Vec<f64> = (0..20).map(|k| 10f64.powf(-2.0 + k as f64 * 3.0 / 19.0)).collect();
    let y: Vec<f64> = x.iter().map(|s| s * s / (1.0 + s * s)).collect();
    let plot = LinePlot {
        title: "σ²/(1+σ²)".into(),
        x_label: "σ".into(),
        y_label: "value".into(),
        log_x: true,
        log_y: true,
        series: vec![Series::new("median", x.clone(), y.clone())
            .with_band(y.iter().map(|v| v * 0.7).collect(), y.iter().map(|v| v * 1.4).collect())],
        ..LinePlot::default()
    };
    line_plot(&plot, &out.join("curve.png"))?;

    // A circle in 3-D (third coordinate a function of the angle), with and without noise.
    let n = 4000;
    let (mut noisy, mut exact) = (Vec::with_capacity(3 * n), Vec::with_capacity(3 * n));
    for k in 0..n {
        let t = k as f64 / n as f64 * std::f64::consts::TAU;
        let p = [2.0 * t.cos(), 2.0 * t.sin(), (2.0 * t).sin()];
        exact.extend_from_slice(&p);
        let jitter = ((k * 2654435761) % 1000) as f64 / 1000.0 - 0.5;
        noisy.extend(p.iter().map(|v| v + 0.2 * jitter));
    }
    let corner = CornerPlot {
        title: "samples vs truth".into(),
        reference: Some(&exact),
        ..CornerPlot::new(&noisy, 3)
    };
    corner_plot(&corner, &out.join("corner.png"))?;

    let images: Vec<Image> = (0..8)
        .map(|k| {
            let (h, w) = (16, 16);
            let data = (0..3 * h * w)
                .map(|i| {
                    let (c, p) = (i / (h * w), i % (h * w));
                    ((p / w + p % w + 4 * k + 5 * c) % 16) as f32 / 15.0
                })
                .collect();
            Image { channels: 3, height: h, width: w, data }
        })
        .collect();
    image_grid(&images, 4, 4, &out.join("grid.png"))?;
    println!("figures written to {}", out.display());
    Ok(())
}
