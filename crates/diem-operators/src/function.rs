//! An operator given by a closure: [`FnOperator`].

use std::sync::{Arc, Mutex};

use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::operator::{check_input, check_x_shape, vjp_adjoint, LinearOperator};

/// A closure `Tensor → Tensor`, shared by the clones of an [`FnOperator`]. A `tch::Tensor` is `Send` but
/// not `Sync`, so a closure that captures one (the usual case: weights) is only `Send`; the mutex makes the
/// shared closure `Sync`, so the operator stays `Send` as [`LinearOperator`] requires. Calls on clones
/// from several threads take turns.
type Map = Arc<Mutex<Box<dyn Fn(&Tensor) -> Tensor + Send>>>;

/// Calls a shared closure (a closure that panicked earlier left nothing half-written: the lock is reused).
fn call(map: &Map, t: &Tensor) -> Tensor {
    let f = map.lock().unwrap_or_else(|e| e.into_inner());
    f(t)
}

/// A linear operator given only as a closure `f : [N, ..x_shape] → [N, ..y_shape]`, shared by any batch
/// (`batch() == 1`). Its adjoint is autograd's ([`crate::operator::vjp_adjoint`]) unless an explicit one is
/// given with [`FnOperator::with_adjoint`]. Clones share the closures (`Arc`). A closure may capture
/// tensors (it needs to be `Send`, not `Sync`), but must not call the operator that holds it.
///
/// The closures must be linear, built from differentiable libtorch operations, and work on whatever
/// device and float dtype their input has (create any tensor they need with `x.device()` and `x.kind()`):
/// [`LinearOperator::to_device`] only records the device. An `FnOperator` cannot be saved in an
/// observation file (a closure has no arrays); write a type with `kind` and `params` for that (see
/// [`crate::registry`]).
///
/// ```
/// use diem_operators::{FnOperator, LinearOperator};
/// use tch::{Device, Kind, Tensor};
///
/// // Sums of adjacent pairs: [N, 6] → [N, 3].
/// let op = FnOperator::new(&[6], &[3], |x| x.reshape([-1, 3, 2]).sum_dim_intlist([2i64].as_slice(), false, x.kind()))?;
/// let x = Tensor::ones([2, 6], (Kind::Double, Device::Cpu));
/// assert_eq!(op.apply(&x).size(), [2, 3]);
/// assert_eq!(op.adjoint(&Tensor::ones([2, 3], (Kind::Double, Device::Cpu))).size(), [2, 6]);
/// # Ok::<(), diem_operators::Error>(())
/// ```
#[derive(Clone)]
pub struct FnOperator {
    x_shape: Vec<i64>,
    y_shape: Vec<i64>,
    forward: Map,
    adjoint: Option<Map>,
    name: String,
    device: Device,
}

impl std::fmt::Debug for FnOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnOperator")
            .field("name", &self.name)
            .field("x_shape", &self.x_shape)
            .field("y_shape", &self.y_shape)
            .field("explicit_adjoint", &self.adjoint.is_some())
            .field("device", &self.device)
            .finish()
    }
}

impl FnOperator {
    /// The operator `x ↦ f(x)` from samples of shape `x_shape` to samples of shape `y_shape`.
    ///
    /// # Errors
    /// [`Error::Shape`] when either shape is empty, has a dimension below 1 or more than
    /// [`crate::operator::MAX_NUMEL`] entries.
    pub fn new<F>(x_shape: &[i64], y_shape: &[i64], f: F) -> Result<Self>
    where
        F: Fn(&Tensor) -> Tensor + Send + 'static,
    {
        check_x_shape("FnOperator", x_shape)?;
        check_x_shape("FnOperator", y_shape).map_err(|e| match e {
            Error::Shape { op, expected, got, .. } => {
                Error::Shape { op, what: "y_shape".into(), expected, got }
            }
            other => other,
        })?;
        Ok(Self {
            x_shape: x_shape.to_vec(),
            y_shape: y_shape.to_vec(),
            forward: Arc::new(Mutex::new(Box::new(f))),
            adjoint: None,
            name: "fn".into(),
            device: Device::Cpu,
        })
    }

    /// The same operator with the explicit adjoint `g : [N, ..y_shape] → [N, ..x_shape]` in place of
    /// autograd's (check it with [`crate::testing::check_operator`]).
    pub fn with_adjoint<G>(mut self, g: G) -> Self
    where
        G: Fn(&Tensor) -> Tensor + Send + 'static,
    {
        self.adjoint = Some(Arc::new(Mutex::new(Box::new(g))));
        self
    }

    /// The same operator with a name for messages (its kind is `FnOperator(name)`; the default name is
    /// `fn`).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Whether an explicit adjoint was given.
    pub fn has_explicit_adjoint(&self) -> bool {
        self.adjoint.is_some()
    }
}

/// Checks that a closure's output `t` is `[n, ..shape]`.
#[track_caller]
fn check_output(kind: &str, what: &str, t: &Tensor, n: i64, shape: &[i64]) {
    let size = t.size();
    let ok = size.len() == shape.len() + 1 && size[0] == n && size[1..] == *shape;
    assert!(ok, "{kind}: {what} returned shape {size:?}, expected [{n}, {}]", join(shape));
}

fn join(shape: &[i64]) -> String {
    shape.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

impl LinearOperator for FnOperator {
    /// `FnOperator(name)`: not a kind string, so an `FnOperator` is refused by
    /// [`Observation::save`](crate::Observation::save) with a typed error.
    fn kind(&self) -> String {
        format!("FnOperator({})", self.name)
    }
    fn x_shape(&self) -> Vec<i64> {
        self.x_shape.clone()
    }
    fn y_shape(&self) -> Vec<i64> {
        self.y_shape.clone()
    }
    fn device(&self) -> Device {
        self.device
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        let kind = self.kind();
        let n = check_input(&kind, "x", x, &self.x_shape, 1);
        let y = call(&self.forward, x);
        check_output(&kind, "the closure", &y, n, &self.y_shape);
        y
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        match &self.adjoint {
            None => vjp_adjoint(self, y),
            Some(g) => {
                let kind = self.kind();
                let n = check_input(&kind, "y", y, &self.y_shape, 1);
                let x = call(g, y);
                check_output(&kind, "the adjoint closure", &x, n, &self.x_shape);
                x
            }
        }
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self { device, ..self.clone() })
    }
}
