//! `diem._native`: the Rust core of the `diem` Python package (python/diem), built into a wheel by maturin
//! (`cargo xtask wheel`).
//!
//! The package's Python layer (`diem/__init__.py`) imports `torch` first, so this extension resolves the
//! same libtorch as Python's torch ([`tensor`]: tensors cross without copies and autograd graphs span both
//! sides). This module is deliberately thin and takes torch tensors only; numpy conversion, default
//! arguments and results on the input's device are the Python layer's business.
//!
//! Classes: [`Operator`] (the built-in operators, composition, and Python functions with autograd's
//! adjoint), [`Observations`] (`y = A x + ε`), [`Prior`] (a trained prior: loaded, or the result of a fit).
//! Functions: `fit` (DiEM in memory through [`diem_em::EmLoop`], or in a crash-safe run directory through
//! [`diem_em::EmRun`]), `posterior` (a user's denoiser under our samplers and posterior methods),
//! `preset`, and the vocabularies `posterior_methods`, `samplers`. Errors are the exceptions of
//! [`errors`]; no panic crosses into Python.

pub mod callbacks;
pub mod errors;
pub mod tensor;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use diem_em::{EStepPlan, EmConfig, EmLoop, EmRun, GaussianPrior};
use diem_linalg::Dplr;
use diem_models::{checkpoint, Denoiser, PriorModel, VeSchedule};
use diem_operators::{
    Blur, Boundary, Compose, Downsample, KSpace, LinearOperator, Mask, NoiseCov, Observation, Projection,
};
use diem_sampling::{Measurement, NoiseRng, PosteriorMethod, SamplerSpec, Silent, SolverMethod, SolverSpec};
use pyo3::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::callbacks::{function_operator, PyDenoiser, PyProgress};
use crate::errors::{boundary, exception, py as ok, Category};
use crate::tensor::{from_py, to_py};

/// A `ConfigError` naming `field`.
fn config_error(field: &str, reason: impl std::fmt::Display) -> PyErr {
    exception(Category::Config, format!("{field}: {reason}"))
}

/// A linear operator `A : [N, ..x_shape] → [N, ..y_shape]` (`diem.ops.*` wrap this class).
#[pyclass(unsendable, module = "diem._native")]
pub struct Operator {
    inner: Box<dyn LinearOperator>,
}

impl Operator {
    fn wrap(op: impl LinearOperator + 'static) -> Self {
        Self { inner: Box::new(op) }
    }
}

#[pymethods]
impl Operator {
    /// `Mask(mask : [P, ..m_shape], x_shape)`: elementwise multiplication (docs/method.md §1).
    #[staticmethod]
    fn mask(mask: &Bound<'_, PyAny>, x_shape: Vec<i64>) -> PyResult<Self> {
        Ok(Self::wrap(ok(Mask::new(from_py(mask, "mask")?, &x_shape))?))
    }

    /// `Projection(matrix : [P, m, d], x_shape)`.
    #[staticmethod]
    fn projection(matrix: &Bound<'_, PyAny>, x_shape: Vec<i64>) -> PyResult<Self> {
        Ok(Self::wrap(ok(Projection::new(from_py(matrix, "matrix")?, &x_shape))?))
    }

    /// `KSpace(mask : [P, W], x_shape = [C, H, W])`: masked centered 2-D Fourier transform.
    #[staticmethod]
    fn kspace(mask: &Bound<'_, PyAny>, x_shape: Vec<i64>) -> PyResult<Self> {
        Ok(Self::wrap(ok(KSpace::new(from_py(mask, "mask")?, &x_shape))?))
    }

    /// `Blur(kernels : [P, kh, kw], x_shape = [C, H, W], boundary)` with boundary `zero`, `reflect`,
    /// `symmetric` or `circular`.
    #[staticmethod]
    fn blur(kernels: &Bound<'_, PyAny>, x_shape: Vec<i64>, boundary: &str) -> PyResult<Self> {
        let b = match boundary {
            "zero" | "zeros" => Boundary::Zero,
            "reflect" => Boundary::Reflect,
            "symmetric" => Boundary::Symmetric,
            "circular" => Boundary::Circular,
            other => {
                return Err(config_error(
                    "boundary",
                    format!("unknown boundary {other:?} (expected zero, reflect, symmetric or circular)"),
                ))
            }
        };
        Ok(Self::wrap(ok(Blur::new(from_py(kernels, "kernels")?, &x_shape, b))?))
    }

