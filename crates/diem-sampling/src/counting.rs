//! A denoiser wrapper that counts calls, for cost assertions (docs/method.md §4.1, §5.8).

use std::cell::Cell;

use diem_models::Denoiser;
use tch::Tensor;

/// Wraps a denoiser and counts its calls, and how many of them ran with gradients enabled on a leaf that
/// requires grad (the forwards whose graph a posterior denoiser differentiates through).
///
/// ```
/// use diem_linalg::Dplr;
/// use diem_models::{GaussianDenoiser, VeSchedule};
/// use diem_sampling::{CountingDenoiser, Ddim, NoiseRng, Sampler, TimeGrid};
/// use tch::{Device, Kind, Tensor};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let prior = GaussianDenoiser::new(Tensor::zeros([3], (Kind::Double, Device::Cpu)),
///                                   Dplr::identity(3, Kind::Double, Device::Cpu))?;
/// let counted = CountingDenoiser::new(&prior);
/// let ddim = Ddim::new(VeSchedule::default(), TimeGrid::uniform(10)?);
/// ddim.sample(&counted, &[4, 3], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(1))?;
/// assert_eq!(counted.calls(), 11); // T + 1, the final denoise included
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CountingDenoiser<D> {
    inner: D,
    calls: Cell<usize>,
    grad_calls: Cell<usize>,
}

impl<D: Denoiser> CountingDenoiser<D> {
    /// Wraps `inner` with zeroed counters.
    pub fn new(inner: D) -> Self {
        Self { inner, calls: Cell::new(0), grad_calls: Cell::new(0) }
    }

    /// Calls so far.
    pub fn calls(&self) -> usize {
        self.calls.get()
    }

    /// Calls whose input required grad (forwards recorded on an autograd graph).
    pub fn grad_calls(&self) -> usize {
        self.grad_calls.get()
    }

    /// Zeroes the counters.
    pub fn reset(&self) {
        self.calls.set(0);
        self.grad_calls.set(0);
    }

    /// The wrapped denoiser.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

impl<D: Denoiser> Denoiser for CountingDenoiser<D> {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.calls.set(self.calls.get() + 1);
        if x_t.requires_grad() {
            self.grad_calls.set(self.grad_calls.get() + 1);
        }
        self.inner.denoise(x_t, sigma)
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.inner.prior_mean()
    }
}
