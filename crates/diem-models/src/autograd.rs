//! Vector-Jacobian products through libtorch's autograd (docs/method.md §3.4, §5.1).
//!
//! MMPS never forms a Jacobian: it needs `J^T u` for several cotangents `u` per sampling step, all from one
//! forward pass. [`vjp`] computes `J^T u = ∇_x <f(x), u>` with `keep_graph` so the graph can be reused.

use tch::Tensor;

/// The vector-Jacobian product `J^T u`, where `J = ∂output/∂input`.
///
/// Computed as the gradient of `<output, u>` with respect to `input`, i.e. `Σ_j u_j ∂output_j/∂input`.
/// `input` must require gradients and `output` must have been computed from it with gradients enabled;
/// `cotangent` has `output`'s shape. With `keep_graph`, the forward graph survives for further VJPs
/// (docs/method.md §12.2 "Graph lifetime"); without it the graph is freed.
///
/// # Errors
/// Fails (instead of panicking) when the shapes differ or `output` does not depend on `input`.
pub fn vjp(
    output: &Tensor,
    input: &Tensor,
    cotangent: &Tensor,
    keep_graph: bool,
) -> Result<Tensor, tch::TchError> {
    if output.size() != cotangent.size() {
        return Err(tch::TchError::Shape(format!(
            "vjp: cotangent shape {:?} differs from output shape {:?}",
            cotangent.size(),
            output.size()
        )));
    }
    let inner = output.f_mul(cotangent)?.f_sum(output.kind())?;
    let mut grads = Tensor::f_run_backward(&[inner], &[input], keep_graph, false)?;
    grads.pop().ok_or_else(|| tch::TchError::Torch("vjp: autograd returned no gradient".into()))
}
