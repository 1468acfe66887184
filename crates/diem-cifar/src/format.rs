//! The CIFAR-10 binary distribution ("CIFAR-10 binary version", `cifar-10-binary.tar.gz`) and the pixel
//! mapping of docs/method.md §9b.
//!
//! Each file `data_batch_1.bin` … `data_batch_5.bin` (training) and `test_batch.bin` (test) is a sequence of
//! records of 3073 bytes: one label byte (0–9), then 3072 pixel bytes, the red, green and blue planes of the
//! 32×32 image, each row-major. The official files hold 10,000 records each. A record's pixels are therefore
//! already channel-first, so a split reads directly as an NCHW tensor `[N, 3, 32, 32]`.
//!
//! Pixels map to `x = u8 · 4/256 − 2 ∈ [−2, 2 − 1/64]` ([`u8_to_unit`], [`to_unit`]); the inverse used for
//! saving and for FID is `u8 = round(clip((x + 2) · 64, 0, 255))` ([`unit_to_u8`], [`to_uint8`]).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use tch::{Kind, Tensor};

use crate::error::{CifarError, Result};

/// Image side length (32).
pub const IMAGE_SIDE: i64 = 32;
/// Channels (RGB).
pub const CHANNELS: i64 = 3;
/// Pixel bytes per image: `3 · 32 · 32 = 3072`.
pub const IMAGE_BYTES: usize = 3072;
/// Bytes per record: one label byte and the image.
pub const RECORD_BYTES: usize = IMAGE_BYTES + 1;
/// Records per file in the official distribution.
pub const RECORDS_PER_FILE: usize = 10_000;
/// Number of classes (labels 0–9).
pub const CLASSES: u8 = 10;
/// The training files, in order.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The folder the archive extracts to.
pub const FOLDER_NAME: &str = "cifar-10-batches-bin";
/// The archive's file name.
pub const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";
/// The class names, by label.
pub const CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// One split: labels and pixels, record by record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CifarSplit {
    /// One label (0–9) per image.
    pub labels: Vec<u8>,
    /// `labels.len() · 3072` pixel bytes, each image channel-first (R, G, B planes, row-major).
    pub pixels: Vec<u8>,
}

impl CifarSplit {
    /// Parses the records of one binary file; `path` names the file (or archive member) in errors.
    ///
    /// # Errors
    /// [`CifarError::Format`] naming `path` when the size is not a positive multiple of 3073 bytes (a
    /// truncated or foreign file) or a label is not in 0–9.
    pub fn from_records(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.is_empty() || bytes.len() % RECORD_BYTES != 0 {
            return Err(CifarError::format(
                path,
                format!(
                    "{} bytes is not a whole number of {RECORD_BYTES}-byte records (1 label + {IMAGE_BYTES} \
                     pixels; an official file has {RECORDS_PER_FILE} records = {} bytes): truncated or not a \
                     CIFAR-10 binary file",
                    bytes.len(),
                    RECORDS_PER_FILE * RECORD_BYTES
                ),
            ));
        }
        let n = bytes.len() / RECORD_BYTES;
        let mut labels = Vec::with_capacity(n);
        let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
        for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let label = record[0];
            if label >= CLASSES {
                return Err(CifarError::format(
                    path,
                    format!("record {i} has label {label}; CIFAR-10 labels are 0–9"),
                ));
            }
            labels.push(label);
            pixels.extend_from_slice(&record[1..]);
        }
        Ok(Self { labels, pixels })
    }

    /// The records of this split, as written in a binary file.
    pub fn to_records(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * RECORD_BYTES);
        for (label, image) in self.labels.iter().zip(self.pixels.chunks_exact(IMAGE_BYTES)) {
            out.push(*label);
            out.extend_from_slice(image);
        }
        out
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends the images of `other`.
    pub fn extend(&mut self, other: &Self) {
        self.labels.extend_from_slice(&other.labels);
        self.pixels.extend_from_slice(&other.pixels);
    }

    /// The first `n` images (all of them when `n ≥ len`).
    pub fn head(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self { labels: self.labels[..n].to_vec(), pixels: self.pixels[..n * IMAGE_BYTES].to_vec() }
    }

    /// The images as a `uint8` tensor `[N, 3, 32, 32]` (NCHW) on the CPU.
    pub fn images_u8(&self) -> Tensor {
        Tensor::from_slice(&self.pixels).reshape([self.len() as i64, CHANNELS, IMAGE_SIDE, IMAGE_SIDE])
    }

    /// The images mapped to `[−2, 2)` ([`to_unit`]): f32 `[N, 3, 32, 32]` on the CPU.
    pub fn images(&self) -> Tensor {
        to_unit(&self.images_u8())
    }

    /// The labels as an `int64` tensor `[N]`.
    pub fn labels_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.labels).to_kind(Kind::Int64)
    }
}

