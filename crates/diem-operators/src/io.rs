//! Observation files: `.npz` and `.safetensors` (docs/architecture.md "Files").
//!
//! An observation set is stored as named arrays:
//!
//! | field | dtype | shape |
//! | --- | --- | --- |
//! | `y` | float32 / float64 | `[N, ..y_shape]`, N ≥ 1 |
//! | `noise_std` | float32 / float64 | `[]` (isotropic) or `[1 or N, ..y_shape]` (per entry) |
//! | `operator` | the kind string (below) | |
//! | operator arrays | float (`mask`, `matrix`, `kernels`, `rows`, `cols`), int64 (`x_shape`, `boundary`) | per operator |
//!
//! The kind string (`"mask"`, `"compose[blur,downsample]"`, grammar in [`crate::params`]) is a uint8 array
//! of its UTF-8 bytes in `.npz` (numpy: `operator=np.frombuffer(b"mask", np.uint8)`, read back with
//! `bytes(f["operator"]).decode()`), and the `operator` entry of the header metadata in `.safetensors`.
//! Arrays keep their dtype, so a save/load round trip is exact. Loading checks every field (presence,
//! dtype, shape, finiteness, the kind, no unexpected arrays) and names the file and the field in its error.
//!
//! Reading never trusts a size the file declares: an `.npz` array's header must describe exactly the bytes
//! its entry holds before anything is allocated, and a `.safetensors` header is checked against the data
//! by the `safetensors` crate, so a truncated or forged file is an error, not an allocation failure. Only
//! regular files are read (a FIFO or a device is refused).
//!
//! Files are written to a temporary name in the same folder (`.name.tmp-PID`), synced and renamed. A
//! symbolic link is written through (its target is replaced, the link stays); a path that exists and is not
//! a regular file (a directory, a device such as `/dev/stdout`, a FIFO) is refused.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Cursor, Read, Seek, Write};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{NpzWriter, ReadNpyExt};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use crate::atomic::{file_type_name, write_atomic_with};
use crate::error::{Error, Result};
use crate::noise::NoiseCov;
use crate::observation::Observation;
use crate::operator::LinearOperator;
use crate::params::operator_from_params;

/// The reserved field names of an observation file.
const Y: &str = "y";
const NOISE: &str = "noise_std";
const OPERATOR: &str = "operator";

/// The two observation file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A numpy `.npz` archive (uncompressed, as `np.savez` writes it).
    Npz,
    /// A `.safetensors` file with the operator kind in its header metadata.
    Safetensors,
}

impl Format {
    /// The format named by `path`'s extension (`.npz` or `.safetensors`, any case).
    ///
    /// # Errors
    /// [`Error::Format`] for any other extension.
    pub fn of_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "npz" => Ok(Self::Npz),
            "safetensors" => Ok(Self::Safetensors),
            _ => Err(Error::Format {
                format: "observation file",
                reason: format!("unknown extension {ext:?}; expected .npz or .safetensors"),
            }),
        }
    }
}

/// Writes `obs` to `path` (`.npz` or `.safetensors`, by extension), atomically.
///
/// # Errors
/// [`Error::File`] naming `path`: an unknown extension, a path that is not a regular file, an IO error, or
/// an operator that cannot be read back ([`Error::NotPersistable`]: its kind is not a kind string, or a
/// custom kind has no loader registered with [`crate::register_operator`]).
pub fn save(obs: &Observation, path: &Path) -> Result<()> {
    let checked = crate::params::check_persistable(&obs.operator.kind(), &crate::registry::global_loader);
    let written = checked.and_then(|()| Format::of_path(path)).and_then(|format| match format {
        Format::Npz => write_atomic_with(path, |f| write_npz(obs, f)),
        Format::Safetensors => {
            let bytes = safetensors_bytes(obs)?;
            write_atomic_with(path, |f| Ok(f.write_all(&bytes)?))
        }
    });
    written.map_err(|e| e.in_file(path))
}