    /// `Downsample(x_shape = [C, H, W], factor, method)` with method `average` or `bicubic`.
    #[staticmethod]
    fn downsample(x_shape: Vec<i64>, factor: i64, method: &str) -> PyResult<Self> {
        let op = match method {
            "average" => Downsample::average(&x_shape, factor),
            "bicubic" => Downsample::bicubic(&x_shape, factor),
            other => {
                return Err(config_error(
                    "method",
                    format!("unknown method {other:?} (expected average or bicubic)"),
                ))
            }
        };
        Ok(Self::wrap(ok(op)?))
    }

    /// The composition of `ops`, applied first to last.
    #[staticmethod]
    fn compose(ops: Vec<PyRef<'_, Operator>>) -> PyResult<Self> {
        let inner = ops.iter().map(|o| o.inner.clone_operator()).collect();
        Ok(Self::wrap(ok(Compose::new(inner))?))
    }

    /// A linear Python function `forward : [N, ..x_shape] → [N, ..y_shape]` built from differentiable torch
    /// operations; its adjoint is autograd's vector-Jacobian product.
    #[staticmethod]
    #[pyo3(signature = (forward, x_shape, y_shape, name = "function"))]
    fn function(forward: Py<PyAny>, x_shape: Vec<i64>, y_shape: Vec<i64>, name: &str) -> PyResult<Self> {
        Ok(Self::wrap(function_operator(forward, &x_shape, &y_shape, name)?))
    }

    /// `A x` for `x : [N, ..x_shape]`.
    fn apply<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let x = from_py(x, "x")?;
        let y = boundary(py, || Ok(self.inner.apply(&x)))?;
        to_py(py, &y)
    }

    /// `Aᵀ y` for `y : [N, ..y_shape]`.
    fn adjoint<'py>(&self, py: Python<'py>, y: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let y = from_py(y, "y")?;
        let x = boundary(py, || Ok(self.inner.adjoint(&y)))?;
        to_py(py, &x)
    }

    /// The per-sample input shape.
    #[getter]
    fn x_shape(&self) -> Vec<i64> {
        self.inner.x_shape()
    }

    /// The per-sample output shape.
    #[getter]
    fn y_shape(&self) -> Vec<i64> {
        self.inner.y_shape()
    }

    /// The operator's kind (as observation files name it).
    #[getter]
    fn kind(&self) -> String {
        self.inner.kind()
    }

    /// How many parameter sets the operator holds (1: shared by the batch; N: one per observation).
    #[getter]
    fn batch(&self) -> i64 {
        self.inner.batch()
    }
}

/// Observations `y = A x + ε`, `ε ~ N(0, σ_y²)` (docs/method.md §1).
#[pyclass(unsendable, module = "diem._native")]
pub struct Observations {
    inner: Observation,
}

impl Observations {
    /// A copy sharing the tensors (the crates' `Observation` is not `Clone`).
    fn observation(&self) -> PyResult<Observation> {
        let o = &self.inner;
        ok(Observation::new(
            o.y.shallow_clone(),
            o.operator.clone_operator(),
            o.noise.to_device(o.y.device()),
        ))
    }
}

#[pymethods]
impl Observations {
    /// Observations `y : [N, ..y_shape]` through `operator` with noise standard deviation `noise_std` (a
    /// float, or a tensor `[1 or N, ..y_shape]`).
    #[new]
    fn new(
        y: &Bound<'_, PyAny>,
        operator: PyRef<'_, Operator>,
        noise_std: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let y = from_py(y, "y")?;
        let noise = if crate::tensor::is_tensor(noise_std)? {
            ok(NoiseCov::diagonal(from_py(noise_std, "noise_std")?))?
        } else {
            let std: f64 =
                noise_std.extract().map_err(|_| config_error("noise_std", "expected a float or a tensor"))?;
            ok(NoiseCov::isotropic(std))?
        };
        Ok(Self { inner: ok(Observation::new(y, operator.inner.clone_operator(), noise))? })
    }

