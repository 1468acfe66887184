//! Curves with optional bands, on linear or logarithmic axes.

use std::path::Path;

use plotters::prelude::*;

use crate::{check_finite, font::has_font, write_png_atomically, PlotError, Result};

/// Ten distinguishable colours (the Category10 palette).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One curve: points `(x[i], y[i])`, and optionally a band from `lower[i]` to `upper[i]` drawn shaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// Abscissae.
    pub x: Vec<f64>,
    /// Ordinates.
    pub y: Vec<f64>,
    /// Optional `(lower, upper)` band, each as long as `x`.
    pub band: Option<(Vec<f64>, Vec<f64>)>,
}

impl Series {
    /// A curve without a band.
    pub fn new(label: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Self {
        Self { label: label.into(), x, y, band: None }
    }

    /// Adds a shaded band (e.g. the 25–75 % quantiles around a median).
    pub fn with_band(mut self, lower: Vec<f64>, upper: Vec<f64>) -> Self {
        self.band = Some((lower, upper));
        self
    }
}

/// A figure of curves.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlot {
    /// Title above the plot.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// Logarithmic horizontal axis (all x must be > 0).
    pub log_x: bool,
    /// Logarithmic vertical axis (all y and band values must be > 0).
    pub log_y: bool,
    /// The curves.
    pub series: Vec<Series>,
    /// Image size in pixels.
    pub size: (u32, u32),
}

impl Default for LinePlot {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            log_x: false,
            log_y: false,
            series: Vec::new(),
            size: (900, 600),
        }
    }
}

/// Maps values to the plotted axis: `log10(v)` on a log axis, `v` otherwise.
fn axis(values: &[f64], log: bool, what: &str) -> Result<Vec<f64>> {
    if !log {
        return Ok(values.to_vec());
    }
    values
        .iter()
        .map(|&v| {
            if v > 0.0 {
                Ok(v.log10())
            } else {
                Err(PlotError::Data { figure: "line_plot", what: format!("{what} value {v} on a log axis") })
            }
        })
        .collect()
}

fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
    (lo - pad, hi + pad)
}

/// Draws the curves of `plot` to the PNG file `path` (atomically).
pub fn line_plot(plot: &LinePlot, path: &Path) -> Result<()> {
    let mut curves = Vec::with_capacity(plot.series.len());
    for s in &plot.series {
        if s.x.len() != s.y.len() {
            return Err(PlotError::Data {
                figure: "line_plot",
                what: format!("series {:?}: {} x values but {} y values", s.label, s.x.len(), s.y.len()),
            });
        }
        check_finite("line_plot", &format!("{}.x", s.label), &s.x)?;
        check_finite("line_plot", &format!("{}.y", s.label), &s.y)?;
        let band = match &s.band {
            Some((lo, hi)) if lo.len() == s.x.len() && hi.len() == s.x.len() => {
                Some((axis(lo, plot.log_y, "band")?, axis(hi, plot.log_y, "band")?))
            }
            Some(_) => {
                return Err(PlotError::Data {
                    figure: "line_plot",
                    what: format!("series {:?}: band length differs from x", s.label),
                })
            }
            None => None,
        };
        curves.push((axis(&s.x, plot.log_x, "x")?, axis(&s.y, plot.log_y, "y")?, band));
    }
    let xs = span(curves.iter().flat_map(|(x, _, _)| x.iter().copied()));
    let ys = span(curves.iter().flat_map(|(_, y, band)| {
        let extra = band.iter().flat_map(|(lo, hi)| lo.iter().chain(hi.iter())).copied();
        y.iter().copied().chain(extra).collect::<Vec<_>>()
    }));
    let text = has_font();
    write_png_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, plot.size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(15);
        if text {
            builder.caption(&plot.title, ("sans-serif", 22)).x_label_area_size(45).y_label_area_size(70);
        }
        let mut chart = builder.build_cartesian_2d(xs.0..xs.1, ys.0..ys.1).map_err(|e| e.to_string())?;
        let fmt_x = |v: &f64| if plot.log_x { format!("{:.1e}", 10f64.powf(*v)) } else { format!("{v:.3}") };
        let fmt_y = |v: &f64| if plot.log_y { format!("{:.1e}", 10f64.powf(*v)) } else { format!("{v:.3}") };
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(WHITE.mix(0.0));
        if text {
            mesh.x_desc(plot.x_label.as_str())
                .y_desc(plot.y_label.as_str())
                .x_label_formatter(&fmt_x)
                .y_label_formatter(&fmt_y);
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(|e| e.to_string())?;
        for (i, ((x, y, band), s)) in curves.iter().zip(&plot.series).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if let Some((lo, hi)) = band {
                let polygon: Vec<(f64, f64)> = x
                    .iter()
                    .zip(hi)
                    .map(|(&a, &b)| (a, b))
                    .chain(x.iter().zip(lo).rev().map(|(&a, &b)| (a, b)))
                    .collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(polygon, color.mix(0.2))))
                    .map_err(|e| e.to_string())?;
            }
            let line = LineSeries::new(x.iter().copied().zip(y.iter().copied()), color.stroke_width(2));
            let drawn = chart.draw_series(line).map_err(|e| e.to_string())?;
            if text && !s.label.is_empty() {
                drawn.label(s.label.as_str()).legend(move |(px, py)| {
                    PathElement::new(vec![(px, py), (px + 20, py)], color.stroke_width(2))
                });
            }
        }
        if text && plot.series.iter().any(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    })
}