/// Reads an observation set from `path` (`.npz` or `.safetensors`, by extension) onto `device`.
///
/// # Errors
/// [`Error::File`] naming `path` and, for a field-level problem, the field.
pub fn load(path: &Path, device: Device) -> Result<Observation> {
    let read = Format::of_path(path).and_then(|format| {
        check_regular_input(path)?;
        let (kind, arrays) = match format {
            Format::Npz => read_npz(path)?,
            Format::Safetensors => read_safetensors(path)?,
        };
        from_arrays(&kind, arrays, device)
    });
    read.map_err(|e| e.in_file(path))
}

/// Reads an observation set from the bytes of a file in `format` (what [`load`] does after reading the
/// file; the fuzz targets call this).
///
/// # Errors
/// As [`load`], without the file's name.
pub fn load_bytes(bytes: &[u8], format: Format, device: Device) -> Result<Observation> {
    let (kind, arrays) = match format {
        Format::Npz => read_npz_from(Cursor::new(bytes))?,
        Format::Safetensors => read_safetensors_bytes(bytes)?,
    };
    from_arrays(&kind, arrays, device)
}

/// Refuses to read anything but a regular file (after following symbolic links): reading a FIFO would
/// block and reading a device such as `/dev/zero` would never end.
fn check_regular_input(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::Format {
            format: "observation file",
            reason: format!("not a regular file ({})", file_type_name(&meta)),
        });
    }
    Ok(())
}

/// All arrays of `obs` by name (y, noise_std and the operator's parameters), on the CPU.
fn named_arrays(obs: &Observation) -> Result<Vec<(String, Tensor)>> {
    let mut out = vec![
        (Y.to_string(), obs.y.to_device(Device::Cpu)),
        (NOISE.to_string(), obs.noise.std_array().to_device(Device::Cpu)),
    ];
    for (name, t) in obs.operator.params() {
        if [Y, NOISE, OPERATOR].contains(&name.as_str()) {
            return Err(Error::field(name, "operator parameter uses a reserved name"));
        }
        out.push((name, t.to_device(Device::Cpu)));
    }
    Ok(out)
}

/// Validates the arrays of a file and builds the observation.
fn from_arrays(kind: &str, mut arrays: BTreeMap<String, Tensor>, device: Device) -> Result<Observation> {
    let y = arrays.remove(Y).ok_or(Error::MissingField { field: Y.into() })?;
    check_float_field(Y, &y)?;
    if y.dim() < 2 {
        return Err(Error::field(
            Y,
            format!("expected [N, ..y_shape] (rank ≥ 2), found shape {:?}", y.size()),
        ));
    }
    let n = y.size()[0];
    if n == 0 {
        return Err(Error::field(Y, format!("holds no observations (shape {:?}, N = 0)", y.size())));
    }
    let std = arrays.remove(NOISE).ok_or(Error::MissingField { field: NOISE.into() })?;
    check_float_field(NOISE, &std)?;
    if std.numel() > 0 && std.lt(0.0).any().int64_value(&[]) != 0 {
        return Err(Error::field(NOISE, "standard deviations must be ≥ 0"));
    }
    let noise = if std.dim() == 0 || (std.dim() == 1 && std.numel() == 1) {
        NoiseCov::isotropic(std.reshape([1]).double_value(&[0]))?
    } else {
        let s = std.size();
        if s.len() != y.dim() || s[1..] != y.size()[1..] || (s[0] != 1 && s[0] != n) {
            return Err(Error::field(
                NOISE,
                format!("expected a scalar or shape [1 or {n}, {:?}], found {s:?}", &y.size()[1..]),
            ));
        }
        NoiseCov::diagonal(std)?
    };
    let operator = operator_from_params(kind, &arrays)?;
    let expected: BTreeMap<String, Tensor> = operator.params().into_iter().collect();
    if let Some(extra) = arrays.keys().find(|k| !expected.contains_key(*k)) {
        return Err(Error::field(extra.clone(), format!("unexpected array for operator {kind:?}")));
    }
    if y.size()[1..] != operator.y_shape() || (operator.batch() != 1 && operator.batch() != n) {
        return Err(Error::field(
            Y,
            format!(
                "shape {:?} does not fit operator {kind:?}: expected [N, {}] with N = {}",
                y.size(),
                operator.y_shape().iter().map(i64::to_string).collect::<Vec<_>>().join(", "),
                operator.batch()
            ),
        ));
    }
    check_operator_finite(kind, &*operator)?;
    let y = y.to_device(device);
    Observation::new(y, operator, noise)
}

