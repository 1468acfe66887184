//! `diem-cifar`: the corrupted CIFAR-10 pipeline of docs/method.md §9b (behind `cargo xtask prepare-cifar` and
//! `cargo xtask reproduce-cifar`, which forward their arguments to the subcommands below).
//!
//! ```text
//! diem-cifar prepare [--data DIR] [--out DIR] [--rho 0.25,0.5,0.75] [--seed S] [--limit N] [--download]
//! diem-cifar reproduce [--rho 0.75] [--paper | --tiny] [--data DIR] [--prepared DIR] [--out DIR] [--laps N]
//!                      [--inception PATH] [--eval-samples N] [--overwrite | --resume] [--download] ...
//! diem-cifar synth --out DIR [--train-per-file N] [--test N] [--seed S]
//! ```
//!
//! The device is CUDA when available, else the CPU (`--device` or `DIEM_DEVICE=cpu|cuda|cuda:N` overrides).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use diem_cifar::{
    download_archive, prepare, run_experiment_on, write_synthetic, CifarConfig, CifarSource, DownloadOptions,
    PrepareConfig, RunOptions, SyntheticSpec,
};

/// The corrupted CIFAR-10 experiment of DiEM (docs/method.md §9b).
#[derive(Parser, Debug)]
#[command(name = "diem-cifar", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read (or download) the CIFAR-10 binary data set and write one observation set per deletion rate ρ.
    Prepare(PrepareArgs),
    /// Run DiEM on the observations of one rate ρ: per-lap checkpoints, image grids, FID/IS and report.md.
    Reproduce(ReproduceArgs),
    /// Write a synthetic data set in the CIFAR-10 binary format (folder and .tar.gz), e.g. to try `prepare`.
    Synth(SynthArgs),
}

#[derive(Args, Debug)]
struct DataArgs {
    /// The folder holding cifar-10-binary.tar.gz or cifar-10-batches-bin/ (or the archive or folder itself).
    #[arg(long, default_value = "data/cache/cifar10")]
    data: PathBuf,
    /// Download the archive into --data (with curl, MD5-checked) when it is not there.
    #[arg(long)]
    download: bool,
    /// The download address (for mirrors and tests).
    #[arg(long, hide = true)]
    url: Option<String>,
}

impl DataArgs {
    fn download_options(&self) -> Option<DownloadOptions> {
        self.download.then(|| {
            let mut o = DownloadOptions::default();
            if let Some(url) = &self.url {
                o.url.clone_from(url);
            }
            o
        })
    }
}

