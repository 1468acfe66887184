//! PNG figures for diem runs, drawn with plotters and written atomically.
//!
//! - [`line_plot`]: curves with optional shaded bands (medians and quartiles), linear or log axes — the
//!   Sinkhorn-per-lap curve of an EM run, the divergence-vs-σ_t panel of Figure 2.
//! - [`corner_plot`]: pairwise 2-D histograms of samples (lower triangle) against a reference set (upper
//!   triangle), with 1-D marginals on the diagonal — the paper's Figure 3 style.
//! - [`image_grid`]: a grid of images (grayscale or RGB, values in `[0, 1]`).
//!
//! The crate has no libtorch dependency: inputs are plain slices, so every crate and binary can use it.
//! Text (titles, labels, legends) needs a TrueType font, which plotters does not ship: one is loaded once from
//! `DIEM_FONT` or the usual system locations (DejaVu, Liberation, Arial). Without a font, figures are drawn
//! without text rather than failing.
//!
//! ```no_run
//! use diem_plot::{line_plot, LinePlot, Series};
//! let plot = LinePlot {
//!     title: "Sinkhorn divergence per lap".into(),
//!     x_label: "lap".into(),
//!     y_label: "divergence".into(),
//!     log_y: true,
//!     series: vec![Series::new("DiEM", vec![0.0, 1.0, 2.0], vec![1.0, 0.3, 0.1])],
//!     ..LinePlot::default()
//! };
//! line_plot(&plot, std::path::Path::new("curve.png"))?;
//! # Ok::<(), diem_plot::Error>(())
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod corner;
mod font;
mod grid;
mod lines;

use std::path::{Path, PathBuf};

pub use corner::{corner_plot, CornerPlot};
pub use font::has_font;
pub use grid::{image_grid, Image};
pub use lines::{line_plot, LinePlot, Series};

/// What can go wrong while drawing or writing a figure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data cannot be plotted as given.
    #[error("{figure}: {what}")]
    Data {
        /// Which figure.
        figure: &'static str,
        /// What is wrong.
        what: String,
    },
    /// plotters failed to draw or encode the image.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The output file.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// The file could not be written or moved into place.
    #[error("writing {path}: {source}")]
    Io {
        /// The output file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_plot::Error`).
pub type PlotError = Error;

/// Draws into a temporary `.png` beside `path` and renames it into place, so a crash never leaves a
/// half-written figure under the final name.
pub(crate) fn write_png_atomically(
    path: &Path,
    draw: impl FnOnce(&Path) -> std::result::Result<(), String>,
) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    // The drawing library picks the image format by the extension, which `write_atomic_path` keeps.
    let mut failure = None;
    diem_fs::write_atomic_path(path, |tmp| {
        draw(tmp).map_err(|message| {
            failure = Some(message);
            std::io::Error::other("drawing failed")
        })
    })
    .map_err(|source| match failure.take() {
        Some(message) => Error::Draw { path: path.to_path_buf(), message },
        None => Error::Io { path: path.to_path_buf(), source },
    })
}

/// Checks that every value is finite, naming the figure and the input otherwise.
pub(crate) fn check_finite(figure: &'static str, input: &str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::Data { figure, what: format!("{input}[{i}] = {} is not finite", values[i]) }),
        None => Ok(()),
    }
}