/// Refuses an operator whose finite parameters are so large that applying it (or its adjoint) to an input of
/// ones overflows float32, the dtype every sampler computes in: its posterior samples could only be NaN.
/// Applied in chunks of at most 4 Mi entries.
fn check_operator_finite(kind: &str, operator: &dyn LinearOperator) -> Result<()> {
    let _guard = tch::no_grad_guard();
    let batch = operator.batch();
    let per = operator.x_numel().max(operator.y_numel()).max(1);
    let chunk = ((1i64 << 22) / per).clamp(1, batch.max(1));
    let mut start = 0;
    while start < batch {
        let len = chunk.min(batch - start);
        let op = operator.narrow(start, len);
        let ones = |shape: Vec<i64>| {
            let mut full = vec![len];
            full.extend(shape);
            Tensor::ones(full.as_slice(), (Kind::Float, op.device()))
        };
        let finite = |t: Tensor| t.isfinite().all().int64_value(&[]) != 0;
        if !finite(op.apply(&ones(op.x_shape()))) || !finite(op.adjoint(&ones(op.y_shape()))) {
            return Err(Error::field(
                OPERATOR,
                format!(
                    "{kind:?}: applying it (or its adjoint) to an input of ones overflows float32 (parameter \
                     sets {start}..{}): its parameters are too large",
                    start + len
                ),
            ));
        }
        start += len;
    }
    Ok(())
}

fn check_float_field(name: &str, t: &Tensor) -> Result<()> {
    if !matches!(t.kind(), Kind::Float | Kind::Double) {
        return Err(Error::field(
            name,
            format!("expected float32 or float64, found {}", dtype_name(t.kind())),
        ));
    }
    if t.numel() > 0 && t.isfinite().all().int64_value(&[]) == 0 {
        return Err(Error::field(name, "contains NaN or infinite entries"));
    }
    Ok(())
}

/// The numpy name of a tensor dtype (`float32`, `int64`, ...), as every message of this crate spells it.
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        Kind::Int64 => "int64",
        Kind::Int => "int32",
        Kind::Int16 => "int16",
        Kind::Int8 => "int8",
        Kind::Uint8 => "uint8",
        Kind::Bool => "bool",
        _ => "an unsupported dtype",
    }
}

// ── npy headers ─────────────────────────────────────────────────────────────────────────────────────

/// What an `.npy` header declares (numpy format versions 1–3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The dtype descriptor, e.g. `"<f4"`, `"|u1"`.
    pub descr: String,
    /// Whether the data are stored column-major.
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// The length of the header, magic string included: the data start at this offset.
    pub header_len: usize,
}

impl NpyHeader {
    /// The size in bytes of one element, for a dtype diem reads ([`NpyHeader::dtype`]).
    pub fn item_size(&self) -> Option<usize> {
        Some(match self.dtype()? {
            "float64" | "int64" => 8,
            "float32" | "int32" => 4,
            _ => 1,
        })
    }

    /// The number of data bytes the header declares (`None` on overflow or an unknown descriptor).
    pub fn data_len(&self) -> Option<u64> {
        let item = self.item_size()? as u64;
        self.shape.iter().try_fold(item, |acc, &d| acc.checked_mul(d as u64))
    }

