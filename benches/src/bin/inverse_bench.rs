//! The FFHQ-256 linear-inverse-problem benchmark (docs/method.md §9d, Table 4 and the cost table of §11.2–11.3).
//! Usually run through `cargo xtask posterior-bench ...`; see `diem_benches::inverse` for the inputs, the
//! export of the DPS ADM prior and the output files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use diem_benches::inverse::memory::rss_now_and_peak;
use diem_benches::inverse::{
    gpu_memory_mib, load_images, run_benchmark, sample_batch, write_outputs, BenchPrior, InverseConfig,
    MemoryReport, Method, Record, Task,
};
use diem_metrics::Lpips;
use indicatif::{ProgressBar, ProgressStyle};
use tch::Device;

/// Posterior sampling on four linear inverse problems (box/random inpainting, motion deblur, 4× SR).
#[derive(Parser, Debug)]
struct Args {
    /// A diem checkpoint folder (config.json + weights.safetensors) or a VP prior folder (model.pt + prior.json).
    #[arg(long)]
    prior: PathBuf,
    /// A folder of PNG/JPEG images (the first --count, sorted by name, are used).
    #[arg(long)]
    images: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "runs/posterior-bench")]
    out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Comma-separated tasks: box, random, motion, sr4.
    #[arg(long, value_delimiter = ',', default_value = "box,random,motion,sr4")]
    tasks: Vec<String>,
    /// Comma-separated methods: mmpsN, dps, pgdm, tmpd, diffpir.
    #[arg(long, value_delimiter = ',', default_value = "mmps1,mmps3,mmps5,dps,pgdm,tmpd,diffpir")]
    methods: Vec<String>,
    /// Comma-separated sampler steps.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    steps: Vec<usize>,
    /// TorchScript LPIPS (AlexNet) network; without it LPIPS is not reported.
    #[arg(long)]
    lpips: Option<PathBuf>,
    /// Seed of the measurements and the sampler noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side (256 in the paper; smaller sizes scale the task geometry).
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Images per sampler call (1 in the protocol).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Images shown per task grid.
    #[arg(long, default_value_t = 4)]
    grid: usize,
    /// For a diem checkpoint: the prior's data scale relative to the images' [−1, 1] (2 for diem's CIFAR and
    /// MRI priors, trained on [−2, 2]).
    #[arg(long, default_value_t = 1.0)]
    prior_scale: f64,
    /// Skip the per-method memory measurement (child processes).
    #[arg(long)]
    no_memory: bool,
    /// Internal: run one method once (first image) and print a MemoryReport JSON line.
    #[arg(long, hide = true)]
    single: bool,
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        Device::Cpu => "cpu".into(),
    }
}

fn config_of(args: &Args) -> Result<InverseConfig> {
    let tasks = args.tasks.iter().map(|t| Task::parse(t.trim())).collect::<Result<Vec<_>, _>>()?;
    let methods = args.methods.iter().map(|m| Method::parse(m.trim())).collect::<Result<Vec<_>, _>>()?;
    if args.steps.contains(&0) {
        bail!("--steps: every value must be ≥ 1");
    }
    Ok(InverseConfig {
        tasks,
        methods,
        steps: args.steps.clone(),
        seed: args.seed,
        batch: args.batch,
        grid_images: args.grid,
    })
}

