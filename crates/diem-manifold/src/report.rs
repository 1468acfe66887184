//! Per-lap evaluation of the manifold experiment and its report (docs/method.md §9a): Sinkhorn divergence of prior
//! samples to held-out ground truth, corner plots against the truth, `report.md` and the divergence curve.

use std::fmt::Write as _;
use std::path::Path;

use diem_metrics::Sinkhorn;
use diem_plot::{corner_plot, line_plot, CornerPlot, LinePlot, Series};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::ManifoldConfig;
use crate::data::{filter_inside, to_host, ManifoldData};
use crate::error::{ManifoldError, Result};
use diem_em::config::{Covariance as EmCovariance, PosteriorMethod, SamplerSpec, SolverMethod};
use diem_em::io::write_atomic;
use diem_models::{LrSchedule, NetworkConfig};

/// The filter bound of docs/method.md §8: samples must lie strictly inside `(−3, 3)` in every coordinate.
pub const FILTER_BOUND: f64 = 3.0;

/// The file name of the report inside the run directory.
pub const REPORT_FILE: &str = "report.md";
/// The file name of the divergence curve inside the run directory.
pub const CURVE_FILE: &str = "divergence.png";
/// The file name of the per-lap evaluation records (JSON lines) inside the run directory.
pub const RECORDS_FILE: &str = "manifold.jsonl";

/// One evaluated prior: the initial Gaussian (`lap = −1`) or the model trained in lap `lap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LapRecord {
    /// The lap (−1 for the initial Gaussian prior).
    pub lap: i64,
    /// Mean training loss of the lap's M-step (none for the Gaussian).
    pub loss_mean: Option<f64>,
    /// Standard deviation of the training loss over the lap's logged windows.
    pub loss_std: Option<f64>,
    /// Sinkhorn divergence `S(v)` of the prior's samples (filtered to (−3, 3)) to the ground truth.
    pub sinkhorn: f64,
    /// Sinkhorn divergence of the lap's E-step (posterior) samples, as the reference logs it.
    pub sinkhorn_estep: Option<f64>,
    /// Fraction of the prior samples kept by the filter.
    pub kept: f64,
    /// Seconds spent in the lap's E-step (posterior sampling of every observation).
    pub estep_seconds: f64,
    /// Seconds spent in the lap's M-step (training).
    pub mstep_seconds: f64,
    /// Seconds spent evaluating (prior sampling, Sinkhorn, plots).
    pub eval_seconds: f64,
    /// Wall time since the previous record (the Gaussian: since the run started), everything included.
    pub wall_seconds: f64,
    /// How the lap's E-step samples fit their observations, from the run's `metrics.jsonl` (`None` for the
    /// Gaussian and for runs that did not record it).
    #[serde(default)]
    pub estep: EStepRecord,
}

/// The E-step consistency figures of one lap, read from the `estep_*` fields and `kept_fraction` of
/// `metrics.jsonl` (see [`diem_em::diagnostics::EStepConsistency::to_json`]); every field is optional, so old
/// runs read back with `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EStepRecord {
    /// Fraction of the E-step rows the `(−3, 3)` filter dropped.
    #[serde(default)]
    pub filtered: Option<f64>,
    /// Median residual-to-noise ratio `||y − A x|| / (σ_y √m)`.
    #[serde(default)]
    pub residual_ratio_median: Option<f64>,
    /// Its 99th percentile.
    #[serde(default)]
    pub residual_ratio_p99: Option<f64>,
    /// Its maximum.
    #[serde(default)]
    pub residual_ratio_max: Option<f64>,
    /// Fraction of rows inconsistent with their observation (ratio > 5 or non-finite).
    #[serde(default)]
    pub inconsistent_fraction: Option<f64>,
    /// The largest `|x|` of any E-step sample.
    #[serde(default)]
    pub max_abs: Option<f64>,
    /// MMPS solver fallbacks during the E-step (CG steps replaced under the fallback covariance).
    #[serde(default)]
    pub fallbacks: Option<f64>,
}