    /// The observations `y`.
    #[getter]
    fn y<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.y)
    }

    /// The operator.
    #[getter]
    fn operator(&self) -> Operator {
        Operator { inner: self.inner.operator.clone_operator() }
    }

    /// The number of observations N.
    fn __len__(&self) -> usize {
        self.inner.len() as usize
    }

    /// Writes the observations to an `.npz` file that `diem fit` reads (built-in operators only).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        ok(self.inner.save(&path))
    }

    /// Reads observations from an `.npz` file.
    #[staticmethod]
    #[pyo3(signature = (path, device = "cpu"))]
    fn load(path: PathBuf, device: &str) -> PyResult<Self> {
        Ok(Self { inner: ok(Observation::load(&path, parse_device(device)?))? })
    }
}

/// `cpu`, `cuda` or `cuda:K`.
fn parse_device(text: &str) -> PyResult<Device> {
    match text {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        t => t.strip_prefix("cuda:").and_then(|k| k.parse().ok()).map(Device::Cuda).ok_or_else(|| {
            config_error("device", format!("unknown device {t:?} (expected cpu, cuda or cuda:K)"))
        }),
    }
}

/// Where a [`Prior`]'s model lives.
enum Source {
    /// Loaded from a checkpoint directory (`dir`).
    Loaded { model: Box<PriorModel>, dir: PathBuf },
    /// An in-memory fit.
    Loop(Box<EmLoop>),
    /// A fit in a run directory.
    Run(Box<EmRun>),
}

/// A trained diffusion prior.
#[pyclass(unsendable, module = "diem._native")]
pub struct Prior {
    source: Source,
}

impl Prior {
    fn model(&self) -> PyResult<&PriorModel> {
        let model = match &self.source {
            Source::Loaded { model, .. } => Some(&**model),
            Source::Loop(em) => em.model(),
            Source::Run(run) => run.model(),
        };
        model.ok_or_else(|| {
            config_error("prior", "the fit ended before its first M-step: there is no model yet")
        })
    }

    /// Σ_x of the run's Gaussian prior (for `mmps-cov-x`).
    fn sigma_x(&self) -> PyResult<Option<Dplr>> {
        let g = match &self.source {
            Source::Loaded { dir, model } => {
                let path = dir.join(diem_em::layout::GAUSSIAN_FILE);
                if !path.exists() {
                    return Ok(None);
                }
                let device = model.mean().map_or(Device::Cpu, Tensor::device);
                return Ok(Some(ok(GaussianPrior::load(&path, device))?.cov.to_kind(Kind::Float)));
            }
            Source::Loop(em) => em.gaussian(),
            Source::Run(run) => run.gaussian(),
        };
        Ok(g.map(|g| g.cov.to_kind(Kind::Float)))
    }

    fn latent_shape(&self) -> PyResult<Vec<i64>> {
        self.model()?.mean().map(Tensor::size).ok_or_else(|| {
            config_error("prior", "the model carries no prior mean, so its sample shape is unknown")
        })
    }
}

/// A sampler by name (`SamplerSpec::NAMES`) on `schedule`.
fn build_sampler(
    name: &str,
    steps: usize,
    schedule: VeSchedule,
) -> PyResult<Box<dyn diem_sampling::Sampler>> {
    if steps == 0 || steps > diem_sampling::MAX_STEPS {
        return Err(config_error(
            "steps",
            format!("must be in 1..={}, got {steps}", diem_sampling::MAX_STEPS),
        ));
    }
    let spec = SamplerSpec::from_name(name, steps).map_err(|_| {
        config_error(
            "sampler",
            format!("unknown sampler {name:?} (expected one of {})", SamplerSpec::NAMES.join(", ")),
        )
    })?;
    ok(spec.build(schedule))
}

/// A posterior method by name (`PosteriorMethod::NAMES`), with its Krylov solver and DPS's ζ.
fn build_method(name: &str, solver: &str, iterations: usize, zeta: f64) -> PyResult<PosteriorMethod> {
    let solver_method = SolverMethod::from_name(solver).map_err(|_| {
        config_error(
            "solver",
            format!("unknown solver {solver:?} (expected one of {})", SolverMethod::NAMES.join(", ")),
        )
    })?;
    if iterations == 0 || iterations > diem_sampling::MAX_ITERATIONS {
        return Err(config_error(
            "iterations",
            format!("must be in 1..={}, got {iterations}", diem_sampling::MAX_ITERATIONS),
        ));
    }
    let method =
        PosteriorMethod::from_name(name, SolverSpec::new(solver_method, iterations)).map_err(|_| {
            config_error(
                "method",
                format!("unknown method {name:?} (expected one of {})", PosteriorMethod::NAMES.join(", ")),
            )
        })?;
    let method = method.with_zeta(zeta);
    ok(method.validate())?;
    Ok(method)
}

