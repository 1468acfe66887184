//! The run's `report.md`: settings, the per-lap table (loss, times, FID/IS) and the paper's Table 1 numbers
//! for comparison (docs/method.md §11.1).

use std::fmt::Write as _;
use std::path::Path;

use diem_em::{Covariance, PosteriorMethod};
use diem_models::{LrSchedule, NetworkConfig};
use serde_json::Value;

use crate::config::CifarConfig;
use crate::error::Result;
use crate::observer::{GAUSSIAN_GRID_FILE, POSTERIOR_GRID_FILE, PRIOR_GRID_FILE};

/// The report's file name in the run directory.
pub const REPORT_FILE: &str = "report.md";

/// One row of the paper's Table 1 (docs/method.md §11.1): lap-31 FID ↓ / IS ↑ with 50k samples against the
/// CIFAR-10 training set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperRow {
    /// The method.
    pub method: &'static str,
    /// The corruption rate ρ.
    pub rho: f64,
    /// FID.
    pub fid: f64,
    /// Inception Score.
    pub is: f64,
}

/// The paper's Table 1 (docs/method.md §11.1).
pub const PAPER_TABLE: [PaperRow; 8] = [
    PaperRow { method: "AmbientDiffusion", rho: 0.20, fid: 11.70, is: 7.97 },
    PaperRow { method: "AmbientDiffusion", rho: 0.40, fid: 18.85, is: 7.45 },
    PaperRow { method: "AmbientDiffusion", rho: 0.60, fid: 28.88, is: 6.88 },
    PaperRow { method: "DiEM w/ Tweedie (MMPS)", rho: 0.25, fid: 5.88, is: 8.83 },
    PaperRow { method: "DiEM w/ Tweedie (MMPS)", rho: 0.50, fid: 6.76, is: 8.75 },
    PaperRow { method: "DiEM w/ Tweedie (MMPS)", rho: 0.75, fid: 13.18, is: 8.14 },
    PaperRow { method: "DiEM w/ (I + Σ_t^{-1})^{-1} (`ones`)", rho: 0.75, fid: 39.94, is: 7.69 },
    PaperRow { method: "DiEM w/ Σ_t (`cov_t`)", rho: 0.75, fid: 118.69, is: 4.23 },
];

/// The Table 1 rows of DiEM at rate `rho` (empty when the paper has none).
pub fn paper_rows(rho: f64) -> Vec<PaperRow> {
    PAPER_TABLE
        .iter()
        .filter(|r| r.method.starts_with("DiEM") && (r.rho - rho).abs() < 1e-9)
        .copied()
        .collect()
}