impl EStepRecord {
    /// The figures of one `metrics.jsonl` line (or the metrics map of a lap in progress).
    pub fn from_metrics(metrics: &serde_json::Map<String, serde_json::Value>) -> Self {
        let get = |key: &str| metrics.get(key).and_then(serde_json::Value::as_f64);
        Self {
            filtered: get("kept_fraction").map(|k| 1.0 - k),
            residual_ratio_median: get("estep_residual_ratio_median"),
            residual_ratio_p99: get("estep_residual_ratio_p99"),
            residual_ratio_max: get("estep_residual_ratio_max"),
            inconsistent_fraction: get("estep_inconsistent_fraction"),
            max_abs: get("estep_max_abs"),
            fallbacks: get("estep_fallbacks"),
        }
    }

    /// Fills every missing field from `other`.
    pub fn or(self, other: &Self) -> Self {
        Self {
            filtered: self.filtered.or(other.filtered),
            residual_ratio_median: self.residual_ratio_median.or(other.residual_ratio_median),
            residual_ratio_p99: self.residual_ratio_p99.or(other.residual_ratio_p99),
            residual_ratio_max: self.residual_ratio_max.or(other.residual_ratio_max),
            inconsistent_fraction: self.inconsistent_fraction.or(other.inconsistent_fraction),
            max_abs: self.max_abs.or(other.max_abs),
            fallbacks: self.fallbacks.or(other.fallbacks),
        }
    }
}

impl LapRecord {
    /// The lap's label: `gaussian` for lap −1, else the lap number.
    pub fn label(&self) -> String {
        if self.lap < 0 {
            "gaussian".into()
        } else {
            self.lap.to_string()
        }
    }
}

/// Sinkhorn divergences and corner plots against the held-out ground truth.
#[derive(Debug)]
pub struct Evaluator {
    u1: Tensor,
    reference: Vec<f64>,
    dim: usize,
    sinkhorn: Sinkhorn,
    baseline: f64,
}

impl Evaluator {
    /// Prepares the metric of docs/method.md §9a: `u1`, `u2` from `data`, λ, iteration cap and tolerance from
    /// `config.metric`. Computes `OT_λ(u1, u2)` once.
    ///
    /// # Errors
    /// Sinkhorn or copy errors.
    pub fn new(data: &ManifoldData, config: &ManifoldConfig) -> Result<Self> {
        let m = &config.metric;
        let sinkhorn = Sinkhorn { lambda: m.lambda, max_iter: m.max_iter, tol: m.tol, ..Sinkhorn::default() };
        let u1 = data.u1.to_kind(Kind::Double);
        let u2 = data.u2.to_kind(Kind::Double);
        let baseline = sinkhorn.ot(&u1, &u2)?.cost;
        let reference = to_host(&data.u2)?;
        Ok(Self { u1, reference, dim: data.dim() as usize, sinkhorn, baseline })
    }

    /// `OT_λ(u1, u2)`, the two-sample baseline.
    pub fn baseline(&self) -> f64 {
        self.baseline
    }

    /// The divergence `S(v) = max(OT_λ(u1, v) − OT_λ(u1, u2), 1e-6)` of docs/method.md §9a, where v are the rows
    /// of `samples` strictly inside (−3, 3), truncated to as many points as u1. Returns the divergence and
    /// the kept fraction.
    ///
    /// # Errors
    /// [`ManifoldError::Config`] when the filter keeps fewer than 2 samples; Sinkhorn errors.
    pub fn divergence(&self, samples: &Tensor) -> Result<(f64, f64)> {
        let total = samples.size()[0].max(1);
        let kept = filter_inside(samples, FILTER_BOUND);
        let count = kept.size()[0];
        if count < 2 {
            return Err(ManifoldError::config(
                "samples",
                format!("the (−3, 3) filter kept {count} of {total} samples; the metric needs at least 2"),
            ));
        }
        let v = kept.narrow(0, 0, count.min(self.u1.size()[0])).to_kind(Kind::Double);
        let against = self.sinkhorn.ot(&self.u1, &v)?.cost;
        let divergence = (against - self.baseline).max(diem_metrics::DIVERGENCE_FLOOR);
        Ok((divergence, count as f64 / total as f64))
    }

    /// Writes the corner plot of `samples` (blue, below the diagonal) against the ground truth u2 (orange,
    /// above) to `path`, the paper's Figure 3 style.
    ///
    /// # Errors
    /// Plot or copy errors.
    pub fn corner(&self, samples: &Tensor, title: &str, path: &Path) -> Result<()> {
        let host = to_host(samples)?;
        let plot = CornerPlot {
            title: title.into(),
            samples: &host,
            reference: Some(&self.reference),
            dim: self.dim,
            range: (-3.0, 3.0),
            bins: 48,
            cell: 140,
        };
        corner_plot(&plot, path)?;
        Ok(())
    }
}

