//! Composition (`A = A_k ∘ … ∘ A_1`) and stacking (`A x = [A_1 x; …; A_k x]`) of operators.

use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::operator::{broadcast_batch, check_input, LinearOperator};

/// `A x = A_k(… A_2(A_1 x))`: the operators are listed in the order they are applied, and
/// `Aᵀ u = A_1ᵀ(… A_kᵀ u)`. Parameter counts broadcast (each `P_i` is 1 or the common `P`).
#[derive(Debug, Clone)]
pub struct Compose {
    ops: Vec<Box<dyn LinearOperator>>,
}

impl Compose {
    /// Chains `ops` (applied first to last). Each output shape must equal the next input shape.
    pub fn new(ops: Vec<Box<dyn LinearOperator>>) -> Result<Self> {
        if ops.is_empty() {
            return Err(Error::param("Compose", "ops", "needs at least one operator"));
        }
        for (i, pair) in ops.windows(2).enumerate() {
            if pair[0].y_shape() != pair[1].x_shape() {
                return Err(Error::Shape {
                    op: "Compose",
                    what: format!("input of operator {} ({})", i + 1, pair[1].kind()),
                    expected: format!(
                        "{:?} (the output of operator {i}, {})",
                        pair[0].y_shape(),
                        pair[0].kind()
                    ),
                    got: pair[1].x_shape(),
                });
            }
        }
        check_batches("Compose", &ops)?;
        Ok(Self { ops })
    }

    /// The chained operators, first applied first.
    pub fn ops(&self) -> &[Box<dyn LinearOperator>] {
        &self.ops
    }
}

fn check_batches(op: &'static str, ops: &[Box<dyn LinearOperator>]) -> Result<i64> {
    let batches: Vec<i64> = ops.iter().map(|o| o.batch()).collect();
    broadcast_batch(&batches).ok_or_else(|| {
        Error::param(
            op,
            "ops",
            format!("parameter counts {batches:?} do not broadcast (each must be 1 or P)"),
        )
    })
}

fn child_kinds(ops: &[Box<dyn LinearOperator>]) -> String {
    ops.iter().map(|o| o.kind()).collect::<Vec<_>>().join(",")
}

fn child_params(ops: &[Box<dyn LinearOperator>]) -> Vec<(String, Tensor)> {
    ops.iter()
        .enumerate()
        .flat_map(|(i, o)| o.params().into_iter().map(move |(name, t)| (format!("{i}.{name}"), t)))
        .collect()
}

impl LinearOperator for Compose {
    fn kind(&self) -> String {
        format!("compose[{}]", child_kinds(&self.ops))
    }
    fn batch(&self) -> i64 {
        broadcast_batch(&self.ops.iter().map(|o| o.batch()).collect::<Vec<_>>()).unwrap_or(1)
    }
    fn x_shape(&self) -> Vec<i64> {
        self.ops[0].x_shape()
    }
    fn y_shape(&self) -> Vec<i64> {
        self.ops[self.ops.len() - 1].y_shape()
    }
    fn device(&self) -> Device {
        self.ops[0].device()
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        check_input("Compose::apply", "x", x, &self.x_shape(), self.batch());
        self.ops.iter().fold(x.shallow_clone(), |v, op| op.apply(&v))
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        check_input("Compose::adjoint", "y", y, &self.y_shape(), self.batch());
        self.ops.iter().rev().fold(y.shallow_clone(), |v, op| op.adjoint(&v))
    }
    fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator> {
        Box::new(Self { ops: self.ops.iter().map(|o| o.select(indices)).collect() })
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self { ops: self.ops.iter().map(|o| o.to_device(device)).collect() })
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        child_params(&self.ops)
    }
    fn boxed_clone(&self) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
}

/// `A x = [vec(A_1 x); …; vec(A_k x)]`, the flattened outputs concatenated, so `y_shape = [Σ_i M_i]`;
/// `Aᵀ u = Σ_i A_iᵀ u_i`. All operators share the input shape.
#[derive(Debug, Clone)]
pub struct Stack {
    ops: Vec<Box<dyn LinearOperator>>,
}

impl Stack {
    /// Stacks `ops` (at least one, identical input shapes, broadcastable parameter counts).
    pub fn new(ops: Vec<Box<dyn LinearOperator>>) -> Result<Self> {
        if ops.is_empty() {
            return Err(Error::param("Stack", "ops", "needs at least one operator"));
        }
        let x0 = ops[0].x_shape();
        for (i, o) in ops.iter().enumerate() {
            if o.x_shape() != x0 {
                return Err(Error::Shape {
                    op: "Stack",
                    what: format!("input of operator {i} ({})", o.kind()),
                    expected: format!("{x0:?}"),
                    got: o.x_shape(),
                });
            }
        }
        check_batches("Stack", &ops)?;
        Ok(Self { ops })
    }

    /// The stacked operators.
    pub fn ops(&self) -> &[Box<dyn LinearOperator>] {
        &self.ops
    }
}

impl LinearOperator for Stack {
    fn kind(&self) -> String {
        format!("stack[{}]", child_kinds(&self.ops))
    }
    fn batch(&self) -> i64 {
        broadcast_batch(&self.ops.iter().map(|o| o.batch()).collect::<Vec<_>>()).unwrap_or(1)
    }
    fn x_shape(&self) -> Vec<i64> {
        self.ops[0].x_shape()
    }
    fn y_shape(&self) -> Vec<i64> {
        vec![self.ops.iter().map(|o| o.y_numel()).sum()]
    }
    fn device(&self) -> Device {
        self.ops[0].device()
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        let n = check_input("Stack::apply", "x", x, &self.x_shape(), self.batch());
        let parts: Vec<Tensor> = self.ops.iter().map(|o| o.apply(x).reshape([n, -1])).collect();
        Tensor::cat(&parts, 1)
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        let n = check_input("Stack::adjoint", "y", y, &self.y_shape(), self.batch());
        let sizes: Vec<i64> = self.ops.iter().map(|o| o.y_numel()).collect();
        let parts = y.split_with_sizes(&sizes, 1);
        let mut out: Option<Tensor> = None;
        for (o, u) in self.ops.iter().zip(parts) {
            let mut shape = vec![n];
            shape.extend(o.y_shape());
            let v = o.adjoint(&u.reshape(&shape));
            out = Some(match out {
                None => v,
                Some(acc) => acc + v,
            });
        }
        // `ops` is non-empty by construction.
        out.unwrap_or_else(|| Tensor::zeros([0], (y.kind(), y.device())))
    }
    fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator> {
        Box::new(Self { ops: self.ops.iter().map(|o| o.select(indices)).collect() })
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self { ops: self.ops.iter().map(|o| o.to_device(device)).collect() })
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        child_params(&self.ops)
    }
    fn boxed_clone(&self) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
}
