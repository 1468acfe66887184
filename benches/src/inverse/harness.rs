//! The benchmark loop: every task × steps × method × image batch, with metrics and costs (docs/method.md §9d,
//! §11.2–11.3).

use diem_metrics::{psnr, ssim, Lpips};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::methods::{sample_batch, Method};
use super::prior::BenchPrior;
use super::tasks::Task;
use crate::error::{BenchError, Result};

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InverseConfig {
    /// Tasks, in column order.
    pub tasks: Vec<Task>,
    /// Methods, in row order.
    pub methods: Vec<Method>,
    /// Sampler steps T.
    pub steps: Vec<usize>,
    /// Seed of the measurements (operators and noise) and of the sampler noise (`seed + first image index`).
    pub seed: u64,
    /// Images per sampler call (1 in the protocol).
    pub batch: usize,
    /// Images shown in each task's grid.
    pub grid_images: usize,
}

impl Default for InverseConfig {
    /// The paper's protocol: four tasks, seven methods, T ∈ {10, 100, 1000}, seed 0, batch 1.
    fn default() -> Self {
        Self {
            tasks: Task::ALL.to_vec(),
            methods: Method::TABLE.to_vec(),
            steps: vec![10, 100, 1000],
            seed: 0,
            batch: 1,
            grid_images: 4,
        }
    }
}

/// The metrics of one posterior sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The image's file name.
    pub image: String,
    /// Its index in the sorted folder.
    pub index: usize,
    /// The task.
    pub task: Task,
    /// The method's name.
    pub method: String,
    /// Steps T.
    pub steps: usize,
    /// PSNR in dB (data range 1).
    pub psnr: f64,
    /// SSIM (11×11 Gaussian window, σ = 1.5).
    pub ssim: f64,
    /// LPIPS, when a network was given.
    pub lpips: Option<f64>,
    /// Wall-clock seconds of the sampler call divided by the images in it.
    pub seconds: f64,
    /// Prior forwards per step of the call (the VE final denoise excluded).
    pub forwards_per_step: f64,
    /// Network VJPs per step of the call (the VE final denoise excluded).
    pub vjps_per_step: f64,
}

/// The samples shown in one task's image grid.
#[derive(Debug)]
pub struct TaskGrid {
    /// The task.
    pub task: Task,
    /// Clean images `[G, 3, S, S]` in `[−1, 1]`.
    pub truth: Tensor,
    /// What the observation looks like ([`Task::display`]), `[G, 3, S, S]`.
    pub observation: Tensor,
    /// `(method label, samples [G, 3, S, S])` at the largest T.
    pub samples: Vec<(String, Tensor)>,
}

/// Everything the loop produced.
#[derive(Debug)]
pub struct Outcome {
    /// One record per image × task × method × steps.
    pub records: Vec<Record>,
    /// One grid per task.
    pub grids: Vec<TaskGrid>,
}

/// `clip((x + 1)/2, 0, 1)` (docs/method.md §9d "Metrics").
pub fn to_unit(x: &Tensor) -> Tensor {
    ((x.to_kind(Kind::Double) + 1.0) / 2.0).clamp(0.0, 1.0)
}

/// Per-image PSNR, SSIM and (when measured) LPIPS.
pub type ImageMetrics = (Vec<f64>, Vec<f64>, Option<Vec<f64>>);

/// PSNR, SSIM and (optionally) LPIPS of the samples `x` against `truth`, both `[N, 3, S, S]` in `[−1, 1]`.
///
/// # Errors
/// Metric errors (shapes, LPIPS network).
pub fn image_metrics(x: &Tensor, truth: &Tensor, lpips: Option<&Lpips>) -> Result<ImageMetrics> {
    let (u, v) = (to_unit(x), to_unit(truth));
    let p = Vec::<f64>::try_from(psnr(&u, &v, 1.0)?)?;
    let s = Vec::<f64>::try_from(ssim(&u, &v, 1.0)?)?;
    let l = match lpips {
        Some(net) => {
            // 2 clip((x + 1)/2, 0, 1) − 1, the metric image mapped back to [−1, 1], as f32.
            let (a, b) = ((u * 2.0 - 1.0).to_kind(Kind::Float), (v * 2.0 - 1.0).to_kind(Kind::Float));
            Some(Vec::<f64>::try_from(net.distance(&a, &b)?.to_kind(Kind::Double))?)
        }
        None => None,
    };
    Ok((p, s, l))
}

/// Runs the benchmark on the clean images `images : [N, 3, S, S]` (in `[−1, 1]`, on the prior's device) named
/// `names`, calling `on_record` after each record (logs, progress).
///
/// # Errors
/// Configuration errors (empty lists, zero batch), measurement, sampling and metric errors.
pub fn run_benchmark(
    config: &InverseConfig,
    prior: &BenchPrior,
    images: &Tensor,
    names: &[String],
    lpips: Option<&Lpips>,
    on_record: &mut dyn FnMut(&Record),
) -> Result<Outcome> {
    if config.tasks.is_empty() || config.methods.is_empty() || config.steps.is_empty() || config.batch == 0 {
        return Err(BenchError::config("benchmark", "tasks, methods and steps must be non-empty, batch ≥ 1"));
    }
    let n = images.size()[0];
    if names.len() != n as usize {
        return Err(BenchError::config("images", format!("{n} images but {} names", names.len())));
    }
    let images = images.to_kind(prior.kind);
    let max_steps = config.steps.iter().copied().max().unwrap_or(1);
    let g = (config.grid_images as i64).clamp(1, n);
    let mut records = Vec::new();
    let mut grids = Vec::new();
    for &task in &config.tasks {
        let obs = task.measure(&images, config.seed)?;
        let mut grid = TaskGrid {
            task,
            truth: images.narrow(0, 0, g).to_device(tch::Device::Cpu),
            observation: task.display(&obs.narrow(0, g)).to_device(tch::Device::Cpu),
            samples: Vec::new(),
        };
        for &steps in &config.steps {
            let plan = prior.plan(steps)?;
            for &method in &config.methods {
                let mut shown = Vec::new();
                let mut start = 0;
                while start < n {
                    let len = (config.batch as i64).min(n - start);
                    let sub = obs.narrow(start, len);
                    let seed = config.seed.wrapping_add(start as u64);
                    let (x, cost) = sample_batch(prior, &plan, method, &sub, seed)?;
                    let truth = images.narrow(0, start, len);
                    let (p, s, l) = image_metrics(&x, &truth, lpips)?;
                    for k in 0..len as usize {
                        let index = start as usize + k;
                        let record = Record {
                            image: names[index].clone(),
                            index,
                            task,
                            method: method.name(),
                            steps,
                            psnr: p[k],
                            ssim: s[k],
                            lpips: l.as_ref().map(|l| l[k]),
                            seconds: cost.seconds / len as f64,
                            forwards_per_step: cost.forwards_per_step(),
                            vjps_per_step: cost.vjps_per_step(),
                        };
                        on_record(&record);
                        records.push(record);
                    }
                    if steps == max_steps && start < g {
                        shown.push(x.narrow(0, 0, len.min(g - start)).to_device(tch::Device::Cpu));
                    }
                    start += len;
                }
                if !shown.is_empty() {
                    grid.samples.push((format!("{} T={steps}", method.label()), Tensor::cat(&shown, 0)));
                }
            }
        }
        grids.push(grid);
    }
    Ok(Outcome { records, grids })
}