/// Writes `records` to [`RECORDS_FILE`], the divergence curve to [`CURVE_FILE`] (log y) and the markdown
/// report to [`REPORT_FILE`] in `dir`, each atomically.
///
/// # Errors
/// IO, JSON and plot errors naming the file.
pub fn write_report(
    dir: &Path,
    config: &ManifoldConfig,
    records: &[LapRecord],
    total_seconds: f64,
) -> Result<()> {
    let records = &with_run_metrics(dir, records);
    let mut jsonl = String::new();
    for r in records {
        let line = serde_json::to_string(r)
            .map_err(|source| ManifoldError::Json { path: dir.join(RECORDS_FILE), source })?;
        jsonl.push_str(&line);
        jsonl.push('\n');
    }
    write_atomic(&dir.join(RECORDS_FILE), jsonl.as_bytes())?;
    if !records.is_empty() {
        let x: Vec<f64> = records.iter().map(|r| r.lap as f64).collect();
        let y: Vec<f64> = records.iter().map(|r| r.sinkhorn).collect();
        let mut series = vec![Series::new("prior samples", x, y)];
        let estep: Vec<(f64, f64)> =
            records.iter().filter_map(|r| r.sinkhorn_estep.map(|s| (r.lap as f64, s))).collect();
        if !estep.is_empty() {
            let (ex, ey) = estep.into_iter().unzip();
            series.push(Series::new("E-step samples", ex, ey));
        }
        let plot = LinePlot {
            title: format!("Manifold ({}): Sinkhorn divergence to the ground truth", config.preset),
            x_label: "lap (−1 = Gaussian prior)".into(),
            y_label: "Sinkhorn divergence".into(),
            log_y: true,
            series,
            ..LinePlot::default()
        };
        line_plot(&plot, &dir.join(CURVE_FILE))?;
    }
    let text = report_markdown(config, records, total_seconds);
    Ok(write_atomic(&dir.join(REPORT_FILE), text.as_bytes())?)
}

/// `records` with their E-step figures completed from the run's `metrics.jsonl` (laps whose line has them;
/// unreadable or absent lines leave the records as they are).
fn with_run_metrics(dir: &Path, records: &[LapRecord]) -> Vec<LapRecord> {
    let text = std::fs::read_to_string(dir.join(diem_em::layout::METRICS_FILE)).unwrap_or_default();
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.as_object().cloned())
        .collect();
    records
        .iter()
        .map(|r| {
            let line =
                lines.iter().rev().find(|l| l.get("lap").and_then(serde_json::Value::as_i64) == Some(r.lap));
            match line {
                Some(l) if r.lap >= 0 => {
                    LapRecord { estep: r.estep.clone().or(&EStepRecord::from_metrics(l)), ..r.clone() }
                }
                _ => r.clone(),
            }
        })
        .collect()
}

fn method_name(method: SolverMethod) -> &'static str {
    match method {
        SolverMethod::Cg => "CG",
        SolverMethod::Gmres => "GMRES",
        SolverMethod::Bicgstab => "BiCGSTAB",
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn fmt_sci(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.3e}"))
}