    /// The numpy dtype name of the descriptor, when diem reads it (`float32`, `float64`, `int64`, `int32`,
    /// `uint8`, `bool`).
    pub fn dtype(&self) -> Option<&'static str> {
        let (order, code) = (self.descr.get(..1)?, self.descr.get(1..)?);
        if !matches!(order, "<" | ">" | "|" | "=") {
            return None;
        }
        Some(match code {
            "f4" => "float32",
            "f8" => "float64",
            "i8" => "int64",
            "i4" => "int32",
            "u1" => "uint8",
            "b1" => "bool",
            _ => return None,
        })
    }
}

/// Parses the header at the start of an `.npy` stream.
///
/// # Errors
/// [`Error::Format`] (`"npy"`) for a bad magic string, version or header dictionary.
pub fn read_npy_header(reader: &mut impl Read) -> Result<NpyHeader> {
    let bad = |reason: String| Error::Format { format: "npy", reason };
    let mut start = [0u8; 8];
    reader.read_exact(&mut start).map_err(|e| bad(format!("no header: {e}")))?;
    if &start[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy array (bad magic string)".into()));
    }
    let (len_bytes, text_len) = match start[6] {
        1 => {
            let mut b = [0u8; 2];
            reader.read_exact(&mut b).map_err(|e| bad(format!("truncated header: {e}")))?;
            (2, u16::from_le_bytes(b) as usize)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            reader.read_exact(&mut b).map_err(|e| bad(format!("truncated header: {e}")))?;
            (4, u32::from_le_bytes(b) as usize)
        }
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    if text_len > 1 << 20 {
        return Err(bad(format!("header of {text_len} bytes is implausibly long")));
    }
    let mut text = vec![0u8; text_len];
    reader.read_exact(&mut text).map_err(|e| bad(format!("truncated header: {e}")))?;
    let text = String::from_utf8(text).map_err(|_| bad("header is not UTF-8".into()))?;
    let field = |key: &str| -> Result<&str> {
        let at = text
            .find(&format!("'{key}'"))
            .or_else(|| text.find(&format!("\"{key}\"")))
            .ok_or_else(|| bad(format!("header has no '{key}'")))?;
        let rest = &text[at + key.len() + 2..];
        let colon = rest.find(':').ok_or_else(|| bad(format!("header: no value for '{key}'")))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = {
        let v = field("descr")?;
        let quote = v.chars().next().filter(|c| *c == '\'' || *c == '"');
        let quote = quote.ok_or_else(|| bad("header: 'descr' is not a plain dtype string".into()))?;
        let end = v[1..].find(quote).ok_or_else(|| bad("header: unterminated 'descr'".into()))?;
        v[1..1 + end].to_string()
    };
    let fortran_order = {
        let v = field("fortran_order")?;
        if v.starts_with("True") {
            true
        } else if v.starts_with("False") {
            false
        } else {
            return Err(bad("header: 'fortran_order' is neither True nor False".into()));
        }
    };
    let shape = {
        let v = field("shape")?;
        let v = v.strip_prefix('(').ok_or_else(|| bad("header: 'shape' is not a tuple".into()))?;
        let end = v.find(')').ok_or_else(|| bad("header: unterminated 'shape'".into()))?;
        v[..end]
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('L').parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| bad(format!("header: bad 'shape' {:?}", &v[..end])))?
    };
    Ok(NpyHeader { descr, fortran_order, shape, header_len: 8 + len_bytes + text_len })
}

// ── npz ─────────────────────────────────────────────────────────────────────────────────────────────

fn npz_err(e: impl std::fmt::Display) -> Error {
    Error::Format { format: "npz", reason: e.to_string() }
}

fn to_array<T: tch::kind::Element + Copy>(t: &Tensor) -> Result<ArrayD<T>> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let v = Vec::<T>::try_from(&t.reshape([-1]))?;
    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(npz_err)
}

fn from_array<T: tch::kind::Element + Copy>(a: ArrayD<T>) -> Result<Tensor> {
    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    let v: Vec<T> = a.iter().copied().collect();
    Ok(Tensor::from_slice(&v).f_reshape(&shape)?)
}

