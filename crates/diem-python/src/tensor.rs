//! Tensors across the boundary without copies: a `torch.Tensor` and a `tch::Tensor` are both handles on one
//! libtorch `TensorImpl` (the extension and Python's `torch` share one libtorch in the process), so crossing
//! is a reference-count increment. Autograd metadata lives in the `TensorImpl`, so graphs span both sides.
//!
//! Why not the `pyo3-tch` crate: it needs tch's `python-extension` feature, and cargo unifies features over
//! the workspace, so every test binary of every crate would be rebuilt and linked against `libtorch_python`
//! (which needs libpython). Instead this module uses two entry points of Python's torch itself:
//! `Tensor._cdata` (the address of the `TensorImpl`) and `torch._C._wrap_tensor_impl(capsule)` (a new
//! reference to a `TensorImpl` as a `torch.Tensor`), and one fact of libtorch's ABI: an `at::Tensor` (what a
//! `tch::Tensor` points to) is exactly one `intrusive_ptr<TensorImpl>`, i.e. one pointer.

use std::ffi::c_void;
use std::mem::ManuallyDrop;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tch::Tensor;

/// `torch.Tensor` and `torch._C._wrap_tensor_impl`, looked up once.
struct TorchEntry {
    tensor_type: Py<PyAny>,
    wrap: Py<PyAny>,
}

static TORCH: PyOnceLock<TorchEntry> = PyOnceLock::new();

fn torch(py: Python<'_>) -> PyResult<&TorchEntry> {
    TORCH.get_or_try_init(py, || {
        let torch = py.import("torch")?;
        let tensor_type = torch.getattr("Tensor")?.unbind();
        let wrap = torch.getattr("_C")?.getattr("_wrap_tensor_impl")?.unbind();
        Ok(TorchEntry { tensor_type, wrap })
    })
}

/// Whether `obj` is a `torch.Tensor`.
pub fn is_tensor(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    obj.is_instance(torch(obj.py())?.tensor_type.bind(obj.py()))
}

/// A `tch::Tensor` sharing `obj`'s storage and autograd history (no copy).
///
/// # Errors
/// `TypeError` (naming `what`) when `obj` is not a `torch.Tensor`.
pub fn from_py(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor> {
    if !is_tensor(obj)? {
        let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        return Err(PyTypeError::new_err(format!("{what}: expected a torch.Tensor, got {type_name}")));
    }
    let address: usize = obj.getattr("_cdata")?.extract()?;
    if address == 0 {
        return Err(PyValueError::new_err(format!("{what}: the tensor is undefined")));
    }
    // An `at::Tensor` is one `intrusive_ptr<TensorImpl>`: a slot holding the `TensorImpl` address *is* an
    // `at::Tensor` that borrows `obj`'s reference. `shallow_clone` copy-constructs a new heap `at::Tensor`
    // from it (one more reference, released when the returned tensor drops); the borrowed slot is never
    // dropped (`ManuallyDrop`), so the reference count ends one higher, as it must. `obj` (and so the
    // `TensorImpl`) stays alive while `obj` is borrowed, i.e. during this call.
    let mut slot = address as *mut c_void;
    let borrowed = ManuallyDrop::new(unsafe { Tensor::from_ptr((&mut slot as *mut *mut c_void).cast()) });
    Ok(borrowed.shallow_clone())
}

/// A `torch.Tensor` sharing `t`'s storage and autograd history (no copy).
///
/// # Errors
/// `ValueError` for an undefined tensor; torch's error if wrapping fails.
pub fn to_py<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    if !t.defined() {
        return Err(PyValueError::new_err("internal: an undefined tensor cannot cross into Python"));
    }
    // `t.as_ptr()` points to an `at::Tensor`, whose only field is the `TensorImpl` pointer.
    let implementation = unsafe { *(t.as_ptr() as *const *mut c_void) };
    // A capsule without name or destructor around the (borrowed) address: `_wrap_tensor_impl` takes its own
    // reference (`intrusive_ptr::unsafe_reclaim_from_nonowning`) before the capsule and `t` can go.
    let capsule = unsafe {
        Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyCapsule_New(implementation, std::ptr::null(), None))
    }?;
    torch(py)?.wrap.bind(py).call1((capsule,))
}