/// The markdown report: settings, the per-lap table and the curve.
pub fn report_markdown(config: &ManifoldConfig, records: &[LapRecord], total_seconds: f64) -> String {
    let (d, e, m) = (&config.data, &config.em, &config.metric);
    let posterior = match &e.estep.posterior {
        PosteriorMethod::Mmps(mmps) => {
            let covariance = match mmps.covariance {
                EmCovariance::Tweedie => "Tweedie covariance (paper)".to_string(),
                other => format!("{other:?} heuristic"),
            };
            let solver = &mmps.solver;
            let solve = match solver.rtol {
                Some(r) => {
                    format!("{} to rtol {r:e} (cap {})", method_name(solver.method), solver.iterations)
                }
                None => format!("{} {} iterations", method_name(solver.method), solver.iterations),
            };
            format!("MMPS with the {covariance}, {solve}")
        }
        other => other.to_string(),
    };
    let network = match &e.network {
        NetworkConfig::Mlp(mlp) => {
            format!("MLP, hidden {:?}, embedding {}", mlp.hidden, mlp.embedding_features)
        }
        other => format!("{other:?}"),
    };
    let t = &e.mstep;
    let mut s = String::new();
    let _ = writeln!(s, "# Manifold experiment ({})\n", config.preset);
    let _ = writeln!(
        s,
        "docs/method.md §9a: DiEM on a random 1-D manifold in R^{}, observed through random {}×{} projections with",
        d.ambient_dim, d.observed_dim, d.ambient_dim
    );
    let _ = writeln!(s, "unit-sphere rows and noise σ_y = {:e}.\n", d.noise_std);
    let _ = writeln!(s, "| setting | value |\n| --- | --- |");
    let _ = writeln!(s, "| observations | {} (data seed {}, run seed {}) |", d.points, d.seed, e.seed);
    let _ = writeln!(s, "| laps | {} |", e.laps);
    let lr = match t.lr.schedule {
        LrSchedule::Constant => format!("constant {:e}", t.lr.init),
        LrSchedule::Linear { end } => format!("{:e} → {end:e} linear", t.lr.init),
        other => format!("{:e}, {other:?}", t.lr.init),
    };
    let clip = t.clip_norm.map_or_else(|| "no clipping".to_string(), |c| format!("clip {c}"));
    let _ = writeln!(s, "| M-step | {} steps, batch {}, Adam lr {lr}, {clip} |", t.steps, t.batch_size);
    let _ = writeln!(s, "| network | {network} |");
    let sampler = match e.estep.sampler {
        SamplerSpec::Pc { steps, corrections, tau } => {
            format!("PC, T = {steps}, C = {corrections}, τ = {tau}")
        }
        SamplerSpec::Ddpm { steps } => format!("DDPM, T = {steps}"),
        SamplerSpec::Ddim { steps } => format!("DDIM, T = {steps}"),
        other => other.to_string(),
    };
    let _ = writeln!(s, "| E-step | {sampler}; {posterior} |");
    let _ = writeln!(
        s,
        "| Gaussian init | {} EM iterations, DDIM {} steps, rank {} |",
        e.gaussian.iterations, e.gaussian.steps, e.gaussian.rank
    );
    let _ = writeln!(
        s,
        "| metric | Sinkhorn, {} points per side, λ = {:e}, ≤ {} iterations, tol {:e}; prior samples by PC, T = {} |",
        m.points, m.lambda, m.max_iter, m.tol, m.prior_steps
    );
    let _ = writeln!(s, "| wall time | {total_seconds:.1} s |\n");
    let _ = writeln!(
        s,
        "The divergence is `S(v) = max(OT_λ(u1, v) − OT_λ(u1, u2), 1e-6)` with u1, u2 disjoint ground-truth"
    );
    let _ = writeln!(s, "sets and v the prior's samples inside (−3, 3) (docs/method.md §9a). Lap `gaussian` is the initial Gaussian prior");
    let _ = writeln!(
        s,
        "(its E-step column is the Gaussian EM fit); lap 0's wall time includes the initial E-step π_0.\n"
    );
    let _ = writeln!(s, "| lap | loss (mean ± std) | Sinkhorn (prior) | Sinkhorn (E-step) | kept | E-step s | M-step s | eval s | wall s |");
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in records {
        let loss = match (r.loss_mean, r.loss_std) {
            (Some(mu), Some(sd)) => format!("{mu:.4} ± {sd:.4}"),
            (Some(mu), None) => format!("{mu:.4}"),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {loss} | {:.4e} | {} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.label(),
            r.sinkhorn,
            r.sinkhorn_estep.map_or_else(|| "–".into(), |v| format!("{v:.4e}")),
            r.kept,
            r.estep_seconds,
            r.mstep_seconds,
            r.eval_seconds,
            r.wall_seconds,
        );
    }
    let laps: Vec<&LapRecord> = records.iter().filter(|r| r.lap >= 0).collect();
    if !laps.is_empty() {
        let _ = writeln!(
            s,
            "\nE-step samples against their own observations: the fraction the (−3, 3) filter drops, the \
             residual-to-noise ratio `||y − A x|| / (σ_y √m)` (about 1 for exact posterior samples; rows above 5 \
             are inconsistent), the largest |x| and the MMPS solver fallbacks (– where the run did not record \
             them).\n"
        );
        let _ = writeln!(s, "| lap | filtered | ratio median | ratio p99 | ratio max | inconsistent | max \\|x\\| | fallbacks |");
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        let e = |v: Option<f64>| fmt_sci(v);
        for r in laps {
            let x = &r.estep;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label(),
                x.filtered.map_or_else(|| "–".into(), |f| format!("{:.2} %", 100.0 * f)),
                fmt_opt(x.residual_ratio_median, 3),
                fmt_opt(x.residual_ratio_p99, 3),
                e(x.residual_ratio_max),
                x.inconsistent_fraction.map_or_else(|| "–".into(), |f| format!("{:.2} %", 100.0 * f)),
                e(x.max_abs),
                x.fallbacks.map_or_else(|| "–".into(), |f| format!("{f:.0}")),
            );
        }
    }
    if let (Some(first), Some(last)) = (records.first(), records.last()) {
        if records.len() > 1 {
            let _ = writeln!(
                s,
                "\nInitial Gaussian: {:.4e}; last lap ({}): {:.4e}; ratio {}.",
                first.sinkhorn,
                last.label(),
                last.sinkhorn,
                fmt_opt(Some(first.sinkhorn / last.sinkhorn), 2)
            );
        }
    }
    let _ = writeln!(s, "\n![Sinkhorn divergence per lap]({CURVE_FILE})\n");
    for r in records {
        let _ = writeln!(s, "- lap {}: ![corner plot]({})", r.label(), corner_path(r.lap));
    }
    s
}