/// Writes `obs` as an `.npz` archive into `file`.
fn write_npz(obs: &Observation, file: &mut File) -> Result<()> {
    {
        let mut npz = NpzWriter::new(BufWriter::new(file));
        for (name, t) in named_arrays(obs)? {
            let err =
                |e: ndarray_npy::WriteNpzError| Error::field(name.clone(), format!("npz write failed: {e}"));
            match t.kind() {
                Kind::Float => npz.add_array(name.as_str(), &to_array::<f32>(&t)?).map_err(err)?,
                Kind::Double => npz.add_array(name.as_str(), &to_array::<f64>(&t)?).map_err(err)?,
                Kind::Int64 => npz.add_array(name.as_str(), &to_array::<i64>(&t)?).map_err(err)?,
                other => return Err(Error::field(name, format!("cannot write dtype {}", dtype_name(other)))),
            }
        }
        let kind = obs.operator.kind();
        let bytes = ndarray::Array1::from(kind.into_bytes());
        npz.add_array(OPERATOR, &bytes)
            .map_err(|e| Error::field(OPERATOR, format!("npz write failed: {e}")))?;
        npz.finish().map_err(npz_err)?.flush()?;
    }
    Ok(())
}

/// Reads the data of one `.npy` entry of `declared` bytes whose header (already read) is `header`, after
/// checking that the header describes exactly those bytes.
fn read_entry_data(entry: &mut impl Read, name: &str, header: &NpyHeader, declared: u64) -> Result<Vec<u8>> {
    let data_len =
        header.data_len().ok_or_else(|| Error::field(name, format!("shape {:?} overflows", header.shape)))?;
    if header.header_len as u64 + data_len != declared {
        return Err(Error::field(
            name,
            format!(
                "the header declares shape {:?} of {} ({data_len} data bytes) but the entry holds {} \
                 (truncated or corrupt file)",
                header.shape,
                header.dtype().unwrap_or("?"),
                declared.saturating_sub(header.header_len as u64)
            ),
        ));
    }
    let mut bytes = Vec::new();
    entry.take(data_len).read_to_end(&mut bytes).map_err(|e| Error::field(name, e.to_string()))?;
    if bytes.len() as u64 != data_len {
        return Err(Error::field(name, "truncated data".to_string()));
    }
    Ok(bytes)
}

/// The error for an array of a dtype diem does not read.
fn unsupported_dtype(name: &str, header: &NpyHeader) -> Error {
    Error::field(
        name,
        format!(
            "unsupported dtype {:?} (expected float32, float64, int64, int32, uint8 or bool)",
            header.descr
        ),
    )
}

/// Parses `.npy` bytes (header and data, sizes already checked) into a tensor of the declared dtype.
fn parse_npy(name: &str, header: &NpyHeader, npy: &[u8]) -> Result<Tensor> {
    let fail = |e: ndarray_npy::ReadNpyError| Error::field(name, format!("unreadable array: {e}"));
    let t = match header.dtype() {
        Some("float32") => from_array(ArrayD::<f32>::read_npy(npy).map_err(fail)?)?,
        Some("float64") => from_array(ArrayD::<f64>::read_npy(npy).map_err(fail)?)?,
        Some("int64") => from_array(ArrayD::<i64>::read_npy(npy).map_err(fail)?)?,
        Some("int32") => from_array(ArrayD::<i32>::read_npy(npy).map_err(fail)?)?,
        Some("uint8") => from_array(ArrayD::<u8>::read_npy(npy).map_err(fail)?)?,
        Some("bool") => from_array(ArrayD::<bool>::read_npy(npy).map_err(fail)?)?,
        _ => return Err(unsupported_dtype(name, header)),
    };
    Ok(t)
}

/// Reads every array of an `.npz` file; returns the operator kind and the other arrays.
///
/// # Errors
/// [`Error::Io`], [`Error::Format`] for a bad archive, [`Error::Field`] naming a bad array.
pub fn read_npz(path: &Path) -> Result<(String, BTreeMap<String, Tensor>)> {
    read_npz_from(BufReader::new(File::open(path)?))
}