#[pymethods]
impl Prior {
    /// Loads a prior from a checkpoint directory or a run directory (its last lap).
    #[staticmethod]
    #[pyo3(signature = (path, device = "cpu"))]
    fn load(py: Python<'_>, path: PathBuf, device: &str) -> PyResult<Self> {
        let device = parse_device(device)?;
        boundary(py, || {
            let dir = ok(diem_em::resolve_checkpoint(&path))?;
            let (model, _ema) = ok(checkpoint::load(&dir, device))?;
            Ok(Self { source: Source::Loaded { model: Box::new(model), dir } })
        })
    }

    /// Saves the prior as a checkpoint directory (`diem sample --prior DIR` reads it).
    fn save(&self, py: Python<'_>, dir: PathBuf) -> PyResult<()> {
        let model = self.model()?;
        boundary(py, || ok(checkpoint::save(&dir, model, None)))
    }

    /// The per-sample shape of the prior's samples.
    #[getter]
    fn x_shape(&self) -> PyResult<Vec<i64>> {
        self.latent_shape()
    }

    /// The network's variables by name (`hidden.0.weight`, …), as torch tensors sharing the weights
    /// (detached: read them, or copy them into a PyTorch module).
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let dict = pyo3::types::PyDict::new(py);
        for (name, t) in self.model()?.named_variables() {
            dict.set_item(name, to_py(py, &t.detach())?)?;
        }
        Ok(dict)
    }

    /// The prior mean `μ_x` where samplers start (per-sample shape), if the model has one.
    #[getter]
    fn mean<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.model()?.mean().map(|m| to_py(py, m)).transpose()
    }

    /// The noise schedule's `(σ_min, σ_max)`.
    #[getter]
    fn sigma_range(&self) -> PyResult<(f64, f64)> {
        let s = self.model()?.schedule();
        Ok((s.a, s.b))
    }

    /// The denoiser `d(x_t, σ) = E[x | x_t]` (differentiable; `σ` is `[]` or `[N]`).
    fn denoise<'py>(
        &self,
        py: Python<'py>,
        x_t: &Bound<'py, PyAny>,
        sigma: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (x_t, sigma) = (from_py(x_t, "x_t")?, from_py(sigma, "sigma")?);
        let model = self.model()?;
        let out = boundary(py, || Ok(model.denoiser().denoise(&x_t, &sigma)))?;
        to_py(py, &out)
    }

    /// `n` prior samples (float32, on the model's device) with `sampler` in `steps` steps.
    #[pyo3(signature = (n, sampler = "ddpm", steps = 256, seed = 0))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: i64,
        sampler: &str,
        steps: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        if n < 1 {
            return Err(config_error("n", format!("must be ≥ 1, got {n}")));
        }
        let model = self.model()?;
        let mut shape = vec![n];
        shape.extend(self.latent_shape()?);
        let s = build_sampler(sampler, steps, model.schedule())?;
        let device = model.mean().map_or(Device::Cpu, Tensor::device);
        let x = boundary(py, || {
            ok(s.sample(model.denoiser(), &shape, Kind::Float, device, &mut NoiseRng::seeded(seed)))
        })?;
        to_py(py, &x)
    }

    /// One posterior sample per observation, `chunk` observations at a time (chunk `c` seeded `seed + c`).
    #[pyo3(signature = (observations, method = "mmps", sampler = "ddpm", steps = 256, solver = "cg", iterations = 3, zeta = 1.0, seed = 0, chunk = 1024))]
    #[allow(clippy::too_many_arguments)]
    fn posterior<'py>(
        &self,
        py: Python<'py>,
        observations: PyRef<'_, Observations>,
        method: &str,
        sampler: &str,
        steps: usize,
        solver: &str,
        iterations: usize,
        zeta: f64,
        seed: u64,
        chunk: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        if chunk < 1 {
            return Err(config_error("chunk", format!("must be ≥ 1, got {chunk}")));
        }
        let model = self.model()?;
        let latent = self.latent_shape()?;
        let obs = observations.observation()?;
        if obs.operator.x_shape() != latent {
            return Err(exception(
                Category::Shape,
                format!(
                    "observations: the operator's x_shape {:?} differs from the prior's sample shape {latent:?}",
                    obs.operator.x_shape()
                ),
            ));
        }
        let method = build_method(method, solver, iterations, zeta)?;
        let sigma_x = if method.needs_sigma_x() { self.sigma_x()? } else { None };
        let s = build_sampler(sampler, steps, model.schedule())?;
        let x = boundary(py, || {
            let plan = EStepPlan::new(ok(method.resolve(sigma_x.as_ref()))?, 1)
                .chunk(chunk)
                .kind(Kind::Float)
                .consecutive_seeds(seed);
            let chunks = diem_em::estep::chunk_count(obs.len(), 1, chunk);
            let shard = ok(diem_em::posterior_shard_observed(
                model.denoiser(),
                &obs,
                s.as_ref(),
                &plan,
                0..chunks,
                None,
                &mut Silent,
            ))?;
            Ok(shard.samples)
        })?;
        to_py(py, &x)
    }

    fn __repr__(&self) -> String {
        let what = match &self.source {
            Source::Loaded { dir, .. } => format!("loaded from {}", dir.display()),
            Source::Loop(em) => format!("in memory, {} laps", em.completed_laps()),
            Source::Run(run) => format!("run {}, {} laps", run.dir().display(), run.completed_laps()),
        };
        let shape = self.latent_shape().map(|s| format!("{s:?}")).unwrap_or_else(|_| "?".into());
        format!("Prior(x_shape={shape}, {what})")
    }
}

