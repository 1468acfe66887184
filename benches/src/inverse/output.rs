//! The files of a benchmark run: `results.csv`, `summary.json`, `table.md`, `cost.md`, `grid-<task>.png`
//! (see the [module docs](super)). Every file is written atomically.

use std::path::{Path, PathBuf};

use diem_plot::{image_grid, Image};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::harness::{to_unit, InverseConfig, Outcome, Record};
use super::memory::MemoryReport;
use super::methods::Method;
use super::tasks::Task;
use crate::error::{BenchError, Result};
use crate::stats::{write_atomic, write_csv};

/// Table 4 of the paper (docs/method.md §11.2): `(row label, steps, [box, random, motion, sr] as [LPIPS, PSNR, SSIM])`.
pub const PAPER_TABLE: [(&str, usize, [[f64; 3]; 4]); 21] = [
    ("DiffPIR", 10, [[0.33, 19.17, 0.50], [0.78, 10.97, 0.32], [0.24, 24.54, 0.72], [0.20, 26.63, 0.78]]),
    ("DiffPIR", 100, [[0.30, 18.15, 0.54], [0.68, 10.26, 0.25], [0.19, 23.97, 0.70], [0.17, 25.24, 0.73]]),
    ("DiffPIR", 1000, [[0.33, 17.39, 0.49], [0.74, 9.51, 0.21], [0.17, 23.55, 0.67], [0.15, 24.72, 0.70]]),
    ("DPS", 10, [[0.64, 10.41, 0.34], [0.58, 12.68, 0.43], [0.75, 8.63, 0.27], [0.58, 12.01, 0.41]]),
    ("DPS", 100, [[0.38, 16.82, 0.50], [0.39, 16.66, 0.49], [0.29, 19.75, 0.57], [0.35, 18.29, 0.54]]),
    ("DPS", 1000, [[0.22, 21.01, 0.64], [0.19, 21.90, 0.66], [0.18, 22.91, 0.66], [0.16, 25.02, 0.72]]),
    ("GDM", 10, [[0.40, 18.94, 0.61], [0.59, 11.28, 0.40], [0.25, 25.83, 0.76], [0.25, 26.42, 0.77]]),
    ("GDM", 100, [[0.44, 18.23, 0.47], [0.39, 17.03, 0.48], [0.25, 22.37, 0.61], [0.15, 25.63, 0.71]]),
    ("GDM", 1000, [[0.81, 14.80, 0.31], [0.14, 22.32, 0.69], [1.06, 13.12, 0.21], [0.64, 18.41, 0.29]]),
    ("TMPD", 10, [[0.36, 19.90, 0.64], [0.59, 11.08, 0.40], [0.27, 25.28, 0.74], [0.26, 26.07, 0.76]]),
    ("TMPD", 100, [[0.27, 19.86, 0.64], [0.58, 10.73, 0.31], [0.17, 26.22, 0.76], [0.17, 26.79, 0.77]]),
    ("TMPD", 1000, [[0.25, 19.53, 0.62], [0.68, 9.98, 0.25], [0.14, 25.91, 0.74], [0.14, 26.53, 0.76]]),
    ("MMPS (1)", 10, [[0.27, 21.19, 0.68], [0.26, 22.41, 0.69], [0.33, 22.12, 0.66], [0.24, 26.94, 0.78]]),
    ("MMPS (1)", 100, [[0.20, 21.19, 0.67], [0.18, 22.18, 0.69], [0.20, 23.92, 0.71], [0.15, 27.32, 0.79]]),
    ("MMPS (1)", 1000, [[0.19, 20.77, 0.64], [0.18, 21.94, 0.66], [0.16, 23.83, 0.69], [0.12, 26.92, 0.77]]),
    ("MMPS (3)", 10, [[0.26, 21.55, 0.68], [0.21, 23.58, 0.74], [0.24, 25.33, 0.75], [0.19, 27.94, 0.81]]),
    ("MMPS (3)", 100, [[0.20, 21.29, 0.67], [0.15, 22.76, 0.71], [0.15, 26.16, 0.76], [0.13, 27.18, 0.78]]),
    ("MMPS (3)", 1000, [[0.19, 21.01, 0.64], [0.15, 22.45, 0.68], [0.12, 25.73, 0.74], [0.11, 26.69, 0.76]]),
    ("MMPS (5)", 10, [[0.23, 21.73, 0.69], [0.20, 23.72, 0.75], [0.20, 26.70, 0.78], [0.18, 28.02, 0.81]]),
    ("MMPS (5)", 100, [[0.20, 21.30, 0.67], [0.15, 22.82, 0.72], [0.13, 26.70, 0.77], [0.13, 27.12, 0.78]]),
    ("MMPS (5)", 1000, [[0.20, 20.98, 0.64], [0.14, 22.52, 0.69], [0.11, 26.18, 0.75], [0.11, 26.60, 0.76]]),
];

