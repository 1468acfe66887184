//! Checkpoints of a [`PriorModel`] (docs/architecture.md "Files"): a directory with
//!
//! - `config.json`: [`CheckpointConfig`] (versioned; unknown keys are rejected);
//! - `weights.safetensors`: every network variable by name, plus the prior mean `μ_x` as `prior_mean`;
//! - `ema.safetensors` (optional): the EMA of the weights, same names.
//!
//! Every file is written to a temporary name in the same directory (`.name.tmp-PID`), synced and renamed, so
//! an interrupted save leaves the previous checkpoint intact. `config.json` is written last. Tensors are
//! stored as raw little-endian f32/f64, so a round trip is bit-exact.
//!
//! Non-finite values (NaN, ±∞) are refused both ways: a model whose training diverged is not saved, and a
//! file whose weights were corrupted to NaN does not load (the error names the file and the tensor), so
//! nothing downstream silently samples NaN.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub use diem_operators::atomic::{file_type_name, is_temp_file, read_regular, temp_path, write_target};
pub use diem_operators::io::dtype_name;

use crate::error::{Error, Result};
use crate::network::{ModelFactory, NetworkConfig, PriorModel};
use crate::schedule::VeSchedule;
use crate::train::Ema;

/// The checkpoint format version this crate reads and writes.
pub const CHECKPOINT_VERSION: u32 = 1;
/// The configuration file's name.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file's name.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The EMA weights file's name.
pub const EMA_FILE: &str = "ema.safetensors";
/// The name of the prior mean `μ_x` inside the weights file.
pub const MEAN_KEY: &str = "prior_mean";

/// The content of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Must equal [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// The network's architecture.
    pub network: NetworkConfig,
    /// The noise schedule the model was trained with (samplers use its σ_min, σ_max).
    pub schedule: VeSchedule,
    /// Shape of the prior mean `μ_x` stored as [`MEAN_KEY`], if the model carries one.
    pub mean_shape: Option<Vec<i64>>,
    /// The EMA decay, when `ema.safetensors` is present.
    pub ema_decay: Option<f64>,
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename ([`write_atomic_with`]).
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Writes `path` atomically (`diem_operators::atomic`): `write` fills `.name.tmp-PID` in the same directory,
/// which is synced and renamed over `path`, so a kill leaves either the old file or the new one (and at most
/// a stale temporary file, which [`is_temp_file`] recognizes). A symbolic link at `path` is written through;
/// a `path` that exists and is not a regular file is refused rather than replaced.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    diem_operators::atomic::write_atomic_with(path, write)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// The number of non-finite entries of a float tensor (0 for other dtypes).
fn non_finite(t: &Tensor) -> i64 {
    if t.numel() == 0 || !t.is_floating_point() {
        return 0;
    }
    t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[])
}

/// The error for a tensor holding NaN or ±∞.
fn non_finite_error(path: &Path, name: &str, t: &Tensor, bad: i64, doing: &str) -> Error {
    Error::Weights {
        path: path.into(),
        name: name.into(),
        reason: format!("{bad} of {} entries are NaN or infinite; {doing}", t.numel()),
    }
}