fn num(line: &Value, key: &str) -> Option<f64> {
    line.get(key).and_then(Value::as_f64)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn settings(config: &CifarConfig, s: &mut String) {
    let e = &config.em;
    let t = &e.mstep;
    let network = match &e.network {
        NetworkConfig::Unet(u) => u.to_string(),
        other => format!("{other:?}"),
    };
    let lr = match t.lr.schedule {
        LrSchedule::Constant => format!("constant {:e}", t.lr.init),
        LrSchedule::Linear { end } => format!("{:e} → {end:e} linear", t.lr.init),
        other => format!("{:e}, {other:?}", t.lr.init),
    };
    let sampler = e.estep.sampler.to_string();
    let posterior = match &e.estep.posterior {
        PosteriorMethod::Mmps(m) => {
            let covariance = match m.covariance {
                Covariance::Tweedie => "the Tweedie covariance".to_string(),
                other => format!("the {other:?} heuristic"),
            };
            format!(
                "MMPS with {covariance}, {} {} iteration(s)",
                m.solver.method.label(),
                m.solver.iterations
            )
        }
        other => other.to_string(),
    };
    let a = &t.augment;
    let images = config.images.map_or_else(|| "all".to_string(), |n| n.to_string());
    let data = match &config.synthetic {
        Some(sy) => format!(
            "synthetic CIFAR-format set ({} training images, seed {}), {images} used",
            5 * sy.train_per_file,
            sy.seed
        ),
        None => format!("CIFAR-10 training images, {images} used"),
    };
    let _ = writeln!(s, "| setting | value |\n| --- | --- |");
    let _ = writeln!(
        s,
        "| data | {data}; ρ = {}, data seed {}, run seed {} |",
        config.rho, config.data_seed, e.seed
    );
    let _ = writeln!(s, "| laps | {} |", e.laps);
    let _ = writeln!(s, "| network | {network} |");
    let _ = writeln!(
        s,
        "| M-step | {} steps, batch {}, Adam lr {lr}, clip {}, EMA {}, augmentation flip {} / hue ±{} / saturation ±{} |",
        t.steps,
        t.batch_size,
        fmt(t.clip_norm, 1),
        t.ema_decay.map_or_else(|| "none".into(), |d| d.to_string()),
        a.hflip,
        a.hue,
        a.saturation
    );
    let _ = writeln!(s, "| E-step | {sampler}; {posterior}; from μ_x + σ(1) z, σ(1) = {} |", t.schedule.b);
    if let Some(r) = &e.refit {
        let _ =
            writeln!(s, "| refit | PPCA of μ_x, rank {} on the first {} E-step samples |", r.rank, r.samples);
    }
    let g = &e.gaussian;
    let _ = writeln!(
        s,
        "| Gaussian init | rank {}, {} EM iterations, DDIM {} steps, {} pairs |",
        g.rank,
        g.iterations,
        g.steps,
        g.max_pairs.map_or_else(|| "all".to_string(), |m| format!("first {m}"))
    );
    let v = &config.eval;
    let _ = writeln!(
        s,
        "| evaluation | {} DDIM-{} prior samples for FID/IS ({} IS splits), every {} lap(s) |\n",
        v.samples, v.prior_steps, v.splits, v.every
    );
}

/// The markdown report for `config` and the metrics lines so far (one JSON object per lap, as in
/// `metrics.jsonl`).
pub fn report_markdown(config: &CifarConfig, lines: &[Value], inception: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Corrupted CIFAR-10, ρ = {} ({})\n", config.rho, config.preset);
    let _ = writeln!(
        s,
        "docs/method.md §9b: DiEM learns a diffusion prior from CIFAR-10 training images with a fraction ρ of their \
         pixels deleted\n(the mask is shared by the 3 channels) and noise 1e-3 on every entry.\n"
    );
    settings(config, &mut s);
    let _ = writeln!(
        s,
        "| lap | loss (mean ± std) | validation loss (last / min) | E-step s | M-step s | eval s | lap s | residual rms | FID ↓ | IS ↑ |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for l in lines {
        let lap = l.get("lap").and_then(Value::as_u64).unwrap_or(0);
        let loss = match (num(l, "loss_mean"), num(l, "loss_std")) {
            (Some(m), Some(sd)) => format!("{m:.4} ± {sd:.4}"),
            (Some(m), None) => format!("{m:.4}"),
            _ => "–".into(),
        };
        let is = match (num(l, "is_mean"), num(l, "is_std")) {
            (Some(m), Some(sd)) => format!("{m:.2} ± {sd:.2}"),
            (Some(m), None) => format!("{m:.2}"),
            _ => "–".into(),
        };
        let val = match (num(l, "val_loss_last"), num(l, "val_loss_min")) {
            (Some(last), Some(min)) => format!("{last:.4} / {min:.4}"),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {lap} | {loss} | {val} | {} | {} | {} | {} | {} | {} | {is} |",
            fmt(num(l, "estep_seconds"), 1),
            fmt(num(l, "mstep_seconds"), 1),
            fmt(num(l, "eval_seconds"), 1),
            fmt(num(l, "lap_seconds"), 1),
            fmt(num(l, "obs_residual_rms"), 4),
            fmt(num(l, "fid"), 2),
        );
    }
    let total: f64 = lines.iter().filter_map(|l| num(l, "lap_seconds")).sum();
    let _ = writeln!(s, "\nTotal lap time: {total:.1} s (the Gaussian initialization excluded).\n");
    match inception {
        Some(path) => {
            let _ =
                writeln!(s, "FID/IS use the Inception network `{path}` against the training images used.");
        }
        None => {
            let _ = writeln!(
                s,
                "FID/IS were not computed: pass `--inception PATH` (a TorchScript Inception-v3)."
            );
        }
    }
    let rows = paper_rows(config.rho);
    let _ = writeln!(s, "\n## The paper's Table 1 at ρ = {} (lap 31, 50k samples)\n", config.rho);
    if rows.is_empty() {
        let _ = writeln!(s, "The paper reports DiEM at ρ ∈ {{0.25, 0.5, 0.75}} only.");
    } else {
        let _ = writeln!(s, "| method | FID ↓ | IS ↑ |\n| --- | --- | --- |");
        for r in rows {
            let _ = writeln!(s, "| {} | {:.2} | {:.2} |", r.method, r.fid, r.is);
        }
    }
    if config.preset != "paper" {
        let _ = writeln!(
            s,
            "\nThis run uses the `{}` preset: its FID/IS are not comparable with the paper's (fewer laps, a smaller \
             network, fewer samples; FID from fewer samples is biased upward, and a substitute Inception network \
             changes the scale).",
            config.preset
        );
    }
    let _ = writeln!(s, "\n## Samples\n\n- Gaussian initialization: ![Gaussian prior]({GAUSSIAN_GRID_FILE})");
    for l in lines {
        let lap = l.get("lap").and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            s,
            "- lap {lap}: prior ![prior](lap-{lap:03}/{PRIOR_GRID_FILE}), truth / observation / posterior \
             ![posterior](lap-{lap:03}/{POSTERIOR_GRID_FILE})"
        );
    }
    s
}

/// Writes [`report_markdown`] to `dir/report.md`, atomically.
///
/// # Errors
/// IO errors naming the file.
pub fn write_report(
    dir: &Path,
    config: &CifarConfig,
    lines: &[Value],
    inception: Option<&str>,
) -> Result<()> {
    let text = report_markdown(config, lines, inception);
    Ok(diem_em::io::write_atomic(&dir.join(REPORT_FILE), text.as_bytes())?)
}
