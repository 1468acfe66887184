//! Accuracy per second against azula (issue 14), diem's side; usually run through
//! `cargo xtask sweep --frontier [--quick]`, which interleaves it with `benches/python/azula_frontier.py`:
//!
//! - `prepare --out DIR [--quick]`: draws the problems, writes `config.json` and `problem.safetensors`;
//! - `run --dir DIR --dim D --rep R`: runs every diem configuration once and appends to `diem.jsonl`;
//! - `report --dir DIR`: computes the divergence of azula's samples, writes the CSV, JSON lines, PNG and
//!   markdown (`frontier.*`) and prints the markdown.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use diem_benches::frontier::{append_records, report, run_diem, FrontierConfig, FrontierProblem};
use diem_benches::stats::write_atomic;

/// Posterior samplers' divergence against wall time, diem's side.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Draw the problems and write `config.json` and `problem.safetensors` into `--out`.
    Prepare {
        /// Output folder.
        #[arg(long, default_value = "runs/frontier")]
        out: PathBuf,
        /// The quick preset (N = 64, up to 32 steps).
        #[arg(long)]
        quick: bool,
        /// Repetitions (overrides the preset).
        #[arg(long)]
        repeat: Option<usize>,
        /// Samples N per run (overrides the preset).
        #[arg(long)]
        samples: Option<i64>,
    },
    /// Run every diem configuration once for one dimension; append the records to `diem.jsonl`.
    Run {
        /// The folder written by `prepare`.
        #[arg(long)]
        dir: PathBuf,
        /// Dimension d.
        #[arg(long)]
        dim: i64,
        /// Repetition (also the noise seed).
        #[arg(long, default_value_t = 0)]
        rep: usize,
        /// libtorch intra-op threads.
        #[arg(long, default_value_t = 1)]
        threads: i32,
    },
    /// Compute the divergences of the external samples and write the report files.
    Report {
        /// The run folder.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn read_config(dir: &std::path::Path) -> Result<FrontierConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Prepare { out, quick, repeat, samples } => {
            let mut config = if quick { FrontierConfig::quick() } else { FrontierConfig::default() };
            if let Some(r) = repeat {
                config.repeat = r;
            }
            if let Some(n) = samples {
                config.samples = n;
            }
            config.validate()?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let problems = config
                .dims
                .iter()
                .map(|&d| FrontierProblem::generate(&config, d))
                .collect::<Result<Vec<_>, _>>()?;
            FrontierProblem::export(&problems, &out.join("problem.safetensors"))?;
            write_atomic(&out.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
            for f in ["diem.jsonl", "azula.jsonl"] {
                let path = out.join(f);
                if path.exists() {
                    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                }
            }
            eprintln!(
                "frontier: wrote {} (d ∈ {:?}, N = {}, {} diem and {} azula configurations)",
                out.display(),
                config.dims,
                config.samples,
                config.diem_runs().len(),
                config.azula_runs().len()
            );
        }
        Command::Run { dir, dim, rep, threads } => {
            tch::set_num_threads(threads);
            let config = read_config(&dir)?;
            let problem = FrontierProblem::import(&config, &dir.join("problem.safetensors"), dim)?;
            let records = run_diem(&config, &problem, rep, &mut |r| {
                eprintln!(
                    "  diem  d {:>2} rep {} {:<8} {:<9} T {:>3}: {:>8.3} s, {:>5} evals, S = {:.3e}",
                    r.dim,
                    r.rep,
                    r.sampler,
                    r.method,
                    r.steps,
                    r.seconds,
                    r.evaluations(),
                    r.divergence.unwrap_or(f64::NAN)
                )
            })?;
            append_records(&dir.join("diem.jsonl"), &records)?;
        }
        Command::Report { dir } => {
            let files = report(&dir)?.files;
            let md = std::fs::read_to_string(&files.markdown)?;
            println!("{md}");
            for p in [&files.csv, &files.jsonl, &files.summary, &files.png, &files.markdown, &files.checks] {
                println!("wrote {}", p.display());
            }
        }
    }
    Ok(())
}
