//! Observation files: `.npz` and `.safetensors` (DESIGN.md "Files").
//!
//! An observation set is stored as named arrays:
//!
//! | field | dtype | shape |
//! | --- | --- | --- |
//! | `y` | float32 / float64 | `[N, ..y_shape]` |
//! | `noise_std` | float32 / float64 | `[]` (isotropic) or `[1 or N, ..y_shape]` (per entry) |
//! | `operator` | the kind string (below) | |
//! | operator arrays | float (`mask`, `matrix`, `kernels`, `rows`, `cols`), int64 (`x_shape`, `boundary`) | per operator |
//!
//! The kind string (`"mask"`, `"compose[blur,downsample]"`, grammar in [`crate::params`]) is a uint8 array
//! of its UTF-8 bytes in `.npz` (numpy: `operator=np.frombuffer(b"mask", np.uint8)`, read back with
//! `bytes(f["operator"]).decode()`), and the `operator` entry of the header metadata in `.safetensors`.
//! Arrays keep their dtype, so a save/load round trip is exact. Loading checks every field (presence,
//! dtype, shape, finiteness, the kind, no unexpected arrays) and names the file and the field in its error.
//! Files are written to a temporary name in the same folder and renamed.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{NpzReader, NpzWriter};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::noise::NoiseCov;
use crate::observation::Observation;
use crate::params::operator_from_params;

/// The reserved field names of an observation file.
const Y: &str = "y";
const NOISE: &str = "noise_std";
const OPERATOR: &str = "operator";

/// Writes `obs` to `path` (`.npz` or `.safetensors`, by extension).
pub fn save(obs: &Observation, path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tmp = temp_path(path);
    let written = match ext {
        "npz" => write_npz(obs, &tmp),
        "safetensors" => write_safetensors(obs, &tmp),
        _ => Err(Error::Format {
            format: "observation file",
            reason: format!("unknown extension {ext:?}; expected .npz or .safetensors"),
        }),
    };
    let done = written.and_then(|()| std::fs::rename(&tmp, path).map_err(Error::from));
    if done.is_err() {
        // Best effort: the temporary file is useless after a failure.
        let _ = std::fs::remove_file(&tmp);
    }
    done.map_err(|e| e.in_file(path))
}

/// Reads an observation set from `path` (`.npz` or `.safetensors`, by extension) onto `device`.
pub fn load(path: &Path, device: Device) -> Result<Observation> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let read = match ext {
        "npz" => read_npz(path),
        "safetensors" => read_safetensors(path),
        _ => Err(Error::Format {
            format: "observation file",
            reason: format!("unknown extension {ext:?}; expected .npz or .safetensors"),
        }),
    };
    read.and_then(|(kind, arrays)| from_arrays(&kind, arrays, device)).map_err(|e| e.in_file(path))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
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
    let std = arrays.remove(NOISE).ok_or(Error::MissingField { field: NOISE.into() })?;
    check_float_field(NOISE, &std)?;
    if std.numel() > 0 && std.lt(0.0).any().int64_value(&[]) != 0 {
        return Err(Error::field(NOISE, "standard deviations must be ≥ 0"));
    }
    let noise = if std.dim() == 0 || (std.dim() == 1 && std.numel() == 1) {
        NoiseCov::isotropic(std.reshape([1]).double_value(&[0]))?
    } else {
        let n = y.size()[0];
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
    let n = y.size()[0];
    if y.size()[1..] != operator.y_shape() || (operator.batch() != 1 && operator.batch() != n) {
        return Err(Error::field(
            Y,
            format!(
                "shape {:?} does not fit operator {kind:?}: expected [N, {:?}] with N = {}",
                y.size(),
                operator.y_shape(),
                operator.batch()
            ),
        ));
    }
    let y = y.to_device(device);
    Observation::new(y, operator, noise)
}

fn check_float_field(name: &str, t: &Tensor) -> Result<()> {
    if !matches!(t.kind(), Kind::Float | Kind::Double) {
        return Err(Error::field(
            name,
            format!("expected float32 or float64, found {}", kind_name(t.kind())),
        ));
    }
    if t.numel() > 0 && t.isfinite().all().int64_value(&[]) == 0 {
        return Err(Error::field(name, "contains NaN or infinite entries"));
    }
    Ok(())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::Int64 => "int64",
        Kind::Int => "int32",
        Kind::Uint8 => "uint8",
        Kind::Bool => "bool",
        _ => "an unsupported dtype",
    }
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