/// [`read_npz`] from any seekable reader (an in-memory file, for the fuzz targets).
///
/// # Errors
/// As [`read_npz`].
pub fn read_npz_from(reader: impl Read + Seek) -> Result<(String, BTreeMap<String, Tensor>)> {
    let mut zip = zip::ZipArchive::new(reader).map_err(npz_err)?;
    let mut kind = None;
    let mut arrays = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(npz_err)?;
        let file_name = entry.name().to_string();
        let name = file_name
            .strip_suffix(".npy")
            .ok_or_else(|| npz_err(format!("entry {file_name:?} is not an .npy array")))?
            .to_string();
        if kind.is_some() && name == OPERATOR || arrays.contains_key(&name) {
            return Err(Error::field(name, "appears twice in the archive"));
        }
        let declared = entry.size();
        let header = read_npy_header(&mut entry).map_err(|e| Error::field(name.clone(), e.to_string()))?;
        if name == OPERATOR {
            if header.dtype() != Some("uint8") || header.shape.len() != 1 {
                return Err(Error::field(
                    OPERATOR,
                    format!(
                        "expected the kind string as a 1-D uint8 array of UTF-8 bytes \
                         (np.frombuffer(b\"mask\", np.uint8)), found dtype {:?} of shape {:?}",
                        header.descr, header.shape
                    ),
                ));
            }
            let bytes = read_entry_data(&mut entry, OPERATOR, &header, declared)?;
            let s =
                String::from_utf8(bytes).map_err(|e| Error::field(OPERATOR, format!("not UTF-8: {e}")))?;
            kind = Some(s);
        } else {
            if header.dtype().is_none() {
                return Err(unsupported_dtype(&name, &header));
            }
            let data = read_entry_data(&mut entry, &name, &header, declared)?;
            let mut npy = npy_prefix(&header);
            let offset = npy.len();
            npy.extend(data);
            let npy_header = NpyHeader { header_len: offset, ..header };
            arrays.insert(name.clone(), parse_npy(&name, &npy_header, &npy)?);
        }
    }
    let kind = kind.ok_or(Error::MissingField { field: OPERATOR.into() })?;
    Ok((kind, arrays))
}

