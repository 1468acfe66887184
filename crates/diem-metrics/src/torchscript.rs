//! Shared plumbing for the user-supplied TorchScript networks ([`crate::InceptionNet`], [`crate::Lpips`]).

use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::error::{MetricsError, Result};

/// A TorchScript module in eval mode, with the file and device it was loaded from.
pub(crate) struct Script {
    pub(crate) module: CModule,
    pub(crate) path: PathBuf,
    pub(crate) device: Device,
    pub(crate) model: &'static str,
}

/// The first line of a libtorch message (the rest is a C++ backtrace).
pub(crate) fn first_line(message: &str) -> String {
    message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("unknown error").to_string()
}

impl Script {
    /// Loads `path` onto `device` and switches the module to eval mode; errors name the file.
    pub(crate) fn load(model: &'static str, path: &Path, device: Device) -> Result<Self> {
        let err = |reason: String| MetricsError::ModelFile { model, path: path.to_path_buf(), reason };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(err("not a regular file".into())),
            Err(e) => return Err(err(e.to_string())),
        }
        let mut module =
            CModule::load_on_device(path, device).map_err(|e| err(first_line(&e.to_string())))?;
        module.f_set_eval().map_err(|e| err(first_line(&e.to_string())))?;
        Ok(Self { module, path: path.to_path_buf(), device, model })
    }

    /// An output-contract error for this module.
    pub(crate) fn output_error(&self, expected: impl Into<String>, got: impl Into<String>) -> MetricsError {
        MetricsError::ModelOutput {
            model: self.model,
            path: self.path.clone(),
            expected: expected.into(),
            got: got.into(),
        }
    }

    /// Runs `forward` on f32 copies of `inputs` moved to the module's device, under `no_grad`.
    pub(crate) fn forward(&self, inputs: &[&Tensor], call: &str) -> Result<IValue> {
        let _guard = tch::no_grad_guard();
        let args = inputs
            .iter()
            .map(|t| Ok(IValue::Tensor(t.f_to_device(self.device)?.f_to_kind(Kind::Float)?)))
            .collect::<Result<Vec<_>>>()?;
        self.module.forward_is(&args).map_err(|e| {
            self.output_error(format!("{call} to run"), format!("an error: {}", first_line(&e.to_string())))
        })
    }
}

/// A short description of an IValue, for error messages.
pub(crate) fn describe(v: &IValue) -> String {
    match v {
        IValue::Tensor(t) => format!("a tensor of shape {:?}", t.size()),
        IValue::Tuple(items) => {
            format!("a tuple ({})", items.iter().map(describe).collect::<Vec<_>>().join(", "))
        }
        IValue::TensorList(ts) => format!("a list of {} tensors", ts.len()),
        IValue::GenericList(items) => format!("a list of {} values", items.len()),
        IValue::None => "None".into(),
        IValue::Double(_) => "a float".into(),
        IValue::Int(_) => "an int".into(),
        IValue::Bool(_) => "a bool".into(),
        IValue::String(_) => "a string".into(),
        IValue::GenericDict(_) => "a dict".into(),
        _ => "an unsupported value".into(),
    }
}

/// Minimum and maximum of a tensor as f64, or a `NonFinite` error.
pub(crate) fn finite_min_max(metric: &'static str, input: &'static str, t: &Tensor) -> Result<(f64, f64)> {
    if !bool::try_from(t.f_isfinite()?.f_all()?)? {
        return Err(MetricsError::NonFinite { metric, input });
    }
    Ok((t.f_min()?.f_double_value(&[])?, t.f_max()?.f_double_value(&[])?))
}
