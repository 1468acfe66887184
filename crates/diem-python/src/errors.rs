//! Errors as Python exceptions, and the boundary that no Rust panic crosses.
//!
//! Every crate error becomes a subclass of `diem.DiemError` (defined in `diem/_errors.py`) whose message is the error's full chain (the
//! file and the field it names, as the command line prints it): `ConfigError` and `ShapeError` (both also
//! `ValueError`), `DataFileError` (also `OSError`) and `NonFiniteError` (also `ArithmeticError`). A Python
//! exception raised inside a callback (an operator, a denoiser, `KeyboardInterrupt` from the progress
//! observer) unwinds the Rust stack as a [`PyPanic`] and is re-raised as itself; any other panic becomes a
//! `DiemError` with its message and location.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The category of a crate error, which picks the exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Configuration or argument.
    Config,
    /// Shapes.
    Shape,
    /// Files and directories.
    File,
    /// NaN/∞.
    NonFinite,
    /// Anything else (libtorch, communication).
    Other,
}

/// The error `message` as the exception of `category`: the classes of `diem._errors` (Python classes, so
/// that `ConfigError` can also be a `ValueError`), or `RuntimeError` if that module cannot be imported.
pub fn exception(category: Category, message: String) -> PyErr {
    let name = match category {
        Category::Config => "ConfigError",
        Category::Shape => "ShapeError",
        Category::File => "DataFileError",
        Category::NonFinite => "NonFiniteError",
        Category::Other => "DiemError",
    };
    Python::attach(|py| {
        let class = py
            .import("diem._errors")
            .and_then(|m| m.getattr(name))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match class {
            Ok(class) => PyErr::from_type(class, message),
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

/// The message of an error with its sources (`a: b: c`, as `anyhow`'s `{:#}` prints it).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The category of a `diem_operators` error.
pub fn operators_category(e: &diem_operators::Error) -> Category {
    use diem_operators::Error as E;
    match e {
        E::Shape { .. } => Category::Shape,
        E::Io(_) | E::Format { .. } | E::File { .. } | E::NotPersistable { .. } => Category::File,
        E::Torch(_) => Category::Other,
        _ => Category::Config,
    }
}

/// The category of a `diem_models` error.
pub fn models_category(e: &diem_models::Error) -> Category {
    use diem_models::Error as E;
    match e {
        E::Shape { .. } => Category::Shape,
        E::Config { .. } => Category::Config,
        E::Io { .. } | E::Json { .. } | E::Version { .. } | E::Weights { .. } => Category::File,
        _ => Category::Other,
    }
}

/// The category of a `diem_sampling` error.
pub fn sampling_category(e: &diem_sampling::Error) -> Category {
    use diem_sampling::Error as E;
    match e {
        E::Config { .. } => Category::Config,
        E::Shape { .. } => Category::Shape,
        E::Operators(inner) => operators_category(inner),
        E::Models(inner) => models_category(inner),
        _ => Category::Other,
    }
}

/// The category of a `diem_em` error.
pub fn em_category(e: &diem_em::EmError) -> Category {
    use diem_em::EmError as E;
    match e {
        E::Config { .. } | E::ConfigChanged { .. } | E::EmptyTrainingSet { .. } => Category::Config,
        E::Shape { .. } => Category::Shape,
        E::Io { .. } | E::Json { .. } | E::File { .. } | E::RunDir { .. } => Category::File,
        E::NonFinite { .. } => Category::NonFinite,
        E::Operators(inner) => operators_category(inner),
        E::Models(inner) => models_category(inner),
        E::Sampling(inner) => sampling_category(inner),
        _ => Category::Other,
    }
}

/// Converts the crates' errors into Python exceptions.
pub trait IntoPyErr {
    /// The exception.
    fn into_py_err(self) -> PyErr;
}

impl IntoPyErr for diem_operators::Error {
    fn into_py_err(self) -> PyErr {
        exception(operators_category(&self), chain(&self))
    }
}

impl IntoPyErr for diem_models::Error {
    fn into_py_err(self) -> PyErr {
        exception(models_category(&self), chain(&self))
    }
}

impl IntoPyErr for diem_sampling::Error {
    fn into_py_err(self) -> PyErr {
        exception(sampling_category(&self), chain(&self))
    }
}

impl IntoPyErr for diem_em::EmError {
    fn into_py_err(self) -> PyErr {
        exception(em_category(&self), chain(&self))
    }
}

impl IntoPyErr for tch::TchError {
    fn into_py_err(self) -> PyErr {
        exception(Category::Other, format!("libtorch: {self}"))
    }
}

/// `result` with its error as a Python exception.
pub fn py<T, E: IntoPyErr>(result: Result<T, E>) -> PyResult<T> {
    result.map_err(IntoPyErr::into_py_err)
}

/// A Python exception travelling up the Rust stack as a panic payload (a callback cannot return it: the
/// `Denoiser` and operator traits return tensors), re-raised by [`boundary`].
pub struct PyPanic(pub PyErr);

/// Unwinds with the Python exception `err` (caught by [`boundary`]).
pub fn raise(err: PyErr) -> ! {
    std::panic::panic_any(PyPanic(err))
}

thread_local! {
    /// Where the last non-Python panic on this thread happened (set by the panic hook).
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs (once) a panic hook that prints nothing: panics inside a call from Python become exceptions,
/// and the hook only records where a non-[`PyPanic`] one happened for the exception's message.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if info.payload().downcast_ref::<PyPanic>().is_none() {
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                LOCATION.with(|c| *c.borrow_mut() = at);
            }
        }));
    });
}

/// Runs `f` with the GIL released (so libtorch's autograd threads and other Python threads can take it;
/// callbacks re-acquire it) and turns any panic into a Python exception: a [`PyPanic`] back into its own
/// exception, any other into `DiemError` naming its message and location.
pub fn boundary<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> PyResult<T>,
{
    let unsync = AssertSend(f);
    let outcome = py.detach(move || {
        let unsync = unsync;
        AssertSend(catch_unwind(AssertUnwindSafe(unsync.0)))
    });
    match outcome.0 {
        Ok(result) => result,
        Err(payload) => Err(from_panic(payload)),
    }
}

/// The exception for a panic payload.
fn from_panic(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let payload = match payload.downcast::<PyPanic>() {
        Ok(p) => return p.0,
        Err(other) => other,
    };
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a Rust panic without a message".to_string()
    };
    let at = LOCATION.with(|c| c.borrow_mut().take());
    match at {
        Some(at) => exception(Category::Other, format!("{message} (at {at})")),
        None => exception(Category::Other, message),
    }
}

/// Moves a value that is not `Send` through [`Python::detach`], which runs its closure on the calling
/// thread: the value never leaves this thread. (The bound exists to keep GIL-bound references out of the
/// closure; tch's tensors are `Send` but not `Sync`, so references to them are not `Send`.)
pub struct AssertSend<T>(pub T);

// SAFETY: `boundary` is the only user; `Python::detach` runs the closure synchronously on the current
// thread, so the wrapped value is created, used and dropped on one thread.
unsafe impl<T> Send for AssertSend<T> {}