/// The training (50,000 images in the official set) and test (10,000) splits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CifarData {
    /// `data_batch_1.bin` … `data_batch_5.bin`, concatenated in order.
    pub train: CifarSplit,
    /// `test_batch.bin`.
    pub test: CifarSplit,
}

/// `x = u8 · 4/256 − 2` (docs/method.md §9b), exact in f32.
pub fn u8_to_unit(v: u8) -> f32 {
    f32::from(v) / 64.0 - 2.0
}

/// `u8 = round(clip((x + 2) · 64, 0, 255))` (docs/method.md §9b), rounding half to even as libtorch does; NaN
/// maps to 0. The inverse of [`u8_to_unit`].
pub fn unit_to_u8(x: f32) -> u8 {
    let v = ((x + 2.0) * 64.0).clamp(0.0, 255.0).round_ties_even();
    if v.is_nan() {
        0
    } else {
        v as u8
    }
}

/// [`u8_to_unit`] on a tensor of any shape and integer or float kind: f32 `x = v/64 − 2`.
pub fn to_unit(images: &Tensor) -> Tensor {
    images.to_kind(Kind::Float) / 64.0 - 2.0
}

/// [`unit_to_u8`] on a tensor of any shape: `uint8` `round(clip((x + 2) · 64, 0, 255))` (NaN → 0).
pub fn to_uint8(x: &Tensor) -> Tensor {
    let v = ((x.to_kind(Kind::Float) + 2.0) * 64.0).nan_to_num(0.0, 255.0, 0.0);
    v.clamp(0.0, 255.0).round().to_kind(Kind::Uint8)
}

/// Reads one binary file.
///
/// # Errors
/// [`CifarError::Io`] naming the file when it cannot be read; [`CifarError::Format`] naming it for a bad size
/// or label.
pub fn read_batch_file(path: &Path) -> Result<CifarSplit> {
    let bytes = std::fs::read(path).map_err(|e| CifarError::io(path, e))?;
    CifarSplit::from_records(&bytes, path)
}

/// Writes `split` as one binary file, atomically (temporary name + rename).
///
/// # Errors
/// [`CifarError::Em`] wrapping the IO error, naming the file.
pub fn write_batch_file(path: &Path, split: &CifarSplit) -> Result<()> {
    Ok(diem_em::io::write_atomic(path, &split.to_records())?)
}

/// Reads the six files of an extracted folder (`data_batch_1..5.bin`, `test_batch.bin`).
///
/// # Errors
/// [`CifarError::Io`] naming a missing or unreadable file; [`CifarError::Format`] naming a malformed one.
pub fn read_folder(dir: &Path) -> Result<CifarData> {
    let mut train = CifarSplit::default();
    for name in TRAIN_FILES {
        train.extend(&read_batch_file(&dir.join(name))?);
    }
    let test = read_batch_file(&dir.join(TEST_FILE))?;
    Ok(CifarData { train, test })
}

