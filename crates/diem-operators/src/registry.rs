//! Loaders for operator kinds defined outside this crate, so a custom operator round-trips through
//! observation files.
//!
//! [`crate::operator_from_params`] (what [`Observation::load`](crate::Observation::load) calls) reads the
//! built-in kinds (`identity`, `mask`, `projection`, `kspace`, `blur`, `downsample`, `compose[..]`,
//! `stack[..]`) and then any kind registered in this process with [`register_operator`]. A registered kind
//! is a leaf of the kind grammar (see [`crate::params`]), so it may also appear inside `compose[..]` and
//! `stack[..]`: its loader then reads its arrays under the child's prefix (`"1.weights"`), which the
//! [`Params`] view it receives hides.
//!
//! An [`OperatorRegistry`] value is the same table without the process-wide state, for code that wants
//! its own set of loaders ([`OperatorRegistry::operator_from_params`]).
//!
//! ```
//! use diem_operators::params::Params;
//! use diem_operators::{register_operator, LinearOperator, Result};
//! use tch::Tensor;
//!
//! /// `y = s · x` on vectors of length `n`, persistable as kind `"scale"`.
//! #[derive(Clone, Debug)]
//! struct Scale { n: i64, s: f64 }
//!
//! impl LinearOperator for Scale {
//!     fn x_shape(&self) -> Vec<i64> { vec![self.n] }
//!     fn y_shape(&self) -> Vec<i64> { vec![self.n] }
//!     fn apply(&self, x: &Tensor) -> Tensor { x * self.s }
//!     fn kind(&self) -> String { "scale".into() }
//!     fn params(&self) -> Vec<(String, Tensor)> {
//!         vec![("x_shape".into(), Tensor::from_slice(&[self.n])), ("s".into(), Tensor::from_slice(&[self.s]))]
//!     }
//! }
//!
//! fn load_scale(p: &Params<'_>) -> Result<Box<dyn LinearOperator>> {
//!     let n = p.shape("x_shape")?[0];
//!     let s = p.float("s")?.double_value(&[0]);
//!     Ok(Box::new(Scale { n, s }))
//! }
//!
//! register_operator("scale", load_scale)?;
//! // Built-in names are refused.
//! assert!(register_operator("mask", load_scale).is_err());
//!
//! let op = Scale { n: 3, s: 2.0 };
//! let arrays = op.params().into_iter().collect();
//! let back = diem_operators::operator_from_params(&op.kind(), &arrays)?;
//! let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0]).reshape([1, 3]);
//! assert!(back.apply(&x).equal(&op.apply(&x)));
//! # Ok::<(), diem_operators::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use tch::Tensor;

use crate::error::{Error, Result};
use crate::operator::LinearOperator;
use crate::params::Params;

/// A function that rebuilds an operator from its parameter arrays (the inverse of
/// [`LinearOperator::params`]). It validates every array it reads (the accessors of [`Params`] check
/// dtype, shape and finiteness and name the field in their errors).
pub type OperatorLoader = Arc<dyn Fn(&Params<'_>) -> Result<Box<dyn LinearOperator>> + Send + Sync>;

/// The kinds this crate reads itself: they cannot be registered.
pub const BUILTIN_KINDS: [&str; 8] =
    ["identity", "mask", "projection", "kspace", "blur", "downsample", "compose", "stack"];

/// Whether `name` is a leaf name of the kind grammar: non-empty ASCII letters, digits and `_`.
pub fn is_kind_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A table of loaders for custom operator kinds, consulted after the built-in kinds.
#[derive(Clone, Default)]
pub struct OperatorRegistry {
    loaders: HashMap<String, OperatorLoader>,
}

impl std::fmt::Debug for OperatorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRegistry").field("kinds", &self.kinds()).finish()
    }
}

impl OperatorRegistry {
    /// An empty registry (the built-in kinds are always read, without being listed here).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `loader` for operators of kind `kind`.
    ///
    /// # Errors
    /// [`Error::Registry`] when `kind` is a built-in kind ([`BUILTIN_KINDS`]), is already registered, or is
    /// not a name of ASCII letters, digits and `_`.
    pub fn register<F>(&mut self, kind: &str, loader: F) -> Result<()>
    where
        F: Fn(&Params<'_>) -> Result<Box<dyn LinearOperator>> + Send + Sync + 'static,
    {
        let refuse = |reason: String| Err(Error::Registry { kind: kind.to_string(), reason });
        if !is_kind_name(kind) {
            return refuse("a kind is a non-empty name of ASCII letters, digits and `_`".into());
        }
        if BUILTIN_KINDS.contains(&kind) {
            return refuse(format!("{kind:?} is a built-in operator kind of diem-operators"));
        }
        if self.loaders.contains_key(kind) {
            return refuse("already registered (a kind names one operator type)".into());
        }
        self.loaders.insert(kind.to_string(), Arc::new(loader));
        Ok(())
    }

    /// Removes the loader of `kind`; returns whether there was one.
    pub fn unregister(&mut self, kind: &str) -> bool {
        self.loaders.remove(kind).is_some()
    }

    /// Whether `kind` has a loader here.
    pub fn contains(&self, kind: &str) -> bool {
        self.loaders.contains_key(kind)
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.loaders.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    /// The loader of `kind`, if registered.
    pub fn loader(&self, kind: &str) -> Option<OperatorLoader> {
        self.loaders.get(kind).cloned()
    }

    /// [`crate::operator_from_params`] with this registry's loaders in place of the process-wide ones.
    ///
    /// # Errors
    /// As [`crate::operator_from_params`].
    pub fn operator_from_params(
        &self,
        kind: &str,
        arrays: &BTreeMap<String, Tensor>,
    ) -> Result<Box<dyn LinearOperator>> {
        crate::params::operator_from_params_with(kind, arrays, &|name| self.loader(name))
    }
}

/// The process-wide registry.
fn global() -> &'static RwLock<OperatorRegistry> {
    static REGISTRY: OnceLock<RwLock<OperatorRegistry>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(OperatorRegistry::new()))
}

/// Registers `loader` for operators of kind `kind` in this process, so that
/// [`crate::operator_from_params`] and [`Observation::load`](crate::Observation::load) read them (also
/// inside `compose[..]` and `stack[..]`).
///
/// # Errors
/// [`Error::Registry`] when `kind` is a built-in kind, is already registered, or is not a name of ASCII
/// letters, digits and `_`.
pub fn register_operator<F>(kind: &str, loader: F) -> Result<()>
where
    F: Fn(&Params<'_>) -> Result<Box<dyn LinearOperator>> + Send + Sync + 'static,
{
    global().write().unwrap_or_else(|e| e.into_inner()).register(kind, loader)
}

/// Removes the process-wide loader of `kind`; returns whether there was one.
pub fn unregister_operator(kind: &str) -> bool {
    global().write().unwrap_or_else(|e| e.into_inner()).unregister(kind)
}

/// Whether `kind` has a process-wide loader.
pub fn is_registered(kind: &str) -> bool {
    global().read().unwrap_or_else(|e| e.into_inner()).contains(kind)
}

/// The process-wide loader of `kind` (the lock is released before the loader runs, so a loader may itself
/// call [`crate::operator_from_params`]).
pub(crate) fn global_loader(kind: &str) -> Option<OperatorLoader> {
    global().read().unwrap_or_else(|e| e.into_inner()).loader(kind)
}
