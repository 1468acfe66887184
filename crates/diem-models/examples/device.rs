//! Prints the device diem would use here and checks autograd on it with one vector-Jacobian product.
//!
//! Run with `cargo xtask cargo run -p diem-models --example device`; set `DIEM_DEVICE=cpu|cuda|cuda:N`
//! to override the automatic choice.

use diem_models::{device_from_env, vjp};
use tch::{Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = device_from_env()?;
    println!(
        "device: {device:?} (CUDA devices visible to libtorch: {})",
        diem_models::device::cuda_device_count()
    );
    let x = Tensor::linspace(-1.0, 1.0, 5, (Kind::Float, device)).set_requires_grad(true);
    let y = x.sin();
    // d sin(x)/dx = cos(x): the VJP with a ones cotangent is cos(x).
    let g = vjp(&y, &x, &y.ones_like(), false)?;
    let err = (&g - x.detach().cos()).abs().max().double_value(&[]);
    println!("VJP of sin at {:?}: {:?}", Vec::<f32>::try_from(&x.detach())?, Vec::<f32>::try_from(&g)?);
    println!("max error against cos(x): {err:.2e}");
    Ok(())
}
