//! A synthetic stand-in for CIFAR-10 in the exact binary format, for tests and the `--tiny` pipeline:
//! structured 32×32 RGB images (a smooth two-colour background with a disc, a square or stripes whose colour
//! depends on the label), deterministic from a seed.

use std::f32::consts::PI;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;

use crate::error::{CifarError, Result};
use crate::format::{
    pack_archive, write_batch_file, CifarData, CifarSplit, ARCHIVE_NAME, CLASSES, CLASS_NAMES, FOLDER_NAME,
    IMAGE_BYTES, TEST_FILE, TRAIN_FILES,
};

/// The size of a synthetic data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Images in each of the five training files.
    pub train_per_file: usize,
    /// Images in the test file.
    pub test: usize,
    /// The seed of every draw.
    pub seed: u64,
}

/// Where [`write_synthetic`] put the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticFiles {
    /// The folder holding the six `.bin` files.
    pub folder: PathBuf,
    /// The `.tar.gz` archive of that folder.
    pub archive: PathBuf,
}

/// `n` synthetic images with labels `i mod 10`, drawn from [`diem_operators::seed::host_rng`]`(seed)`.
pub fn synthetic_split(n: usize, seed: u64) -> CifarSplit {
    let mut rng = diem_operators::seed::host_rng(seed);
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    for i in 0..n {
        let label = (i % CLASSES as usize) as u8;
        labels.push(label);
        pixels.extend(synthetic_image(label, &mut rng));
    }
    CifarSplit { labels, pixels }
}

/// An RGB colour on the hue circle (`h ∈ [0, 1)`) with saturation `s` and value `v`, each channel in [0, 1].
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let f = |n: f32| {
        let k = (n + h * 6.0) % 6.0;
        v - v * s * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    [f(5.0), f(3.0), f(1.0)]
}

/// One image of class `label`: channel-first bytes.
fn synthetic_image(label: u8, rng: &mut StdRng) -> Vec<u8> {
    let side = 32usize;
    let hue = f32::from(label) / f32::from(CLASSES) + rng.gen_range(-0.02..0.02);
    let fg = hsv(hue.rem_euclid(1.0), rng.gen_range(0.6..1.0), rng.gen_range(0.7..1.0));
    let bg_a = hsv(rng.gen::<f32>(), rng.gen_range(0.0..0.4), rng.gen_range(0.2..0.6));
    let bg_b = hsv(rng.gen::<f32>(), rng.gen_range(0.0..0.4), rng.gen_range(0.2..0.6));
    let angle = rng.gen_range(0.0..PI);
    let (cx, cy) = (rng.gen_range(9.0..23.0f32), rng.gen_range(9.0..23.0f32));
    let radius = rng.gen_range(5.0..10.0f32);
    let period = rng.gen_range(4.0..9.0f32);
    let shape = label % 3;
    let mut out = vec![0u8; IMAGE_BYTES];
    for y in 0..side {
        for x in 0..side {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let t = ((fx * angle.cos() + fy * angle.sin()) / 45.0 + 0.5).clamp(0.0, 1.0);
            let (dx, dy) = (fx - cx, fy - cy);
            let inside = match shape {
                0 => dx * dx + dy * dy < radius * radius,
                1 => dx.abs() < radius * 0.8 && dy.abs() < radius * 0.8,
                _ => ((fx * angle.sin() - fy * angle.cos()) / period).rem_euclid(2.0) < 1.0,
            };
            for c in 0..3 {
                let v = if inside { fg[c] } else { bg_a[c] * (1.0 - t) + bg_b[c] * t };
                out[(c * side + y) * side + x] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// A whole synthetic data set: `5 · train_per_file` training and `test` test images.
pub fn synthetic_data(spec: &SyntheticSpec) -> CifarData {
    let mut train = CifarSplit::default();
    for f in 0..TRAIN_FILES.len() {
        train.extend(&synthetic_split(spec.train_per_file, spec.seed.wrapping_add(f as u64 + 1)));
    }
    let test = synthetic_split(spec.test, spec.seed.wrapping_add(1000));
    CifarData { train, test }
}

/// Writes a synthetic data set in the official layout: `dir/cifar-10-batches-bin/` with `data_batch_1..5.bin`,
/// `test_batch.bin` and `batches.meta.txt`, and the archive `archive_dir/cifar-10-binary.tar.gz` of that
/// folder. Every file is written atomically.
///
/// # Errors
/// [`CifarError::Config`] for an empty split; IO errors naming the file.
pub fn write_synthetic(dir: &Path, archive_dir: &Path, spec: &SyntheticSpec) -> Result<SyntheticFiles> {
    if spec.train_per_file == 0 || spec.test == 0 {
        return Err(CifarError::config(
            "synthetic",
            "needs at least one training and one test image per file",
        ));
    }
    let data = synthetic_data(spec);
    let folder = dir.join(FOLDER_NAME);
    std::fs::create_dir_all(&folder).map_err(|e| CifarError::io(&folder, e))?;
    std::fs::create_dir_all(archive_dir).map_err(|e| CifarError::io(archive_dir, e))?;
    for (f, name) in TRAIN_FILES.iter().enumerate() {
        let lo = f * spec.train_per_file;
        let part = CifarSplit {
            labels: data.train.labels[lo..lo + spec.train_per_file].to_vec(),
            pixels: data.train.pixels[lo * IMAGE_BYTES..(lo + spec.train_per_file) * IMAGE_BYTES].to_vec(),
        };
        write_batch_file(&folder.join(name), &part)?;
    }
    write_batch_file(&folder.join(TEST_FILE), &data.test)?;
    let meta = CLASS_NAMES.join("\n") + "\n\n";
    diem_em::io::write_atomic(&folder.join("batches.meta.txt"), meta.as_bytes())?;
    let archive = archive_dir.join(ARCHIVE_NAME);
    pack_archive(&folder, &archive)?;
    Ok(SyntheticFiles { folder, archive })
}
