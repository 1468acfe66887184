//! Posterior samples for a masked observation of a 2-D Gaussian mixture, plotted as a PNG.
//!
//! The prior is a mixture of 8 isotropic Gaussians on a circle ([`MixtureDenoiser`], exact denoiser). One
//! observation keeps only the first coordinate, `y = x₁ + ε` with `σ_y = 0.05` (a [`Mask`] operator, whose
//! masked entry is pure noise, docs/method.md §1). MMPS (Tweedie covariance, 3 GMRES iterations) with DDPM draws 2048
//! posterior samples; the plot shows prior samples (grey), posterior samples (red) and the observed line
//! `x₁ = y` (blue). No text is drawn: plotters' `ab_glyph` backend needs a font file.
//!
//! Run: `cargo xtask cargo run -p diem-sampling --example posterior -- [output.png]`
//! (default output: `target/posterior.png`).

use diem_models::{MixtureDenoiser, VeSchedule};
use diem_operators::{Mask, NoiseCov};
use diem_sampling::{Ddpm, Mmps, MmpsConfig, NoiseRng, Sampler, SolverConfig, TimeGrid};
use plotters::prelude::*;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "target/posterior.png".into());
    let (n, k) = (2048i64, 8i64);
    let angles = Tensor::arange(k, (Kind::Double, Device::Cpu)) * (2.0 * std::f64::consts::PI / k as f64);
    let centres = Tensor::stack(&[angles.cos(), angles.sin()], 1) * 1.5;
    let prior = MixtureDenoiser::new(centres, 0.15)?;

    // Observe the first coordinate only.
    let (y_obs, sigma_y) = (0.9, 0.05);
    let mask = Mask::new(Tensor::from_slice(&[1.0f64, 0.0]).reshape([1, 2]), &[2])?;
    let y = Tensor::from_slice(&[y_obs, 0.0]).reshape([1, 2]).expand([n, 2], false).contiguous();
    let config = MmpsConfig::new(SolverConfig::gmres(3));
    let posterior = Mmps::new(&prior, &mask, &y, NoiseCov::isotropic(sigma_y)?, config)?;

    let sampler = Ddpm::new(VeSchedule::manifold(), TimeGrid::uniform(256)?);
    let prior_samples =
        sampler.sample(&prior, &[n, 2], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0))?;
    let started = std::time::Instant::now();
    let post = sampler.sample(&posterior, &[n, 2], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(1))?;
    let elapsed = started.elapsed();
    let s = posterior.stats();
    let x1 = post.select(1, 0);
    println!(
        "posterior: {n} samples in {:.2} s ({} calls, {} VJPs); x1 mean {:.3} (observed {y_obs}), std {:.3}",
        elapsed.as_secs_f64(),
        s.calls,
        s.vjps,
        f64::try_from(x1.mean(Kind::Double))?,
        f64::try_from(x1.std(true))?,
    );

    let root = BitMapBackend::new(&out, (640, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart =
        ChartBuilder::on(&root).margin(10).build_cartesian_2d(-2.5f64..2.5f64, -2.5f64..2.5f64)?;
    let points = |x: &Tensor| -> anyhow::Result<Vec<(f64, f64)>> {
        let v = Vec::<f64>::try_from(x.flatten(0, -1))?;
        Ok(v.chunks(2).map(|p| (p[0], p[1])).collect())
    };
    chart.draw_series(
        points(&prior_samples)?.into_iter().map(|p| Circle::new(p, 2, RGBColor(160, 160, 160).filled())),
    )?;
    chart.draw_series(LineSeries::new([(y_obs, -2.5), (y_obs, 2.5)], BLUE.stroke_width(2)))?;
    chart.draw_series(points(&post)?.into_iter().map(|p| Circle::new(p, 2, RED.mix(0.6).filled())))?;
    root.present()?;
    println!("wrote {out}");
    Ok(())
}