/// The paper's cost table (docs/method.md §11.3): `(label, VJPs per step, time (s per 1000 steps = ms per step),
/// peak GPU memory GB)`.
pub const PAPER_COST: [(&str, usize, f64, f64); 7] = [
    ("DiffPIR", 0, 30.2, 0.66),
    ("DPS", 1, 40.5, 2.29),
    ("GDM", 1, 47.6, 2.30),
    ("TMPD", 2, 62.2, 2.52),
    ("MMPS (1)", 2, 58.0, 2.52),
    ("MMPS (3)", 4, 90.1, 2.52),
    ("MMPS (5)", 6, 122.1, 2.52),
];

/// Mean and (population) standard deviation of one table cell's metric over images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
}

impl MeanStd {
    /// Of `values` (NaN for an empty slice).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Self { mean, std: var.sqrt() }
    }
}

/// One cell of the measured table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    /// The task.
    pub task: Task,
    /// The method's name.
    pub method: String,
    /// Its Table 4 label.
    pub label: String,
    /// Steps T.
    pub steps: usize,
    /// Images.
    pub count: usize,
    /// PSNR (dB).
    pub psnr: MeanStd,
    /// SSIM.
    pub ssim: MeanStd,
    /// LPIPS, when measured.
    pub lpips: Option<MeanStd>,
}

impl CellSummary {
    /// `"LPIPS / PSNR / SSIM"` with two decimals (LPIPS "–" when not measured).
    pub fn cell(&self) -> String {
        let l = self.lpips.map_or("–".to_string(), |l| format!("{:.2}", l.mean));
        format!("{l} / {:.2} / {:.2}", self.psnr.mean, self.ssim.mean)
    }
}

/// The measured costs of one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostSummary {
    /// The method's name.
    pub method: String,
    /// Its label.
    pub label: String,
    /// VJPs per step by docs/method.md §5.8.
    pub expected_vjps_per_step: usize,
    /// VJPs per step counted (mean over runs).
    pub vjps_per_step: f64,
    /// Prior forwards per step counted (mean over runs).
    pub forwards_per_step: f64,
    /// `(T, ms per step per image)`, T ascending.
    pub ms_per_step: Vec<(usize, f64)>,
    /// Peak memory from a `--single` child, when measured.
    pub memory: Option<MemoryReport>,
}

/// The table cells of `records` in the configuration's order (tasks × methods × steps).
pub fn summarize(config: &InverseConfig, records: &[Record]) -> Vec<CellSummary> {
    let mut cells = Vec::new();
    for &task in &config.tasks {
        for &method in &config.methods {
            for &steps in &config.steps {
                let rows: Vec<&Record> = records
                    .iter()
                    .filter(|r| r.task == task && r.method == method.name() && r.steps == steps)
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let get =
                    |f: &dyn Fn(&Record) -> f64| MeanStd::of(&rows.iter().map(|r| f(r)).collect::<Vec<_>>());
                let lpips =
                    rows.iter().map(|r| r.lpips).collect::<Option<Vec<f64>>>().map(|v| MeanStd::of(&v));
                cells.push(CellSummary {
                    task,
                    method: method.name(),
                    label: method.label(),
                    steps,
                    count: rows.len(),
                    psnr: get(&|r| r.psnr),
                    ssim: get(&|r| r.ssim),
                    lpips,
                });
            }
        }
    }
    cells
}