/// DiEM on `observations` (docs/method.md §8): in memory ([`EmLoop`]) when `out` is `None`, else in the
/// crash-safe run directory `out` ([`EmRun`]; `resume` continues it, `config_json` is then ignored).
/// `progress` is a display object (see [`PyProgress`]) or `None`; `KeyboardInterrupt` stops the fit after
/// the current E-step chunk or training interval (a run directory keeps every completed lap).
#[pyfunction]
#[pyo3(signature = (observations, config_json, out = None, resume = false, progress = None))]
fn fit(
    py: Python<'_>,
    observations: PyRef<'_, Observations>,
    config_json: Option<String>,
    out: Option<PathBuf>,
    resume: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Prior> {
    let obs = observations.observation()?;
    let device = obs.y.device();
    let config = match (&config_json, resume) {
        (Some(json), false) => Some(
            // The configuration is an argument here, not a file: its errors are ConfigErrors.
            EmConfig::from_json(Path::new("config"), json.as_bytes())
                .map_err(|e| exception(Category::Config, errors::chain(&e)))?,
        ),
        (None, false) => return Err(config_error("config", "is required unless resume=True")),
        (_, true) => None,
    };
    if resume && out.is_none() {
        return Err(config_error("resume", "needs `out`, the run directory to continue"));
    }
    let observer: Rc<dyn diem_models::ProgressObserver> = Rc::new(PyProgress::new(progress));
    // Rc is created outside and moved in: the boundary runs the closure on this thread.
    boundary(py, move || {
        let source = match (out, config) {
            (None, Some(config)) => {
                let mut em = ok(EmLoop::new(config, obs, device))?.with_progress(observer);
                ok(em.init())?;
                while em.completed_laps() < em.config().laps {
                    ok(em.step())?;
                }
                Source::Loop(Box::new(em))
            }
            (Some(dir), Some(config)) => {
                let mut run = ok(EmRun::create(&dir, config, obs, device))?.with_progress(observer);
                ok(run.run())?;
                Source::Run(Box::new(run))
            }
            (Some(dir), None) => {
                let mut run = ok(EmRun::resume(&dir, obs, device))?.with_progress(observer);
                ok(run.run())?;
                Source::Run(Box::new(run))
            }
            (None, None) => return Err(config_error("config", "is required unless resume=True")),
        };
        Ok(Prior { source })
    })
}

/// Posterior samples with a user's denoiser `d(x_t, σ)` (a `torch.nn.Module` or any callable on torch
/// tensors, `σ : [N]`; or a [`Prior`], which then runs without calling into Python): one sample per observation with `sampler` in `steps` steps on the VE schedule
/// `σ(t) = σ_min (σ_max/σ_min)^t`, by `method` (`PosteriorMethod::NAMES`; MMPS with `iterations` steps of
/// `solver`). `mean` is `μ_x` where the samplers start (default 0).
#[pyfunction]
#[pyo3(signature = (denoiser, observations, method = "mmps", sampler = "ddim", steps = 64, solver = "cg", iterations = 1, zeta = 1.0, seed = 0, sigma_min = 1e-3, sigma_max = 1e2, mean = None))]
#[allow(clippy::too_many_arguments)]
fn posterior<'py>(
    py: Python<'py>,
    denoiser: Bound<'py, PyAny>,
    observations: PyRef<'_, Observations>,
    method: &str,
    sampler: &str,
    steps: usize,
    solver: &str,
    iterations: usize,
    zeta: f64,
    seed: u64,
    sigma_min: f64,
    sigma_max: f64,
    mean: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let obs = observations.observation()?;
    let mean = mean.map(|m| from_py(&m, "mean")).transpose()?;
    let method = build_method(method, solver, iterations, zeta)?;
    if method.needs_sigma_x() {
        return Err(config_error("method", "mmps-cov-x needs a fitted Gaussian prior: use Prior.posterior"));
    }
    let schedule = ok(VeSchedule::new(sigma_min, sigma_max))?;
    let s = build_sampler(sampler, steps, schedule)?;
    let kind = obs.y.kind();
    let device = obs.y.device();
    // A diem Prior runs natively (no Python in the loop); anything else is called back.
    let native = denoiser.cast::<Prior>().ok().map(|p| p.borrow());
    let python_denoiser;
    let d: &dyn Denoiser = match &native {
        Some(prior) => prior.model()?.denoiser(),
        None => {
            python_denoiser = PyDenoiser::new(denoiser.clone().unbind(), mean);
            &python_denoiser
        }
    };
    let x = boundary(py, || {
        let (x, _stats) = ok(method.sample(
            d,
            Measurement::from_observation(&obs),
            None,
            s.as_ref(),
            (kind, device),
            &mut NoiseRng::seeded(seed),
        ))?;
        Ok(x)
    })?;
    to_py(py, &x)
}