fn from_array<T: tch::kind::Element + Copy>(a: ArrayD<T>) -> Tensor {
    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    let v: Vec<T> = a.iter().copied().collect();
    Tensor::from_slice(&v).reshape(&shape)
}

fn write_npz(obs: &Observation, path: &Path) -> Result<()> {
    let mut npz = NpzWriter::new(BufWriter::new(File::create(path)?));
    for (name, t) in named_arrays(obs)? {
        let err =
            |e: ndarray_npy::WriteNpzError| Error::field(name.clone(), format!("npz write failed: {e}"));
        match t.kind() {
            Kind::Float => npz.add_array(name.as_str(), &to_array::<f32>(&t)?).map_err(err)?,
            Kind::Double => npz.add_array(name.as_str(), &to_array::<f64>(&t)?).map_err(err)?,
            Kind::Int64 => npz.add_array(name.as_str(), &to_array::<i64>(&t)?).map_err(err)?,
            other => return Err(Error::field(name, format!("cannot write dtype {other:?}"))),
        }
    }
    let kind = obs.operator.kind();
    let bytes = ndarray::Array1::from(kind.into_bytes());
    npz.add_array(OPERATOR, &bytes).map_err(|e| Error::field(OPERATOR, format!("npz write failed: {e}")))?;
    npz.finish().map_err(npz_err)?;
    Ok(())
}

/// Reads one array in whichever of float32, float64, int64, int32, uint8, bool it is stored.
fn read_any(npz: &mut NpzReader<File>, name: &str) -> Result<Tensor> {
    let first = match npz.by_name::<ndarray::OwnedRepr<f32>, IxDyn>(name) {
        Ok(a) => return Ok(from_array(a)),
        Err(e) => e,
    };
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, IxDyn>(name) {
        return Ok(from_array(a));
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i64>, IxDyn>(name) {
        return Ok(from_array(a));
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i32>, IxDyn>(name) {
        return Ok(from_array(a));
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<u8>, IxDyn>(name) {
        return Ok(from_array(a));
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<bool>, IxDyn>(name) {
        return Ok(from_array(a));
    }
    Err(Error::field(name, format!("unsupported dtype or unreadable array ({first})")))
}

/// Reads every array of an `.npz` file; returns the operator kind and the other arrays.
pub fn read_npz(path: &Path) -> Result<(String, BTreeMap<String, Tensor>)> {
    let mut npz = NpzReader::new(File::open(path)?).map_err(npz_err)?;
    let names = npz.names().map_err(npz_err)?;
    let mut kind = None;
    let mut arrays = BTreeMap::new();
    for name in names {
        if name == OPERATOR {
            let bytes = npz.by_name::<ndarray::OwnedRepr<u8>, IxDyn>(OPERATOR).map_err(|e| {
                Error::field(
                    OPERATOR,
                    format!("expected the kind string as a uint8 array of UTF-8 bytes (np.frombuffer(b\"mask\", np.uint8)): {e}"),
                )
            })?;
            let s = String::from_utf8(bytes.iter().copied().collect())
                .map_err(|e| Error::field(OPERATOR, format!("not UTF-8: {e}")))?;
            kind = Some(s);
        } else {
            let t = read_any(&mut npz, &name)?;
            arrays.insert(name, t);
        }
    }
    let kind = kind.ok_or(Error::MissingField { field: OPERATOR.into() })?;
    Ok((kind, arrays))
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
        other => return Err(Error::field("?", format!("cannot write dtype {other:?}"))),
    })
}

fn write_safetensors(obs: &Observation, path: &Path) -> Result<()> {
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
    safetensors::serialize_to_file(views, &Some(meta), path).map_err(st_err)
}

/// Reads every tensor of a `.safetensors` file; returns the operator kind (header metadata `operator`)
/// and the arrays.
pub fn read_safetensors(path: &Path) -> Result<(String, BTreeMap<String, Tensor>)> {
    let bytes = std::fs::read(path)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(st_err)?;
    let kind = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(OPERATOR).cloned())
        .ok_or(Error::MissingField { field: format!("__metadata__.{OPERATOR}") })?;
    let st = SafeTensors::deserialize(&bytes).map_err(st_err)?;
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
            other => return Err(Error::field(name, format!("unsupported dtype {other:?}"))),
        };
        arrays.insert(name, t.reshape(&shape));
    }
    Ok((kind, arrays))
}