/// The cost summary of each method (memory from `memory`, matched by name).
pub fn summarize_costs(
    config: &InverseConfig,
    records: &[Record],
    memory: &[MemoryReport],
) -> Vec<CostSummary> {
    let mut steps = config.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    config
        .methods
        .iter()
        .map(|&m| {
            let rows: Vec<&Record> = records.iter().filter(|r| r.method == m.name()).collect();
            let mean =
                |v: Vec<f64>| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
            let ms_per_step = steps
                .iter()
                .map(|&t| {
                    (
                        t,
                        mean(
                            rows.iter()
                                .filter(|r| r.steps == t)
                                .map(|r| 1e3 * r.seconds / t as f64)
                                .collect(),
                        ),
                    )
                })
                .collect();
            CostSummary {
                method: m.name(),
                label: m.label(),
                expected_vjps_per_step: m.expected_vjps_per_step(),
                vjps_per_step: mean(rows.iter().map(|r| r.vjps_per_step).collect()),
                forwards_per_step: mean(rows.iter().map(|r| r.forwards_per_step).collect()),
                ms_per_step,
                memory: memory.iter().find(|r| r.method == m.name()).cloned(),
            }
        })
        .collect()
}

fn table_header(tasks: &[Task]) -> String {
    let mut s = String::from("| method | steps |");
    for t in tasks {
        s.push_str(&format!(" {} |", t.title()));
    }
    s.push_str("\n| --- | --- |");
    s.push_str(&" --- |".repeat(tasks.len()));
    s.push('\n');
    s
}

/// `table.md`: the measured cells in Table 4's layout, then the paper's table.
pub fn table_markdown(config: &InverseConfig, cells: &[CellSummary], count: usize, size: i64) -> String {
    let mut s = format!(
        "# Linear inverse problems: LPIPS ↓ / PSNR ↑ / SSIM ↑ (means over {count} images of {size}×{size})\n\n"
    );
    s.push_str(&table_header(&config.tasks));
    for &method in &config.methods {
        for &steps in &config.steps {
            s.push_str(&format!("| {} | {steps} |", method.label()));
            for &task in &config.tasks {
                let cell =
                    cells.iter().find(|c| c.task == task && c.method == method.name() && c.steps == steps);
                s.push_str(&format!(" {} |", cell.map_or("n/a".to_string(), CellSummary::cell)));
            }
            s.push('\n');
        }
    }
    s.push_str("\n## The paper's Table 4 (docs/method.md §11.2; FFHQ 256, 100 images, DPS ADM prior)\n\n");
    s.push_str(&table_header(&Task::ALL));
    for (label, steps, values) in PAPER_TABLE {
        s.push_str(&format!("| {label} | {steps} |"));
        for [l, p, q] in values {
            s.push_str(&format!(" {l:.2} / {p:.2} / {q:.2} |"));
        }
        s.push('\n');
    }
    s
}

/// `cost.md`: VJPs per step, ms per step for each T and memory per method, then the paper's table.
pub fn cost_markdown(costs: &[CostSummary], device: &str, batch: usize) -> String {
    let steps: Vec<usize> =
        costs.first().map(|c| c.ms_per_step.iter().map(|p| p.0).collect()).unwrap_or_default();
    let mut s = format!("# Cost per method (device {device}, batch {batch})\n\n");
    s.push_str("| method | VJPs per step (docs/method.md §5.8) | forwards per step |");
    for t in &steps {
        s.push_str(&format!(" ms per step (T = {t}) |"));
    }
    s.push_str(" peak memory |\n| --- | --- | --- |");
    s.push_str(&" --- |".repeat(steps.len() + 1));
    s.push('\n');
    for c in costs {
        s.push_str(&format!(
            "| {} | {:.2} ({}) | {:.2} |",
            c.label, c.vjps_per_step, c.expected_vjps_per_step, c.forwards_per_step
        ));
        for (_, ms) in &c.ms_per_step {
            s.push_str(&format!(" {ms:.1} |"));
        }
        s.push_str(&format!(
            " {} |\n",
            c.memory.as_ref().map_or("not measured".to_string(), MemoryReport::cell)
        ));
    }
    s.push_str(
        "\nMemory: each method runs once more in a child process (`inverse_bench --single`, first task, one image, \
         smallest T). On CUDA the column is the GPU memory nvidia-smi attributes to the child (allocator cache and \
         CUDA context included) when available; otherwise it is the child's peak resident set size (VmHWM, host \
         memory, model and libtorch included) with the increase over its size before sampling in parentheses.\n",
    );
    s.push_str("\n## The paper's cost table (docs/method.md §11.3; FFHQ-256 ADM, one image, GPU)\n\n");
    s.push_str(
        "| method | VJPs per step | ms per step | peak GPU memory (GB) |\n| --- | --- | --- | --- |\n",
    );
    for (label, vjps, ms, gb) in PAPER_COST {
        s.push_str(&format!("| {label} | {vjps} | {ms:.1} | {gb:.2} |\n"));
    }
    s
}