/// Serializes named tensors (f32 or f64, any device, finite) to safetensors bytes.
///
/// # Errors
/// [`Error::Weights`] for another dtype or a tensor with NaN or infinite entries (a diverged model is not
/// saved over a good one); [`Error::Torch`] if a tensor cannot be read.
pub fn tensors_to_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let bad = non_finite(&t);
        if bad > 0 {
            return Err(non_finite_error(path, name, &t, bad, "refusing to save them (training diverged?)"));
        }
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let (dtype, bytes) = match t.kind() {
            Kind::Float => {
                let v = Vec::<f32>::try_from(t.flatten(0, -1))?;
                (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            Kind::Double => {
                let v = Vec::<f64>::try_from(t.flatten(0, -1))?;
                (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            other => {
                return Err(Error::Weights {
                    path: path.into(),
                    name: name.clone(),
                    reason: format!("dtype {} is not supported (float32 or float64)", dtype_name(other)),
                })
            }
        };
        data.push((name.clone(), dtype, shape, bytes));
    }
    let views = data
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)).map_err(|e| Error::Weights {
                path: path.into(),
                name: n.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &None).map_err(|e| Error::Weights {
        path: path.into(),
        name: String::new(),
        reason: e.to_string(),
    })
}

/// Reads every tensor of a safetensors file onto `device`, by name.
///
/// # Errors
/// [`Error::Io`] or [`Error::Weights`] naming the file (and the tensor), also for a tensor with NaN or
/// infinite entries.
pub fn read_safetensors(path: &Path, device: Device) -> Result<BTreeMap<String, Tensor>> {
    let bytes = read_regular(path).map_err(|source| Error::Io { path: path.into(), source })?;
    safetensors_from_bytes(path, &bytes, device)
}

/// [`read_safetensors`] on the bytes of the file `path` (named in errors only).
///
/// # Errors
/// As [`read_safetensors`].
pub fn safetensors_from_bytes(path: &Path, bytes: &[u8], device: Device) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
        path: path.into(),
        name: String::new(),
        reason: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = match view.dtype() {
            Dtype::F32 => {
                let v: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Tensor::from_slice(&v)
            }
            Dtype::F64 => {
                let v: Vec<f64> = view
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                Tensor::from_slice(&v)
            }
            other => {
                return Err(Error::Weights {
                    path: path.into(),
                    name,
                    reason: format!(
                        "dtype {} is not supported (float32 or float64)",
                        format!("{other:?}").to_lowercase()
                    ),
                })
            }
        };
        let bad = non_finite(&t);
        if bad > 0 {
            return Err(non_finite_error(path, &name, &t, bad, "the file is corrupt or the model diverged"));
        }
        let t = t.f_reshape(shape).map_err(|e| Error::Weights {
            path: path.into(),
            name: name.clone(),
            reason: e.to_string(),
        })?;
        out.insert(name, t.to_device(device));
    }
    Ok(out)
}

/// Takes `name` out of `tensors`, checking its shape and kind.
fn take_checked(
    path: &Path,
    tensors: &mut BTreeMap<String, Tensor>,
    name: &str,
    shape: &[i64],
    kind: Kind,
) -> Result<Tensor> {
    let err = |reason: String| Error::Weights { path: path.into(), name: name.into(), reason };
    let t = tensors.remove(name).ok_or_else(|| err("missing from the file".into()))?;
    if t.size() != shape {
        return Err(err(format!("shape {:?} in the file, the model expects {shape:?}", t.size())));
    }
    if t.kind() != kind {
        return Err(err(format!(
            "dtype {} in the file, the model expects {}",
            dtype_name(t.kind()),
            dtype_name(kind)
        )));
    }
    Ok(t)
}

/// Fails on tensors left over after every expected name was taken.
fn reject_unknown(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    match tensors.keys().next() {
        Some(name) => Err(Error::Weights {
            path: path.into(),
            name: name.clone(),
            reason: "unknown tensor: the model has no variable of this name".into(),
        }),
        None => Ok(()),
    }
}

/// Saves `model` (and `ema`, if given) into the directory `dir`, creating it if needed.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written.
pub fn save(dir: &Path, model: &PriorModel, ema: Option<&Ema>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    let mut named = model.named_variables();
    let mean = model.mean();
    if let Some(m) = mean {
        named.push((MEAN_KEY.to_string(), m.shallow_clone()));
    }
    let weights = dir.join(WEIGHTS_FILE);
    write_atomic(&weights, &tensors_to_safetensors(&weights, &named)?)?;
    if let Some(ema) = ema {
        let path = dir.join(EMA_FILE);
        write_atomic(&path, &tensors_to_safetensors(&path, &ema.tensors())?)?;
    }
    let config = CheckpointConfig {
        version: CHECKPOINT_VERSION,
        network: model.config().clone(),
        schedule: model.schedule(),
        mean_shape: mean.map(|m| m.size()),
        ema_decay: ema.map(|e| e.decay()),
    };
    let path = dir.join(CONFIG_FILE);
    let json =
        serde_json::to_vec_pretty(&config).map_err(|source| Error::Json { path: path.clone(), source })?;
    write_atomic(&path, &json)
}