/// The corner plot's path relative to the run directory for `lap` (−1: the Gaussian).
pub fn corner_path(lap: i64) -> String {
    if lap < 0 {
        crate::observer::GAUSSIAN_CORNER_FILE.into()
    } else {
        format!("lap-{lap:03}/{}", crate::observer::LAP_CORNER_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lap: i64) -> LapRecord {
        LapRecord {
            lap,
            loss_mean: None,
            loss_std: None,
            sinkhorn: 1.0,
            sinkhorn_estep: None,
            kept: 1.0,
            estep_seconds: 0.0,
            mstep_seconds: 0.0,
            eval_seconds: 0.0,
            wall_seconds: 0.0,
            estep: EStepRecord::default(),
        }
    }

    /// The E-step table: figures from `metrics.jsonl` where present, "–" where a run did not record them, and
    /// records written before the field existed read back.
    #[test]
    fn the_estep_table_reads_metrics_and_tolerates_old_runs() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            r#"{"lap": 0, "kept_fraction": 0.96, "estep_residual_ratio_median": 0.8, "estep_residual_ratio_p99": 2.1,
                "estep_residual_ratio_max": 3.2, "estep_inconsistent_fraction": 0.0, "estep_max_abs": 6.0,
                "estep_fallbacks": 14637}"#
                .replace('\n', " "),
            r#"{"lap": 1, "kept_fraction": 0.5}"#.to_string(),
        ];
        std::fs::write(dir.path().join(diem_em::layout::METRICS_FILE), lines.join("\n")).unwrap();
        let records = with_run_metrics(dir.path(), &[record(-1), record(0), record(1)]);
        assert_eq!(records[0].estep, EStepRecord::default(), "the Gaussian has no E-step figures");
        assert_eq!(records[1].estep.fallbacks, Some(14637.0));
        assert!((records[1].estep.filtered.unwrap() - 0.04).abs() < 1e-12);
        assert_eq!(records[2].estep.residual_ratio_max, None);
        let text = report_markdown(&ManifoldConfig::tiny(), &records, 1.0);
        assert!(
            text.contains("| 0 | 4.00 % | 0.800 | 2.100 | 3.200e0 | 0.00 % | 6.000e0 | 14637 |"),
            "{text}"
        );
        assert!(text.contains("| 1 | 50.00 % | – | – | – | – | – | – |"), "{text}");
        // A records line from before the E-step figures existed.
        let old = r#"{"lap":0,"loss_mean":null,"loss_std":null,"sinkhorn":1.0,"sinkhorn_estep":null,"kept":1.0,
            "estep_seconds":0.0,"mstep_seconds":0.0,"eval_seconds":0.0,"wall_seconds":0.0}"#;
        let parsed: LapRecord = serde_json::from_str(old).unwrap();
        assert_eq!(parsed.estep, EStepRecord::default());
    }
}
