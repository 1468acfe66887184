//! `report.md` of a fastMRI run: the settings, what differs from the paper, and one row per lap with the
//! loss, timings, the PSNR/SSIM diagnostic and links to the figures.

use std::fmt::Write as _;
use std::path::Path;

use diem_em::{Covariance, PosteriorMethod};
use diem_models::{LrSchedule, NetworkConfig};
use serde_json::Value;

use crate::config::FastMriConfig;
use crate::error::Result;
use crate::observer::{r_tag, GAUSSIAN_FIGURE, POSTERIOR_FIGURE, PRIOR_FIGURE, ZERO_FILLED_FIGURE};

/// The report's file name in the run directory.
pub const REPORT_FILE: &str = "report.md";

fn num(line: &Value, key: &str) -> Option<f64> {
    line.get(key).and_then(Value::as_f64)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// The report's markdown for `lines` (the run's `metrics.jsonl` lines, one per lap).
pub fn report_markdown(config: &FastMriConfig, lines: &[Value], notes: &[String]) -> String {
    let e = &config.em;
    let mut s = String::new();
    let _ = writeln!(s, "# Accelerated MRI (fastMRI knee), preset `{}`\n", config.preset);
    let _ = writeln!(
        s,
        "docs/method.md §9c: DiEM learns a prior over knee MR slices from k-space observations with a random column mask \
         at acceleration R = {} and noise σ_y = {:e}, starting from a Gaussian fitted by EM (§7.4).\n",
        config.prepare.acceleration, config.prepare.noise_std
    );
    let _ = writeln!(s, "| setting | value |\n| --- | --- |");
    let network = match &e.network {
        NetworkConfig::Unet(u) => u.to_string(),
        other => format!("{other:?}"),
    };
    let _ = writeln!(s, "| network | {network} |");
    let t = &e.mstep;
    let lr = match t.lr.schedule {
        LrSchedule::Constant => format!("constant {:e}", t.lr.init),
        other => format!("{:e}, {other:?}", t.lr.init),
    };
    let _ = writeln!(
        s,
        "| M-step | {} epochs per lap ({} steps), batch {}, Adam lr {lr}, clip {}, EMA {}, augmentation {:?} |",
        config.epochs_per_lap,
        t.steps,
        t.batch_size,
        fmt(t.clip_norm, 1),
        t.ema_decay.map_or("none".into(), |d| d.to_string()),
        t.augment
    );
    let sampler = e.estep.sampler;
    let posterior = match &e.estep.posterior {
        PosteriorMethod::Mmps(m) => {
            let cov = match m.covariance {
                Covariance::Tweedie => "Tweedie covariance".to_string(),
                other => format!("{other:?} heuristic"),
            };
            format!("MMPS with the {cov} and {} {} iterations", m.solver.method.label(), m.solver.iterations)
        }
        other => other.to_string(),
    };
    let _ = writeln!(
        s,
        "| E-step | {} posterior samples per observation, {sampler}, {posterior} |",
        e.estep.samples_per_observation
    );
    if let Some(r) = e.refit {
        let _ = writeln!(
            s,
            "| μ_x refit | PPCA rank {} on the first {} E-step samples, after every E-step |",
            r.rank, r.samples
        );
    }
    let g = &e.gaussian;
    let _ = writeln!(
        s,
        "| Gaussian init | rank {}, {} EM iterations, DDIM {}, {} {} iterations, {} |",
        g.rank,
        g.iterations,
        g.steps,
        g.solver.method.label(),
        g.solver.iterations,
        match (g.max_pairs, g.stride) {
            (None, 1) => "all pairs".to_string(),
            (None, k) => format!("every {k}th pair"),
            (Some(m), 1) => format!("the first {m} pairs"),
            (Some(m), k) => format!("every {k}th of the first {m} pairs"),
        }
    );
    let _ = writeln!(s, "| laps | {} (seed {}) |\n", e.laps, e.seed);
    let _ = writeln!(
        s,
        "The paper reports no PSNR/SSIM for MRI (its evaluation is qualitative). The PSNR/SSIM below are a \
         diagnostic only: of the mean of {} posterior samples of {} held-out slice(s) against the ground truth \
         (data range 4), next to the zero-filled reconstruction `Aᵀy`.\n",
        config.figures.posterior_samples, config.figures.heldout
    );
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }
    if !notes.is_empty() {
        s.push('\n');
    }
    let tags: Vec<(f64, String)> = config.figures.accelerations.iter().map(|&r| (r, r_tag(r))).collect();
    let mut header =
        "| lap | loss (mean ± std) | validation loss (last / min) | E-step s | M-step s | lap s |"
            .to_string();
    let mut rule = "| --- | --- | --- | --- | --- | --- |".to_string();
    for (r, _) in &tags {
        let _ = write!(header, " R={r}: PSNR / SSIM (zero-filled) |");
        rule.push_str(" --- |");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    for l in lines {
        let lap = l.get("lap").and_then(Value::as_u64).unwrap_or(0);
        let loss = match (num(l, "loss_mean"), num(l, "loss_std")) {
            (Some(m), Some(sd)) => format!("{m:.4} ± {sd:.4}"),
            (m, _) => fmt(m, 4),
        };
        let val = match (num(l, "val_loss_last"), num(l, "val_loss_min")) {
            (Some(last), Some(min)) => format!("{last:.4} / {min:.4}"),
            _ => "–".into(),
        };
        let _ = write!(
            s,
            "| {lap} | {loss} | {val} | {} | {} | {} |",
            fmt(num(l, "estep_seconds"), 1),
            fmt(num(l, "mstep_seconds"), 1),
            fmt(num(l, "lap_seconds"), 1)
        );
        for (_, t) in &tags {
            let _ = write!(
                s,
                " {} / {} ({} / {}) |",
                fmt(num(l, &format!("psnr_{t}")), 2),
                fmt(num(l, &format!("ssim_{t}")), 3),
                fmt(num(l, &format!("psnr_zf_{t}")), 2),
                fmt(num(l, &format!("ssim_zf_{t}")), 3)
            );
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\nFigures (grayscale, `(x + 2)/4`):\n");
    let _ = writeln!(
        s,
        "- held-out ground truth and zero-filled `Aᵀy` at R = {:?}: ![zero-filled]({ZERO_FILLED_FIGURE})",
        config.figures.accelerations
    );
    let _ = writeln!(s, "- Gaussian prior (μ_x, then samples): ![gaussian]({GAUSSIAN_FIGURE})");
    for l in lines {
        let lap = l.get("lap").and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            s,
            "- lap {lap}: prior samples ![prior](lap-{lap:03}/{PRIOR_FIGURE}); posterior rows (per image and R: \
             truth, Aᵀy, samples, mean) ![posterior](lap-{lap:03}/{POSTERIOR_FIGURE})"
        );
    }
    s
}

/// Writes [`REPORT_FILE`] in `dir` atomically.
///
/// # Errors
/// IO errors naming the file.
pub fn write_report(dir: &Path, config: &FastMriConfig, lines: &[Value], notes: &[String]) -> Result<()> {
    let text = report_markdown(config, lines, notes);
    Ok(diem_em::io::write_atomic(&dir.join(REPORT_FILE), text.as_bytes())?)
}