/// Reads the six files from the `.tar.gz` archive (members matched by file name, whatever their folder).
///
/// # Errors
/// [`CifarError::Io`] when the archive cannot be opened; [`CifarError::Format`] naming the archive (or
/// `archive/member`) when it is not a gzip-compressed tar, a member is malformed, or members are missing.
pub fn read_archive(path: &Path) -> Result<CifarData> {
    let file = File::open(path).map_err(|e| CifarError::io(path, e))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let bad = |e: std::io::Error| CifarError::format(path, format!("not a readable .tar.gz archive: {e}"));
    let mut train: [Option<CifarSplit>; 5] = Default::default();
    let mut test = None;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let member = entry.path().map_err(bad)?.into_owned();
        let Some(name) = member.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        let slot = if name == TEST_FILE {
            &mut test
        } else if let Some(i) = TRAIN_FILES.iter().position(|f| *f == name) {
            &mut train[i]
        } else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(bad)?;
        *slot = Some(CifarSplit::from_records(&bytes, &path.join(&member))?);
    }
    let missing: Vec<&str> = TRAIN_FILES
        .iter()
        .zip(&train)
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| *n)
        .chain(test.is_none().then_some(TEST_FILE))
        .collect();
    if !missing.is_empty() {
        return Err(CifarError::format(path, format!("the archive lacks {}", missing.join(", "))));
    }
    let mut all = CifarSplit::default();
    for split in train.iter().flatten() {
        all.extend(split);
    }
    Ok(CifarData { train: all, test: test.unwrap_or_default() })
}

/// Packs the six files of `folder` into a `.tar.gz` at `archive` under `cifar-10-batches-bin/`, as the
/// official archive does; written atomically.
///
/// # Errors
/// [`CifarError::Io`] naming a file that cannot be read or the archive that cannot be written.
pub fn pack_archive(folder: &Path, archive: &Path) -> Result<()> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for name in TRAIN_FILES.iter().chain(std::iter::once(&TEST_FILE)) {
        let path = folder.join(name);
        let mut file = File::open(&path).map_err(|e| CifarError::io(&path, e))?;
        builder
            .append_file(Path::new(FOLDER_NAME).join(name), &mut file)
            .map_err(|e| CifarError::io(&path, e))?;
    }
    let bytes = builder.into_inner().and_then(GzEncoder::finish).map_err(|e| CifarError::io(archive, e))?;
    Ok(diem_em::io::write_atomic(archive, &bytes)?)
}

/// Where a CIFAR-10 binary data set lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CifarSource {
    /// An extracted folder holding the six `.bin` files.
    Folder(PathBuf),
    /// The `.tar.gz` archive.
    Archive(PathBuf),
}

impl CifarSource {
    /// Looks for the data set at `path`, in this order: `path` is a `.tar.gz` file; `path` holds
    /// `data_batch_1.bin`; `path/cifar-10-batches-bin/` holds it; `path/cifar-10-binary.tar.gz` exists.
    pub fn locate(path: &Path) -> Option<Self> {
        if path.is_file() {
            return Some(Self::Archive(path.to_path_buf()));
        }
        if path.join(TRAIN_FILES[0]).is_file() {
            return Some(Self::Folder(path.to_path_buf()));
        }
        let folder = path.join(FOLDER_NAME);
        if folder.join(TRAIN_FILES[0]).is_file() {
            return Some(Self::Folder(folder));
        }
        let archive = path.join(ARCHIVE_NAME);
        archive.is_file().then_some(Self::Archive(archive))
    }

    /// [`CifarSource::locate`], or an error that says where to put the files.
    ///
    /// # Errors
    /// [`CifarError::NotFound`] when nothing is found.
    pub fn find(path: &Path) -> Result<Self> {
        Self::locate(path).ok_or_else(|| CifarError::NotFound {
            dir: path.to_path_buf(),
            hint: format!(
                "put {ARCHIVE_NAME} (from {}) or its extracted folder {FOLDER_NAME}/ there, or pass --download",
                crate::download::CIFAR_URL
            ),
        })
    }

    /// The file or folder.
    pub fn path(&self) -> &Path {
        match self {
            Self::Folder(p) | Self::Archive(p) => p,
        }
    }

    /// Reads both splits.
    ///
    /// # Errors
    /// As [`read_folder`] or [`read_archive`].
    pub fn read(&self) -> Result<CifarData> {
        match self {
            Self::Folder(p) => read_folder(p),
            Self::Archive(p) => read_archive(p),
        }
    }
}
