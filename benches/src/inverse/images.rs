//! Test images of the benchmark (docs/method.md §9d "Protocol"): the first `count` PNG/JPEG files of a folder, sorted
//! by name, centre-cropped to a square, resized to `size × size` RGB and mapped to `[−1, 1]`.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use tch::{Kind, Tensor};

use crate::error::{BenchError, Result};

/// The file extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The image files of `dir` (PNG/JPEG, by extension), sorted by file name.
///
/// # Errors
/// [`BenchError::Io`] when the folder cannot be listed.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| BenchError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| BenchError::io(dir, e))?.path();
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if path.is_file() && IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Reads one image as `[3, size, size]` float32 in `[−1, 1]`: RGB, the largest centred square, resized with a
/// Catmull–Rom filter when its side differs from `size` (FFHQ 256 images are used as they are).
///
/// # Errors
/// [`BenchError::Image`] when the file cannot be decoded.
pub fn load_image(path: &Path, size: u32) -> Result<Tensor> {
    let img = image::open(path)
        .map_err(|e| BenchError::Image { path: path.into(), message: e.to_string() })?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let square = image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let square = if side == size {
        square
    } else {
        image::imageops::resize(&square, size, size, FilterType::CatmullRom)
    };
    let s = i64::from(size);
    let hwc = Tensor::from_slice(square.as_raw()).reshape([s, s, 3]);
    Ok(hwc.permute([2, 0, 1]).to_kind(Kind::Float) / 127.5 - 1.0)
}

/// The first `count` images of `dir` (sorted by name) as `[count, 3, size, size]` in `[−1, 1]`, with their
/// file names.
///
/// # Errors
/// [`BenchError::Config`] when the folder holds fewer than `count` images or `count`/`size` is 0; IO and
/// decoding errors naming the file.
pub fn load_images(dir: &Path, count: usize, size: u32) -> Result<(Tensor, Vec<String>)> {
    if count == 0 || size == 0 {
        return Err(BenchError::config("--count/--size", "must both be at least 1"));
    }
    let files = list_images(dir)?;
    if files.len() < count {
        return Err(BenchError::config(
            "--images",
            format!("{} holds {} PNG/JPEG images, {count} requested", dir.display(), files.len()),
        ));
    }
    let mut images = Vec::with_capacity(count);
    let mut names = Vec::with_capacity(count);
    for path in &files[..count] {
        images.push(load_image(path, size)?);
        names.push(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    }
    Ok((Tensor::stack(&images, 0), names))
}

/// Writes `x : [3, H, W]` in `[−1, 1]` (clipped) as an 8-bit RGB PNG (used by tests and to export samples).
///
/// # Errors
/// [`BenchError::Image`] when encoding or writing fails.
pub fn save_png(x: &Tensor, path: &Path) -> Result<()> {
    let size = x.size();
    if size.len() != 3 || size[0] != 3 {
        return Err(BenchError::config("save_png", format!("expected [3, H, W], got {size:?}")));
    }
    let (h, w) = (size[1], size[2]);
    let bytes = ((x.to_kind(Kind::Double).clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0])
        .contiguous()
        .to_device(tch::Device::Cpu);
    let data = Vec::<u8>::try_from(bytes.reshape([-1]))?;
    let img = image::RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| BenchError::Image { path: path.into(), message: "buffer size mismatch".into() })?;
    img.save(path).map_err(|e| BenchError::Image { path: path.into(), message: e.to_string() })
}