/// `--single`: the first task, the first method and the smallest T on the first image; prints one JSON line.
fn single(args: &Args, config: &InverseConfig, device: Device) -> Result<()> {
    let prior = BenchPrior::load_scaled(&args.prior, device, args.prior_scale)?;
    let (x, _) = load_images(&args.images, 1, args.size)?;
    let x = x.to_device(device).to_kind(prior.kind);
    let (task, method) = (config.tasks[0], config.methods[0]);
    let steps = config.steps.iter().copied().min().unwrap_or(1);
    let obs = task.measure(&x, config.seed)?;
    let plan = prior.plan(steps)?;
    let (base, _) = rss_now_and_peak();
    let _sample = sample_batch(&prior, &plan, method, &obs, config.seed)?;
    let (_, peak) = rss_now_and_peak();
    let gpu = if device.is_cuda() { gpu_memory_mib(std::process::id()) } else { None };
    let report = MemoryReport {
        method: method.name(),
        task: task.name().into(),
        steps,
        base_rss_mib: base,
        peak_rss_mib: peak,
        gpu_mib: gpu,
        device: device_name(device),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs `method` in a child process (`--single`) and parses its report.
fn measure_memory(args: &Args, method: Method, task: Task, steps: usize) -> Result<MemoryReport> {
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let out = std::process::Command::new(exe)
        .arg("--single")
        .args(["--prior".as_ref(), args.prior.as_os_str()])
        .args(["--images".as_ref(), args.images.as_os_str()])
        .args(["--size", &args.size.to_string(), "--seed", &args.seed.to_string()])
        .args(["--prior-scale", &args.prior_scale.to_string()])
        .args(["--tasks", task.name(), "--methods", &method.name(), "--steps", &steps.to_string()])
        .output()
        .context("starting the --single child")?;
    if !out.status.success() {
        bail!("child for {} failed: {}", method.name(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("parsing the child's report {line:?}"))
}

fn open_log(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = config_of(&args)?;
    let device = diem_models::device_from_env().context("choosing the device")?;
    if args.single {
        return single(&args, &config, device);
    }
    let start = Instant::now();
    let prior = BenchPrior::load_scaled(&args.prior, device, args.prior_scale)?;
    let (images, names) = load_images(&args.images, args.count, args.size)?;
    let images = images.to_device(device);
    let lpips = match &args.lpips {
        Some(p) => Some(Lpips::load(p, device).with_context(|| format!("--lpips {}", p.display()))?),
        None => None,
    };
    eprintln!(
        "inverse_bench: {} | {} images {}² | tasks {:?} | methods {:?} | steps {:?} | device {}",
        prior.description,
        names.len(),
        args.size,
        args.tasks,
        args.methods,
        args.steps,
        device_name(device)
    );
    let total = (names.len() * config.tasks.len() * config.methods.len() * config.steps.len()) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let log_path = args.out.join("log.jsonl");
    let mut log = open_log(&log_path)?;
    let mut log_error = None;
    let outcome = run_benchmark(&config, &prior, &images, &names, lpips.as_ref(), &mut |r: &Record| {
        bar.inc(1);
        bar.set_message(format!("{} {} T={} PSNR {:.2}", r.task.name(), r.method, r.steps, r.psnr));
        let line = serde_json::to_string(r).map_err(std::io::Error::from);
        if let Err(e) = line.and_then(|l| writeln!(log, "{l}")).and_then(|()| log.flush()) {
            log_error.get_or_insert(e);
        }
    })?;
    bar.finish_and_clear();
    if let Some(e) = log_error {
        eprintln!("warning: writing {} failed: {e}", log_path.display());
    }
    let mut memory = Vec::new();
    if !args.no_memory {
        let steps = config.steps.iter().copied().min().unwrap_or(1);
        for &method in &config.methods {
            match measure_memory(&args, method, config.tasks[0], steps) {
                Ok(r) => memory.push(r),
                Err(e) => eprintln!("warning: memory of {}: {e:#}", method.name()),
            }
        }
    }
    let meta = serde_json::json!({
        "prior": prior.description,
        "device": device_name(device),
        "images_dir": args.images.display().to_string(),
        "image_names": names,
        "lpips": args.lpips.as_ref().map(|p| p.display().to_string()),
        "seconds": start.elapsed().as_secs_f64(),
    });
    let written = write_outputs(&args.out, &config, &outcome, &memory, meta)?;
    println!("inverse_bench: {} records in {:.1} s", outcome.records.len(), start.elapsed().as_secs_f64());
    let table = std::fs::read_to_string(args.out.join("table.md")).unwrap_or_default();
    if let Some(measured) = table.split("\n## ").next() {
        println!("{measured}");
    }
    for p in written.iter().chain(std::iter::once(&log_path)) {
        println!("wrote {}", p.display());
    }
    Ok(())
}
