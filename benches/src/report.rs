//! Files a study writes: raw and summary CSVs and a log–log figure of medians with 25–75 % bands.

use std::path::Path;

use diem_plot::{line_plot, LinePlot, Series};

use crate::error::Result;
use crate::stats::{group_quartiles, write_csv, Quartiles};

/// One summarized curve: `(x, quartiles over seeds)` with x ascending.
pub type Curve = Vec<(f64, Quartiles)>;

/// One measurement of a study: which curve, where on the x axis, which seed, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Curve (method) name.
    pub series: String,
    /// Abscissa (σ_t or the dimension).
    pub x: f64,
    /// The seed.
    pub seed: u64,
    /// The measured value.
    pub value: f64,
}

/// Writes `raw.csv`-style rows (`x_name,series,seed,value_name`) to `raw`, per-group medians and quartiles
/// (`x_name,series,median,q25,q75,seeds`) to `summary`, and a log–log figure to `figure`. `legend` maps a
/// series name to its legend entry. Returns the summary.
///
/// # Errors
/// IO and drawing errors, naming the file.
#[allow(clippy::too_many_arguments)]
pub fn write_study(
    measurements: &[Measurement],
    x_name: &str,
    value_name: &str,
    title: &str,
    legend: &dyn Fn(&str) -> String,
    raw: &Path,
    summary: &Path,
    figure: &Path,
) -> Result<Vec<(String, Curve)>> {
    let rows: Vec<Vec<String>> = measurements
        .iter()
        .map(|m| vec![format!("{}", m.x), m.series.clone(), m.seed.to_string(), format!("{:e}", m.value)])
        .collect();
    write_csv(raw, &[x_name, "series", "seed", value_name], &rows)?;
    let groups = group_quartiles(measurements.iter().map(|m| (m.series.as_str(), m.x, m.value)));
    let mut summary_rows = Vec::new();
    let mut series = Vec::new();
    for (name, points) in &groups {
        for (x, q) in points {
            summary_rows.push(vec![
                format!("{x}"),
                name.clone(),
                format!("{:e}", q.median),
                format!("{:e}", q.q25),
                format!("{:e}", q.q75),
                q.count.to_string(),
            ]);
        }
        // Groups whose values are all NaN (e.g. a diverged sampler) stay in the CSVs but not in the figure.
        let shown: Vec<&(f64, Quartiles)> = points
            .iter()
            .filter(|p| p.1.median.is_finite() && p.1.q25.is_finite() && p.1.q75.is_finite())
            .collect();
        if shown.is_empty() {
            continue;
        }
        let xs = shown.iter().map(|p| p.0).collect();
        let med = shown.iter().map(|p| p.1.median).collect();
        let lo = shown.iter().map(|p| p.1.q25).collect();
        let hi = shown.iter().map(|p| p.1.q75).collect();
        series.push(Series::new(legend(name), xs, med).with_band(lo, hi));
    }
    write_csv(summary, &[x_name, "series", "median", "q25", "q75", "seeds"], &summary_rows)?;
    let plot = LinePlot {
        title: title.to_string(),
        x_label: x_name.to_string(),
        y_label: value_name.to_string(),
        log_x: true,
        log_y: true,
        series,
        ..LinePlot::default()
    };
    line_plot(&plot, figure)?;
    Ok(groups.into_iter().collect())
}