/// A named configuration as JSON: `manifold` (the paper's manifold experiment, docs/method.md §9a),
/// `manifold-reference` (the authors' code's E-step), both with `laps` laps.
#[pyfunction]
#[pyo3(signature = (name, laps = 8))]
fn preset(name: &str, laps: usize) -> PyResult<String> {
    let config = match name {
        "manifold" => EmConfig::manifold(laps),
        "manifold-reference" => EmConfig::manifold_reference(laps),
        other => {
            return Err(config_error(
                "config",
                format!("unknown preset {other:?} (expected manifold or manifold-reference)"),
            ))
        }
    };
    serde_json::to_string(&config).map_err(|e| config_error("config", e))
}

/// The posterior methods' names.
#[pyfunction]
fn posterior_methods() -> Vec<&'static str> {
    PosteriorMethod::NAMES.to_vec()
}

/// The samplers' names.
#[pyfunction]
fn samplers() -> Vec<&'static str> {
    SamplerSpec::NAMES.to_vec()
}

/// Checks that `x` crosses into Rust and back as the same tensor (storage and autograd graph): returns
/// `2 x` computed by libtorch on the Rust side (used by the tests).
#[pyfunction]
fn _double<'py>(py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let t = from_py(x, "x")?;
    to_py(py, &(&t * 2.0))
}

/// Panics on the Rust side (the tests check that it arrives as `DiemError`, not as an abort).
#[pyfunction]
fn _panic(py: Python<'_>) -> PyResult<()> {
    boundary(py, || -> PyResult<()> { panic!("a deliberate panic") })
}

/// The module `diem._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::install_panic_hook();
    m.add_class::<Operator>()?;
    m.add_class::<Observations>()?;
    m.add_class::<Prior>()?;
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_function(wrap_pyfunction!(posterior, m)?)?;
    m.add_function(wrap_pyfunction!(preset, m)?)?;
    m.add_function(wrap_pyfunction!(posterior_methods, m)?)?;
    m.add_function(wrap_pyfunction!(samplers, m)?)?;
    m.add_function(wrap_pyfunction!(_double, m)?)?;
    m.add_function(wrap_pyfunction!(_panic, m)?)?;
    Ok(())
}
