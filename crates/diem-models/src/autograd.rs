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
    // libtorch's engine dereferences the output's gradient edge unchecked: a detached output (or one
    // computed under `no_grad`), or an input that does not require gradients, would crash the process.
    if !input.requires_grad() || !output.requires_grad() {
        return Err(tch::TchError::Torch(format!(
            "vjp: the output has no autograd graph back to the input (input requires_grad = {}, output \
             requires_grad = {}): the function was detached, or computed under no_grad",
            input.requires_grad(),
            output.requires_grad()
        )));
    }
    let inner = output.f_mul(cotangent)?.f_sum(output.kind())?;
    let mut grads = Tensor::f_run_backward(&[inner], &[input], keep_graph, false)?;
    grads.pop().ok_or_else(|| tch::TchError::Torch("vjp: autograd returned no gradient".into()))
}

#[cfg(test)]
mod tests {
    use super::vjp;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn a_detached_output_is_an_error_not_a_crash() {
        let x = Tensor::ones([3], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let u = Tensor::ones([3], (Kind::Double, Device::Cpu));
        let y = &x * 2.0;
        let g = vjp(&y, &x, &u, true).expect("a graph exists");
        assert_eq!(Vec::<f64>::try_from(&g).expect("f64"), vec![2.0; 3]);
        assert!(vjp(&y.detach(), &x, &u, false).is_err());
        assert!(vjp(&y, &x.detach(), &u, false).is_err());
    }
}