/// Reads and checks `dir/config.json`.
///
/// # Errors
/// [`Error::Io`], [`Error::Json`] (naming the unknown, missing or mistyped field) or [`Error::Version`],
/// each with the file's path; [`Error::Config`] for invalid values.
pub fn load_config(dir: &Path) -> Result<CheckpointConfig> {
    let path: PathBuf = dir.join(CONFIG_FILE);
    let bytes = read_regular(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    // Check the version first, so that a future format gets a version error rather than a field error.
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| Error::Json { path: path.clone(), source })?;
    if let Some(found) = value.get("version").and_then(serde_json::Value::as_u64) {
        if found != u64::from(CHECKPOINT_VERSION) {
            let found = u32::try_from(found).unwrap_or(u32::MAX);
            return Err(Error::Version { path, found, expected: CHECKPOINT_VERSION });
        }
    }
    let config: CheckpointConfig =
        serde_json::from_value(value).map_err(|source| Error::Json { path: path.clone(), source })?;
    config.network.validate()?;
    config.schedule.validate()?;
    Ok(config)
}

/// Loads a checkpoint directory onto `device`: the model (with its prior mean) and the EMA, if saved.
///
/// # Errors
/// As [`load_config`]; [`Error::Weights`] naming the file and the tensor when a variable is missing, has the
/// wrong shape or dtype, or the file holds a tensor the model does not have.
pub fn load(dir: &Path, device: Device) -> Result<(PriorModel, Option<Ema>)> {
    let config = load_config(dir)?;
    load_checked(dir, config.clone(), &config.network, device)
}

/// [`load`] of a checkpoint whose network `factory` builds (a user-defined network, or a built-in one):
/// the checkpoint's `network` must equal [`ModelFactory::describe`].
///
/// # Errors
/// As [`load`]; [`Error::Config`] naming `network` when the checkpoint records another network.
pub fn load_with(
    dir: &Path,
    device: Device,
    factory: &dyn ModelFactory,
) -> Result<(PriorModel, Option<Ema>)> {
    let config = load_config(dir)?;
    let described = factory.describe();
    if described != config.network {
        return Err(Error::config(
            "network",
            format!(
                "{} records the network {}, the factory builds {}",
                dir.join(CONFIG_FILE).display(),
                serde_json::to_string(&config.network).unwrap_or_default(),
                serde_json::to_string(&described).unwrap_or_default()
            ),
        ));
    }
    load_checked(dir, config, factory, device)
}

/// [`load`] once the configuration is read and the factory chosen.
fn load_checked(
    dir: &Path,
    config: CheckpointConfig,
    factory: &dyn ModelFactory,
    device: Device,
) -> Result<(PriorModel, Option<Ema>)> {
    let mut model = PriorModel::from_factory(factory, config.schedule, device)?;
    let path = dir.join(WEIGHTS_FILE);
    let mut tensors = read_safetensors(&path, device)?;
    let variables = model.var_store().variables();
    let names: BTreeSet<&String> = variables.keys().collect();
    let mut loaded = Vec::with_capacity(names.len());
    for name in names {
        let var = &variables[name];
        let t = take_checked(&path, &mut tensors, name, &var.size(), var.kind())?;
        loaded.push((var.shallow_clone(), t));
    }
    let mean = match &config.mean_shape {
        Some(shape) => {
            let kind = tensors.get(MEAN_KEY).map_or(Kind::Float, Tensor::kind);
            Some(take_checked(&path, &mut tensors, MEAN_KEY, shape, kind)?)
        }
        None => None,
    };
    reject_unknown(&path, &tensors)?;
    tch::no_grad(|| {
        for (mut var, t) in loaded {
            var.copy_(&t);
        }
    });
    model.set_mean(mean);
    let ema = match config.ema_decay {
        Some(decay) => {
            let path = dir.join(EMA_FILE);
            let mut tensors = read_safetensors(&path, device)?;
            let mut ema = Ema::new(model.var_store(), decay)?;
            let mut checked = Vec::new();
            for (name, avg) in ema.tensors() {
                checked
                    .push((name.clone(), take_checked(&path, &mut tensors, &name, &avg.size(), avg.kind())?));
            }
            reject_unknown(&path, &tensors)?;
            ema.set_tensors(&path, &checked)?;
            Some(ema)
        }
        None => None,
    };
    Ok((model, ema))
}
