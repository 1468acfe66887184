//! LPIPS from a user-supplied TorchScript file (docs/method.md §9d "Protocol": LPIPS (AlexNet) on the FFHQ benchmark).
//!
//! # The contract
//!
//! `forward(x, y)` with `x, y` f32 `[N, 3, H, W]` in `[−1, 1]` returns the distances, shape `[N]` or
//! `[N, 1, 1, 1]` (what the `lpips` package's `LPIPS(net='alex')` returns).
//!
//! # Exporting the network (Python, once)
//!
//! ```python
//! import torch, lpips
//!
//! net = lpips.LPIPS(net="alex").eval()
//! x = torch.rand(2, 3, 256, 256) * 2 - 1
//! y = torch.rand(2, 3, 256, 256) * 2 - 1
//! with torch.no_grad():
//!     torch.jit.trace(net, (x, y), check_trace=False).save("lpips-alex.pt")
//! ```
//!
//! Trace at the resolution you evaluate (256×256 for FFHQ): a trace may bake in the example's sizes.
//!
//! docs/method.md §9d computes the metrics on `clip((x + 1)/2, 0, 1)`; LPIPS takes that image mapped back to `[−1, 1]`,
//! i.e. `2 clip((x + 1)/2, 0, 1) − 1 = clip(x, −1, 1)`.
//!
//! ```no_run
//! use diem_metrics::Lpips;
//! use tch::{Device, Kind, Tensor};
//! # fn main() -> Result<(), diem_metrics::MetricsError> {
//! let lpips = Lpips::load("lpips-alex.pt", Device::Cpu)?;
//! let x = Tensor::rand([4, 3, 256, 256], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
//! let y = Tensor::rand([4, 3, 256, 256], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
//! let d = lpips.distance(&x, &y)?; // [4]
//! println!("mean LPIPS {:.4}", d.mean(Kind::Double).double_value(&[]));
//! # Ok(()) }
//! ```

use std::path::Path;

use tch::{Device, IValue, Tensor};

use crate::error::{MetricsError, Result};
use crate::torchscript::{describe, finite_min_max, Script};

const METRIC: &str = "lpips";

/// Slack on the `[−1, 1]` input range, for images mapped there in f32 arithmetic.
const RANGE_SLACK: f64 = 1e-4;

/// A user-supplied TorchScript LPIPS network (see the [module docs](self) for the contract and the export).
pub struct Lpips {
    script: Script,
}

impl std::fmt::Debug for Lpips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lpips").field("path", &self.script.path).field("device", &self.script.device).finish()
    }
}

impl Lpips {
    /// Loads the TorchScript file onto `device` in eval mode. A missing or corrupt file gives
    /// [`MetricsError::ModelFile`] naming the path.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        Ok(Self { script: Script::load(METRIC, path.as_ref(), device)? })
    }

    /// The file the network was loaded from.
    pub fn path(&self) -> &Path {
        &self.script.path
    }

    /// LPIPS distance per image pair, under `no_grad`: `x`, `y` are `[N, 3, H, W]` of equal shape with values in
    /// `[−1, 1]`, on any device (moved to the network's device as f32). Returns `[N]` on the CPU in the network's
    /// float kind (f32 for the `lpips` package).
    pub fn distance(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 4 || size[1] != 3 || size.iter().any(|&s| s < 1) || y.size() != size {
            return Err(MetricsError::Shape {
                metric: METRIC,
                what: format!(
                    "expected two non-empty [N, 3, H, W] batches of equal shape, got {size:?} and {:?}",
                    y.size()
                ),
            });
        }
        for (t, input) in [(x, "x"), (y, "y")] {
            let (min, max) = finite_min_max(METRIC, input, t)?;
            if min < -1.0 - RANGE_SLACK || max > 1.0 + RANGE_SLACK {
                return Err(MetricsError::Range { metric: METRIC, input, expected: "[-1, 1]", min, max });
            }
        }
        let n = size[0];
        let expected = format!("forward(x, y) to return distances of shape [{n}] or [{n}, 1, 1, 1]");
        let out = match self.script.forward(&[x, y], "forward(x, y)")? {
            IValue::Tensor(t) => t,
            other => return Err(self.script.output_error(expected, describe(&other))),
        };
        let s = out.size();
        let ok = s == [n] || s == [n, 1, 1, 1] || s == [n, 1];
        if !ok {
            return Err(self.script.output_error(expected, format!("a tensor of shape {s:?}")));
        }
        Ok(out.f_reshape([n])?.f_to_device(Device::Cpu)?)
    }
}
