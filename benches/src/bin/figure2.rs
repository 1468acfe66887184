//! The paper's Figure 2 (docs/method.md §10): Sinkhorn divergence between the moment-matched and the exact noisy
//! posterior for four covariance choices, against σ_t. Usually run through `cargo xtask figure2`.
//!
//! Writes `config.json`, `figure2.csv` (every seed), `figure2-summary.csv` (median and quartiles) and
//! `figure2.png` (log–log, median with a 25–75 % band) into `--out` (default `runs/figure2`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use diem_benches::figure2::{run, CovarianceChoice, Figure2Config};
use diem_benches::report::{write_study, Measurement};
use diem_benches::stats::write_atomic;

/// Figure 2 of the paper: covariance choices vs the exact posterior.
#[derive(Parser)]
struct Args {
    /// The paper's sizes (64 seeds, 2^20 pool, 16,384-point Sinkhorn): GPU scale.
    #[arg(long)]
    full: bool,
    /// Number of seeds (overrides the preset).
    #[arg(long)]
    seeds: Option<u64>,
    /// Prior pool size for importance resampling (overrides the preset).
    #[arg(long)]
    proposal_size: Option<i64>,
    /// Points per Sinkhorn sample set (overrides the preset).
    #[arg(long)]
    sinkhorn_points: Option<i64>,
    /// Comma-separated noise levels σ_t (overrides the preset).
    #[arg(long, value_delimiter = ',')]
    sigmas: Option<Vec<f64>>,
    /// Output folder.
    #[arg(long, default_value = "runs/figure2")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut config = if args.full { Figure2Config::full() } else { Figure2Config::default() };
    if let Some(v) = args.seeds {
        config.seeds = v;
    }
    if let Some(v) = args.proposal_size {
        config.proposal_size = v;
    }
    if let Some(v) = args.sinkhorn_points {
        config.sinkhorn_points = v;
    }
    if let Some(v) = args.sigmas {
        config.sigmas = v;
    }
    config.validate()?;
    let device = diem_models::device_from_env().context("choosing the device")?;
    eprintln!(
        "figure2: {} seeds × {} σ_t × 4 covariances, pool {}, Sinkhorn sets of {} (device {device:?}; \
         the study computes on the CPU in float64)",
        config.seeds,
        config.sigmas.len(),
        config.proposal_size,
        config.sinkhorn_points
    );
    let config_path = args.out.join("config.json");
    write_atomic(&config_path, serde_json::to_string_pretty(&config)?.as_bytes())?;
    let start = Instant::now();
    let records = run(&config, &mut |r| {
        eprintln!(
            "  [{:>6.1}s] seed {:>3} σ_t {:>5} {:<8} S = {:.3e} (ESS {:.0})",
            start.elapsed().as_secs_f64(),
            r.seed,
            r.sigma_t,
            r.choice.name(),
            r.divergence,
            r.ess
        )
    })?;
    let measurements: Vec<Measurement> = records
        .iter()
        .map(|r| Measurement {
            series: r.choice.name().into(),
            x: r.sigma_t,
            seed: r.seed,
            value: r.divergence,
        })
        .collect();
    let legend = |name: &str| {
        CovarianceChoice::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .map_or_else(|| name.to_string(), |c| c.legend().to_string())
    };
    let (raw, summary, figure) =
        (args.out.join("figure2.csv"), args.out.join("figure2-summary.csv"), args.out.join("figure2.png"));
    let groups = write_study(
        &measurements,
        "sigma_t",
        "sinkhorn_divergence",
        &format!(
            "Figure 2: n = {}, Kc = {}, {} seeds",
            config.problem.ambient_dim, config.problem.components, config.seeds
        ),
        &legend,
        &raw,
        &summary,
        &figure,
    )?;
    println!("figure2: finished in {:.1} s", start.elapsed().as_secs_f64());
    println!("median Sinkhorn divergence (25–75 %) per σ_t:");
    for (name, points) in &groups {
        let line: Vec<String> = points.iter().map(|(x, q)| format!("{x}: {:.2e}", q.median)).collect();
        println!("  {name:<8} {}", line.join("  "));
    }
    for p in [&config_path, &raw, &summary, &figure] {
        println!("wrote {}", p.display());
    }
    Ok(())
}