#[derive(Args, Debug)]
struct PrepareArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Output folder (default: DATA/prepared).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Deletion rates ρ, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75")]
    rho: Vec<f64>,
    /// Seed of the masks and the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ReproduceArgs {
    /// The deletion rate ρ.
    #[arg(long, default_value_t = 0.75)]
    rho: f64,
    /// The paper's full configuration (GPU scale: 32 laps of 49,920 steps, FID/IS on 50,000 samples).
    #[arg(long, conflicts_with_all = ["tiny", "micro"])]
    paper: bool,
    /// A synthetic CIFAR-format data set and a tiny network: the whole pipeline in 1–3 minutes on a CPU.
    #[arg(long, conflicts_with = "micro")]
    tiny: bool,
    /// An even smaller synthetic run (seconds; for tests).
    #[arg(long, hide = true)]
    micro: bool,
    #[command(flatten)]
    data: DataArgs,
    /// The prepared folder (default: DATA/prepared); the rate's set is prepared there when missing.
    #[arg(long)]
    prepared: Option<PathBuf>,
    /// The run directory (default: runs/cifar-rho{ρ}-{preset}).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Laps K (new runs only; a resumed run keeps its configuration).
    #[arg(long)]
    laps: Option<usize>,
    /// M-step optimizer steps per lap.
    #[arg(long)]
    steps: Option<usize>,
    /// Use only the first N training observations.
    #[arg(long)]
    images: Option<usize>,
    /// TorchScript Inception network returning (features, logits): FID and IS after every lap.
    #[arg(long)]
    inception: Option<PathBuf>,
    /// Prior samples for FID/IS (paper: 50,000).
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Compute FID/IS every N laps (and at the last lap).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Run seed (network initialization, sampler noise, batches).
    #[arg(long)]
    seed: Option<u64>,
    /// Seed of the masks and the observation noise.
    #[arg(long)]
    data_seed: Option<u64>,
    /// Delete an existing run in --out and start over.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Continue the run in --out after its last completed lap.
    #[arg(long)]
    resume: bool,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N` (default: DIEM_DEVICE, else auto).
    #[arg(long)]
    device: Option<String>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Output folder (gets cifar-10-batches-bin/ and cifar-10-binary.tar.gz).
    #[arg(long)]
    out: PathBuf,
    /// Images per training file (5 files).
    #[arg(long, default_value_t = 64)]
    train_per_file: usize,
    /// Test images.
    #[arg(long, default_value_t = 64)]
    test: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn prepare_cmd(args: &PrepareArgs) -> Result<()> {
    let data = &args.data.data;
    let source = match (CifarSource::locate(data), args.data.download_options()) {
        (Some(s), _) => s,
        (None, Some(o)) => CifarSource::Archive(download_archive(data, &o)?),
        (None, None) => CifarSource::find(data)?,
    };
    eprintln!("diem-cifar: reading {}", source.path().display());
    let cifar = source.read()?;
    eprintln!("diem-cifar: {} training and {} test images", cifar.train.len(), cifar.test.len());
    let out = args.out.clone().unwrap_or_else(|| data.join("prepared"));
    let config = PrepareConfig {
        rhos: args.rho.clone(),
        seed: args.seed,
        limit: args.limit,
        progress: !args.quiet,
        ..PrepareConfig::default()
    };
    let summary = prepare(&cifar, &source.path().display().to_string(), &out, &config)?;
    for s in &summary.sets {
        println!(
            "diem-cifar: ρ = {}: {} observations, deleted fraction {:.4} → {}",
            s.rho,
            s.count,
            s.deleted_fraction,
            out.join(&s.file).display()
        );
    }
    println!("diem-cifar: FID reference images → {}", out.join(&summary.images_file).display());
    Ok(())
}

fn reproduce_cmd(args: &ReproduceArgs) -> Result<()> {
    let preset = if args.paper {
        "paper"
    } else if args.tiny {
        "tiny"
    } else if args.micro {
        "micro"
    } else {
        "reduced"
    };
    let mut config = CifarConfig::preset(preset, args.rho)?;
    if let Some(l) = args.laps {
        config.em.laps = l;
    }
    if let Some(s) = args.steps {
        config.em.mstep.steps = s;
    }
    if let Some(n) = args.images {
        config.images = Some(n);
    }
    if let Some(n) = args.eval_samples {
        config.eval.samples = n;
        config.eval.splits = config.eval.splits.min(n.max(1));
    }
    if let Some(n) = args.eval_every {
        config.eval.every = n;
    }
    if let Some(s) = args.seed {
        config.em.seed = s;
    }
    if let Some(s) = args.data_seed {
        config.data_seed = s;
    }
    config.em.progress = !args.quiet;
    let (device, comm) = diem_em::dist::launch(args.device.as_deref(), None)?;
    let out =
        args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/cifar-rho{:.2}-{preset}", args.rho)));
    let options = RunOptions {
        resume: args.resume,
        overwrite: args.overwrite,
        device,
        data: args.data.data.clone(),
        prepared: args.prepared.clone(),
        download: args.data.download_options(),
        inception: args.inception.clone(),
    };
    eprintln!(
        "diem-cifar: preset `{preset}`, ρ = {}, {} laps, on {device:?} with {} libtorch threads → {}{}",
        args.rho,
        config.em.laps,
        tch::get_num_threads(),
        out.display(),
        if comm.size() > 1 { format!(" (rank {} of {})", comm.rank(), comm.size()) } else { String::new() }
    );
    let root = comm.is_root();
    let summary = run_experiment_on(comm, &config, &out, &options).context("the CIFAR-10 run failed")?;
    if !root {
        return Ok(());
    }
    if let Some(last) = summary.metrics.last() {
        let fid = last.get("fid").and_then(serde_json::Value::as_f64);
        let is = last.get("is_mean").and_then(serde_json::Value::as_f64);
        println!(
            "diem-cifar: {} laps in {:.0} s; last lap FID {} IS {}",
            summary.metrics.len(),
            summary.seconds,
            fid.map_or_else(|| "–".into(), |v| format!("{v:.2}")),
            is.map_or_else(|| "–".into(), |v| format!("{v:.2}")),
        );
    }
    println!("diem-cifar: report: {}", summary.report.display());
    Ok(())
}

fn synth_cmd(args: &SynthArgs) -> Result<()> {
    let spec = SyntheticSpec { train_per_file: args.train_per_file, test: args.test, seed: args.seed };
    let files = write_synthetic(&args.out, &args.out, &spec)?;
    println!("diem-cifar: {} and {}", files.folder.display(), files.archive.display());
    Ok(())
}

fn main() -> Result<()> {
    // Before any libtorch call: libgomp's wait policy (a re-execution) and DIEM_THREADS.
    diem_models::init_process_threads();
    let start = Instant::now();
    let cli = Cli::parse();
    match &cli.command {
        Command::Prepare(a) => prepare_cmd(a)?,
        Command::Reproduce(a) => reproduce_cmd(a)?,
        Command::Synth(a) => synth_cmd(a)?,
    }
    eprintln!("diem-cifar: done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