/// A canonical version-1 (or 2, for a long header) `.npy` header for `header`'s dtype and shape, so the
/// checked data can be handed to `ndarray-npy` without re-reading the entry.
fn npy_prefix(header: &NpyHeader) -> Vec<u8> {
    let shape = match header.shape.len() {
        1 => format!("({},)", header.shape[0]),
        _ => format!("({})", header.shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let order = if header.fortran_order { "True" } else { "False" };
    let mut dict = format!("{{'descr': '{}', 'fortran_order': {order}, 'shape': {shape}, }}", header.descr);
    let v1 = dict.len() + 64 < u16::MAX as usize;
    let fixed = if v1 { 10 } else { 12 };
    while (fixed + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    if v1 {
        out.extend([1u8, 0]);
        out.extend((dict.len() as u16).to_le_bytes());
    } else {
        out.extend([2u8, 0]);
        out.extend((dict.len() as u32).to_le_bytes());
    }
    out.extend(dict.into_bytes());
    out
}

// ── safetensors ─────────────────────────────────────────────────────────────────────────────────────

fn st_err(e: impl std::fmt::Display) -> Error {
    Error::Format { format: "safetensors", reason: e.to_string() }
}

fn tensor_bytes(t: &Tensor) -> Result<(Dtype, Vec<u8>)> {
    let flat = t.reshape([-1]);
    Ok(match t.kind() {
        Kind::Float => {
            (Dtype::F32, Vec::<f32>::try_from(&flat)?.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        Kind::Double => {
            (Dtype::F64, Vec::<f64>::try_from(&flat)?.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        Kind::Int64 => {
            (Dtype::I64, Vec::<i64>::try_from(&flat)?.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        other => return Err(Error::field("?", format!("cannot write dtype {}", dtype_name(other)))),
    })
}

/// The `.safetensors` bytes of `obs`.
fn safetensors_bytes(obs: &Observation) -> Result<Vec<u8>> {
    let arrays = named_arrays(obs)?;
    let mut buffers = Vec::with_capacity(arrays.len());
    for (name, t) in &arrays {
        let (dtype, bytes) = tensor_bytes(t).map_err(|e| match e {
            Error::Field { reason, .. } => Error::field(name.clone(), reason),
            other => other,
        })?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), dtype, shape, bytes));
    }
    let mut views = Vec::with_capacity(buffers.len());
    for (name, dtype, shape, bytes) in &buffers {
        views.push((name.clone(), TensorView::new(*dtype, shape.clone(), bytes).map_err(st_err)?));
    }
    let meta: HashMap<String, String> = [(OPERATOR.to_string(), obs.operator.kind())].into_iter().collect();
    safetensors::serialize(views, &Some(meta)).map_err(st_err)
}

/// Reads every tensor of a `.safetensors` file; returns the operator kind (header metadata `operator`)
/// and the arrays.
///
/// # Errors
/// [`Error::Io`], [`Error::Format`] for a bad header, [`Error::Field`] naming a bad tensor.
pub fn read_safetensors(path: &Path) -> Result<(String, BTreeMap<String, Tensor>)> {
    read_safetensors_bytes(&std::fs::read(path)?)
}

/// [`read_safetensors`] from the file's bytes.
///
/// # Errors
/// As [`read_safetensors`].
pub fn read_safetensors_bytes(bytes: &[u8]) -> Result<(String, BTreeMap<String, Tensor>)> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
    let kind = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(OPERATOR).cloned())
        .ok_or(Error::MissingField { field: format!("__metadata__.{OPERATOR}") })?;
    let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
    let mut arrays = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let data = view.data();
        let t = match view.dtype() {
            Dtype::F32 => Tensor::from_slice(
                &data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<_>>(),
            ),
            Dtype::F64 => Tensor::from_slice(
                &data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect::<Vec<_>>(),
            ),
            Dtype::I64 => Tensor::from_slice(
                &data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect::<Vec<_>>(),
            ),
            Dtype::I32 => Tensor::from_slice(
                &data
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<_>>(),
            ),
            Dtype::U8 => Tensor::from_slice(data),
            other => {
                return Err(Error::field(
                    name,
                    format!(
                        "unsupported dtype {} (expected float32, float64, int64, int32 or uint8)",
                        safetensors_dtype_name(other)
                    ),
                ))
            }
        };
        let t = t.f_reshape(&shape).map_err(|e| Error::field(name.clone(), e.to_string()))?;
        arrays.insert(name, t);
    }
    Ok((kind, arrays))
}

/// The numpy-style name of a safetensors dtype.
fn safetensors_dtype_name(d: Dtype) -> String {
    match d {
        Dtype::BOOL => "bool".into(),
        Dtype::U8 => "uint8".into(),
        Dtype::I8 => "int8".into(),
        Dtype::I16 => "int16".into(),
        Dtype::U16 => "uint16".into(),
        Dtype::F16 => "float16".into(),
        Dtype::BF16 => "bfloat16".into(),
        Dtype::I32 => "int32".into(),
        Dtype::U32 => "uint32".into(),
        Dtype::F32 => "float32".into(),
        Dtype::F64 => "float64".into(),
        Dtype::I64 => "int64".into(),
        Dtype::U64 => "uint64".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_round_trip_through_the_canonical_prefix() {
        for shape in [vec![], vec![3], vec![2, 5, 7]] {
            let h = NpyHeader { descr: "<f4".into(), fortran_order: false, shape, header_len: 0 };
            let bytes = npy_prefix(&h);
            assert_eq!(bytes.len() % 64, 0);
            let back = read_npy_header(&mut bytes.as_slice()).expect("parses");
            assert_eq!((back.descr, back.shape, back.header_len), (h.descr, h.shape, bytes.len()));
        }
    }
}
