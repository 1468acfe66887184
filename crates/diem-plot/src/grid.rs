//! Image grids: several images side by side, pixel for pixel.

use std::path::Path;

use plotters::prelude::*;

use crate::{write_png_atomically, PlotError, Result};

/// One image, channel-first (`data[(c * height + h) * width + w]`), values in `[0, 1]` (clipped).
/// One channel is drawn in grayscale, three as RGB.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels · height · width` values.
    pub data: Vec<f32>,
}

/// Writes `images` (all of one size) as a grid with `cols` columns, each pixel enlarged `scale` times and a
/// 2-pixel white gap between images, to the PNG file `path` (atomically).
pub fn image_grid(images: &[Image], cols: usize, scale: u32, path: &Path) -> Result<()> {
    let bad = |what: String| Err(PlotError::Data { figure: "image_grid", what });
    let Some(first) = images.first() else { return bad("no images".into()) };
    let (c, h, w) = (first.channels, first.height, first.width);
    if !(c == 1 || c == 3) || h == 0 || w == 0 {
        return bad(format!("images must have 1 or 3 channels and a positive size, got {c}×{h}×{w}"));
    }
    for (k, im) in images.iter().enumerate() {
        if (im.channels, im.height, im.width) != (c, h, w) || im.data.len() != c * h * w {
            return bad(format!(
                "image {k} is {}×{}×{} with {} values; expected {c}×{h}×{w}",
                im.channels,
                im.height,
                im.width,
                im.data.len()
            ));
        }
    }
    if cols == 0 || scale == 0 {
        return bad(format!("cols = {cols} and scale = {scale} must be positive"));
    }
    let rows = images.len().div_ceil(cols);
    let gap = 2u32;
    let cell_w = w as u32 * scale + gap;
    let cell_h = h as u32 * scale + gap;
    let size = (cols as u32 * cell_w + gap, rows as u32 * cell_h + gap);
    write_png_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let level = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        for (k, im) in images.iter().enumerate() {
            let ox = gap + (k % cols) as u32 * cell_w;
            let oy = gap + (k / cols) as u32 * cell_h;
            for y in 0..h {
                for x in 0..w {
                    let px = |ch: usize| level(im.data[(ch * h + y) * w + x]);
                    let color =
                        if c == 1 { RGBColor(px(0), px(0), px(0)) } else { RGBColor(px(0), px(1), px(2)) };
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let at =
                                ((ox + x as u32 * scale + dx) as i32, (oy + y as u32 * scale + dy) as i32);
                            root.draw_pixel(at, &color).map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
        }
        root.present().map_err(|e| e.to_string())
    })
}
