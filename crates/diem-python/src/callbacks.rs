//! Python callables behind Rust traits: a `torch.nn.Module` (or any callable) as a [`Denoiser`], a Python
//! function as a linear operator ([`diem_operators::FnOperator`], adjoint by autograd through the shared
//! libtorch), and a Python progress display as a [`ProgressObserver`] that also delivers `KeyboardInterrupt`.
//!
//! Each callback re-acquires the GIL (the boundary released it) and, on a Python exception, unwinds with it
//! ([`crate::errors::raise`]) up to the boundary, which re-raises it.

use diem_models::{Denoiser, ProgressObserver};
use diem_operators::FnOperator;
use pyo3::prelude::*;
use tch::Tensor;

use crate::errors::{py, raise};
use crate::tensor::{from_py, to_py};

/// Calls `f(args…)` on tensors and reads a tensor back, or unwinds with the Python exception.
fn call_tensor(f: &Py<PyAny>, args: &[&Tensor], what: &str) -> Tensor {
    Python::attach(|py| {
        let inputs = args.iter().map(|t| to_py(py, t)).collect::<PyResult<Vec<_>>>()?;
        let tuple = pyo3::types::PyTuple::new(py, inputs)?;
        let out = f.bind(py).call1(tuple)?;
        from_py(&out, what)
    })
    .unwrap_or_else(|e| raise(e))
}

/// A Python callable `d(x_t, σ) → E[x | x_t]` as a [`Denoiser`]: `x_t` is `[N, ...]`, `σ` is `[N]`.
/// Differentiable when the callable is (a `torch.nn.Module` is): MMPS's vector-Jacobian products run
/// through its autograd graph.
pub struct PyDenoiser {
    f: Py<PyAny>,
    mean: Option<Tensor>,
}

impl PyDenoiser {
    /// The callable `f`, with an optional prior mean `μ_x` (per-sample shape) where samplers start.
    pub fn new(f: Py<PyAny>, mean: Option<Tensor>) -> Self {
        Self { f, mean }
    }
}

impl Denoiser for PyDenoiser {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let n = x_t.size().first().copied().unwrap_or(1);
        let sigma = if sigma.dim() == 0 { sigma.expand([n], false) } else { sigma.reshape([n]) };
        let out = call_tensor(&self.f, &[x_t, &sigma], "the denoiser's output");
        if out.size() != x_t.size() {
            raise(crate::errors::exception(
                crate::errors::Category::Shape,
                format!("the denoiser returned shape {:?} for x_t of shape {:?}", out.size(), x_t.size()),
            ));
        }
        out
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.mean.as_ref()
    }
}

/// The linear operator `x ↦ forward(x)` of a Python callable on `[N, ..x_shape]` batches, with autograd's
/// adjoint.
///
/// # Errors
/// `ConfigError` for invalid shapes.
pub fn function_operator(
    forward: Py<PyAny>,
    x_shape: &[i64],
    y_shape: &[i64],
    name: &str,
) -> PyResult<FnOperator> {
    let op =
        py(FnOperator::new(x_shape, y_shape, move |x| call_tensor(&forward, &[x], "the operator's output")))?;
    Ok(op.named(name))
}

/// Progress to a Python object with `start(label, total)`, `advance(n)`, `message(text)` and `finish()`
/// (`diem._progress.Progress`: tqdm in a terminal or Jupyter), or to nothing. Every `advance` (one E-step
/// chunk, one lap, …) first checks for signals: a pending `KeyboardInterrupt` unwinds from there, so a fit
/// stops after the chunk that just ended.
pub struct PyProgress {
    display: Option<Py<PyAny>>,
}

impl PyProgress {
    /// Progress shown by `display` (or only watched for signals).
    pub fn new(display: Option<Py<PyAny>>) -> Self {
        Self { display }
    }

    fn call<A>(&self, method: &str, args: A)
    where
        A: for<'py> pyo3::call::PyCallArgs<'py>,
    {
        if let Some(display) = &self.display {
            Python::attach(|py| display.bind(py).call_method1(method, args).map(drop))
                .unwrap_or_else(|e| raise(e));
        }
    }
}

impl ProgressObserver for PyProgress {
    fn start(&self, label: &str, total: u64) {
        self.call("start", (label, total));
    }

    fn advance(&self, n: u64) {
        Python::attach(|py| py.check_signals()).unwrap_or_else(|e| raise(e));
        self.call("advance", (n,));
    }

    fn message(&self, message: &str) {
        self.call("message", (message,));
    }

    fn finish(&self) {
        self.call("finish", ());
    }

    fn abandon(&self) {
        // Called while unwinding (an error or an interrupt): a second Python error here must not panic.
        if let Some(display) = &self.display {
            Python::attach(|py| {
                let _ = display.bind(py).call_method0("finish");
            });
        }
    }
}