/// The column titles of the image grids: truth, observation, then each method at the largest T.
pub fn grid_columns(outcome: &Outcome) -> Vec<String> {
    let mut cols = vec!["truth".to_string(), "observation".to_string()];
    if let Some(g) = outcome.grids.first() {
        cols.extend(g.samples.iter().map(|(label, _)| label.clone()));
    }
    cols
}

fn to_plot_images(x: &Tensor) -> Result<Vec<Image>> {
    let size = x.size();
    let (h, w) = (size[2] as usize, size[3] as usize);
    (0..size[0])
        .map(|k| {
            let data = Vec::<f32>::try_from(to_unit(&x.get(k)).to_kind(Kind::Float).reshape([-1]))?;
            Ok(Image { channels: 3, height: h, width: w, data })
        })
        .collect()
}

/// Writes every output file into `out` and returns their paths. `meta` (prior, device, sizes, …) is merged
/// into `summary.json`.
///
/// # Errors
/// IO, JSON and drawing errors naming the file.
pub fn write_outputs(
    out: &Path,
    config: &InverseConfig,
    outcome: &Outcome,
    memory: &[MemoryReport],
    meta: serde_json::Value,
) -> Result<Vec<PathBuf>> {
    let count = outcome.records.iter().map(|r| r.index).max().map_or(0, |m| m + 1);
    let size = outcome.grids.first().map_or(0, |g| g.truth.size()[2]);
    let device = meta.get("device").and_then(|d| d.as_str()).unwrap_or("cpu").to_string();
    let mut written = Vec::new();

    let results = out.join("results.csv");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let rows: Vec<Vec<String>> = outcome
        .records
        .iter()
        .map(|r| {
            vec![
                r.image.clone(),
                r.index.to_string(),
                r.task.name().to_string(),
                r.method.clone(),
                r.steps.to_string(),
                format!("{:.6}", r.psnr),
                format!("{:.6}", r.ssim),
                opt(r.lpips),
                format!("{:.6}", r.seconds),
                format!("{:.3}", r.forwards_per_step),
                format!("{:.3}", r.vjps_per_step),
            ]
        })
        .collect();
    let header = [
        "image",
        "index",
        "task",
        "method",
        "steps",
        "psnr",
        "ssim",
        "lpips",
        "seconds",
        "forwards_per_step",
        "vjps_per_step",
    ];
    write_csv(&results, &header, &rows)?;
    written.push(results);

    let cells = summarize(config, &outcome.records);
    let costs = summarize_costs(config, &outcome.records, memory);
    let table = out.join("table.md");
    write_atomic(&table, table_markdown(config, &cells, count, size).as_bytes())?;
    written.push(table);
    let cost = out.join("cost.md");
    write_atomic(&cost, cost_markdown(&costs, &device, config.batch).as_bytes())?;
    written.push(cost);

    let summary = out.join("summary.json");
    let mut value = serde_json::json!({
        "config": config,
        "images": count,
        "size": size,
        "cells": cells,
        "costs": costs,
        "memory_note": "child-process peak RSS (VmHWM, host) unless gpu_mib is set (nvidia-smi, CUDA)",
        "grid_columns": grid_columns(outcome),
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (value.as_object_mut(), meta) {
        obj.extend(extra);
    }
    let text = serde_json::to_string_pretty(&value)
        .map_err(|source| BenchError::Json { path: summary.clone(), source })?;
    write_atomic(&summary, text.as_bytes())?;
    written.push(summary);

    for grid in &outcome.grids {
        let g = grid.truth.size()[0];
        let mut images = Vec::new();
        let truth = to_plot_images(&grid.truth)?;
        let obs = to_plot_images(&grid.observation)?;
        let samples: Vec<Vec<Image>> =
            grid.samples.iter().map(|(_, x)| to_plot_images(x)).collect::<Result<_>>()?;
        for k in 0..g as usize {
            images.push(truth[k].clone());
            images.push(obs[k].clone());
            for s in &samples {
                images.push(s[k].clone());
            }
        }
        let cols = 2 + samples.len();
        let scale = (128 / size.max(1)).max(1) as u32;
        let path = out.join(format!("grid-{}.png", grid.task.name()));
        image_grid(&images, cols, scale, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// The method names of a configuration, for messages.
pub fn method_names(methods: &[Method]) -> Vec<String> {
    methods.iter().map(|m| m.name()).collect()
}
