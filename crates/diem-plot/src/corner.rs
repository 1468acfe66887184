//! Corner plots: every pair of coordinates as a 2-D histogram, marginals on the diagonal.

use std::path::Path;

use plotters::prelude::*;

use crate::lines::PALETTE;
use crate::{check_finite, font::has_font, write_png_atomically, PlotError, Result};

/// A corner plot of `d`-dimensional samples, optionally against reference samples.
///
/// Cell `(i, j)` below the diagonal shows the 2-D histogram of coordinates `(x_j, x_i)` of `samples` (blue);
/// above the diagonal, the same for `reference` (orange) when given; the diagonal overlays both marginal
/// histograms of `x_i`. All axes share `range`.
#[derive(Debug, Clone, PartialEq)]
pub struct CornerPlot<'a> {
    /// Title above the grid.
    pub title: String,
    /// The samples, `n` rows of `d` values each, row-major (`samples[r * d + i]`).
    pub samples: &'a [f64],
    /// Optional reference samples in the same layout (e.g. ground truth).
    pub reference: Option<&'a [f64]>,
    /// Dimension `d`.
    pub dim: usize,
    /// Common axis range.
    pub range: (f64, f64),
    /// Histogram bins per axis.
    pub bins: usize,
    /// Side of one cell in pixels.
    pub cell: u32,
}

impl<'a> CornerPlot<'a> {
    /// A plot of `samples` with `dim` coordinates on `[-3, 3]`, 48 bins, 160-pixel cells.
    pub fn new(samples: &'a [f64], dim: usize) -> Self {
        Self { title: String::new(), samples, reference: None, dim, range: (-3.0, 3.0), bins: 48, cell: 160 }
    }
}

/// Histogram counts of `values` (stride `dim`, coordinate `i` and optionally `j`) on `bins` bins of `range`.
fn histogram2(data: &[f64], dim: usize, i: usize, j: usize, range: (f64, f64), bins: usize) -> Vec<f64> {
    let width = (range.1 - range.0) / bins as f64;
    let index = |v: f64| {
        let k = ((v - range.0) / width).floor();
        (k >= 0.0 && k < bins as f64).then_some(k as usize)
    };
    let mut counts = vec![0.0; bins * bins];
    for row in data.chunks_exact(dim) {
        if let (Some(a), Some(b)) = (index(row[j]), index(row[i])) {
            counts[b * bins + a] += 1.0;
        }
    }
    counts
}

fn histogram1(data: &[f64], dim: usize, i: usize, range: (f64, f64), bins: usize) -> Vec<f64> {
    let width = (range.1 - range.0) / bins as f64;
    let mut counts = vec![0.0; bins];
    for row in data.chunks_exact(dim) {
        let k = ((row[i] - range.0) / width).floor();
        if k >= 0.0 && k < bins as f64 {
            counts[k as usize] += 1.0;
        }
    }
    let total: f64 = counts.iter().sum::<f64>().max(1.0);
    counts.iter().map(|c| c / (total * width)).collect()
}

/// Draws `plot` to the PNG file `path` (atomically).
pub fn corner_plot(plot: &CornerPlot<'_>, path: &Path) -> Result<()> {
    let d = plot.dim;
    let bad = |what: String| Err(PlotError::Data { figure: "corner_plot", what });
    if d == 0 || plot.samples.is_empty() || plot.samples.len() % d != 0 {
        return bad(format!("{} sample values do not form rows of dimension {d}", plot.samples.len()));
    }
    if let Some(r) = plot.reference {
        if r.is_empty() || r.len() % d != 0 {
            return bad(format!("{} reference values do not form rows of dimension {d}", r.len()));
        }
        check_finite("corner_plot", "reference", r)?;
    }
    let increasing = plot.range.1 > plot.range.0 && plot.range.0.is_finite() && plot.range.1.is_finite();
    if plot.bins == 0 || !increasing {
        return bad(format!(
            "bins = {} and range = {:?} must be positive and increasing",
            plot.bins, plot.range
        ));
    }
    check_finite("corner_plot", "samples", plot.samples)?;
    let text = has_font();
    let title_px = if text && !plot.title.is_empty() { 40 } else { 0 };
    let side = plot.cell * d as u32;
    let (lo, hi) = plot.range;
    let bins = plot.bins;
    let step = (hi - lo) / bins as f64;
    write_png_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, (side, side + title_px)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let body = if title_px > 0 {
            let (top, body) = root.split_vertically(title_px);
            top.titled(&plot.title, ("sans-serif", 24)).map_err(|e| e.to_string())?;
            body
        } else {
            root.clone()
        };
        let cells = body.split_evenly((d, d));
        for (idx, area) in cells.iter().enumerate() {
            let (i, j) = (idx / d, idx % d);
            if i == j {
                let mut curves = vec![(histogram1(plot.samples, d, i, plot.range, bins), PALETTE[0])];
                if let Some(r) = plot.reference {
                    curves.push((histogram1(r, d, i, plot.range, bins), PALETTE[1]));
                }
                let top = curves.iter().flat_map(|(c, _)| c.iter().copied()).fold(0.0, f64::max).max(1e-12);
                let mut chart = ChartBuilder::on(area)
                    .margin(3)
                    .build_cartesian_2d(lo..hi, 0.0..top * 1.05)
                    .map_err(|e| e.to_string())?;
                for (counts, color) in curves {
                    let pts = counts.iter().enumerate().map(|(k, &c)| (lo + (k as f64 + 0.5) * step, c));
                    chart
                        .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                        .map_err(|e| e.to_string())?;
                }
                area.draw(&Rectangle::new(
                    [(0, 0), (plot.cell as i32 - 1, plot.cell as i32 - 1)],
                    BLACK.mix(0.3),
                ))
                .map_err(|e| e.to_string())?;
                continue;
            }
            let (source, color) = match (i > j, plot.reference) {
                (true, _) => (plot.samples, PALETTE[0]),
                (false, Some(r)) => (r, PALETTE[1]),
                (false, None) => continue,
            };
            let counts = histogram2(source, d, i, j, plot.range, bins);
            let peak = counts.iter().copied().fold(0.0, f64::max).max(1.0);
            let mut chart = ChartBuilder::on(area)
                .margin(3)
                .build_cartesian_2d(lo..hi, lo..hi)
                .map_err(|e| e.to_string())?;
            let rects = counts.iter().enumerate().filter(|(_, &c)| c > 0.0).map(|(k, &c)| {
                let (row, col) = (k / bins, k % bins);
                let x0 = lo + col as f64 * step;
                let y0 = lo + row as f64 * step;
                // Square-root intensity keeps thin, low-density structure visible next to dense modes.
                let alpha = (c / peak).sqrt().clamp(0.08, 1.0);
                Rectangle::new([(x0, y0), (x0 + step, y0 + step)], color.mix(alpha).filled())
            });
            chart.draw_series(rects).map_err(|e| e.to_string())?;
            area.draw(&Rectangle::new(
                [(0, 0), (plot.cell as i32 - 1, plot.cell as i32 - 1)],
                BLACK.mix(0.3),
            ))
            .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    })
}
