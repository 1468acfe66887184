//! FID and Inception Score from a user-supplied Inception TorchScript file (docs/method.md §9b "Evaluation", §11.1).
//!
//! The project ships no network weights: the user exports torch-fidelity's Inception-v3 (the TensorFlow-FID
//! compatible `inception-v3-compat` with `pt_inception-2015-12-05` weights) once, as TorchScript, and passes the
//! file to [`InceptionNet::load`].
//!
//! # The contract
//!
//! `forward(images)` takes f32 `[N, 3, H, W]` with values in `[0, 255]` at any `H, W` (the module resizes
//! itself to 299×299, as torch-fidelity's extractor does) and returns either a tuple `(features [N, D], logits
//! [N, K])` (torch-fidelity: the 2048-d `2048` pool features and the 1008 `logits_unbiased`) or a single tensor
//! `features [N, D]`, in which case the Inception Score is unavailable.
//!
//! # Exporting the network (Python, once)
//!
//! ```python
//! import torch
//! from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
//!
//! class FidIsInception(torch.nn.Module):
//!     def __init__(self):
//!         super().__init__()
//!         self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
//!
//!     def forward(self, x):
//!         # torch-fidelity wants uint8 images; ours are f32 already quantized to 0..255
//!         features, logits = self.net(x.round().clamp(0, 255).to(torch.uint8))
//!         return features, logits
//!
//! net = FidIsInception().eval()
//! example = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8).float()
//! with torch.no_grad():
//!     torch.jit.trace(net, example, check_trace=False).save("inception-fid-is.pt")
//! ```
//!
//! Tracing is the robust choice (torch-fidelity's extractor uses Python control flow that `torch.jit.script`
//! may reject), but a trace may bake in the example's resolution (the resize computes sizes in Python): trace
//! with an example at the resolution you evaluate (32×32 for CIFAR-10). [`InceptionNet::load`] maps the weights
//! to the requested device. torch-fidelity fetches its weights itself the first time (in Python); this crate
//! never downloads anything.
//!
//! # Usage
//!
//! ```no_run
//! use diem_metrics::{fid_is, to_uint8_range, FeatureStats, InceptionNet};
//! use tch::{Device, Kind, Tensor};
//! # fn main() -> Result<(), diem_metrics::MetricsError> {
//! let net = InceptionNet::load("inception-fid-is.pt", Device::cuda_if_available())?;
//! // Reference statistics of the CIFAR-10 training set, computed once and cached.
//! let train = Tensor::rand([50_000, 3, 32, 32], (Kind::Float, Device::Cpu)) * 255.0;
//! let (features, _) = net.features_and_logits(&train, 200)?;
//! let reference = FeatureStats::from_features(&features)?;
//! reference.save("cifar10-train-stats.npz")?;
//! // Generated diem images live in [−2, 2]: quantize them like a uint8 PNG first.
//! let samples = Tensor::randn([50_000, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let report = fid_is(&net, &to_uint8_range(&samples, -2.0, 2.0), &reference, 200, 10)?;
//! println!("FID {:.2}  IS {:?}", report.fid, report.is_mean);
//! # Ok(()) }
//! ```

use std::path::Path;

use tch::{Device, IValue, Kind, Tensor};

use crate::error::{MetricsError, Result};
use crate::fid::{frechet_distance, FeatureStats};
use crate::isc::{inception_score_shuffled, TORCH_FIDELITY_SEED};
use crate::torchscript::{describe, finite_min_max, Script};

const METRIC: &str = "inception";

/// A user-supplied TorchScript Inception network (see the [module docs](self) for the contract and the export).
pub struct InceptionNet {
    script: Script,
}

impl std::fmt::Debug for InceptionNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InceptionNet")
            .field("path", &self.script.path)
            .field("device", &self.script.device)
            .finish()
    }
}

impl InceptionNet {
    /// Loads the TorchScript file onto `device` in eval mode. A missing or corrupt file gives
    /// [`MetricsError::ModelFile`] naming the path.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        Ok(Self { script: Script::load(METRIC, path.as_ref(), device)? })
    }

    /// The file the network was loaded from.
    pub fn path(&self) -> &Path {
        &self.script.path
    }

    /// The device the network runs on.
    pub fn device(&self) -> Device {
        self.script.device
    }

    /// Runs the network in batches of `batch` images under `no_grad`.
    ///
    /// `images` is `[N, 3, H, W]` with values in `[0, 255]` on any device (see [`to_uint8_range`]); each batch
    /// is moved to the network's device as f32. Returns `(features [N, D], logits [N, K])` on the CPU as the
    /// network computed them (f32), with `None` for the logits when the network returns features only.
    pub fn features_and_logits(&self, images: &Tensor, batch: i64) -> Result<(Tensor, Option<Tensor>)> {
        let size = images.size();
        if size.len() != 4 || size[1] != 3 || size[0] < 1 || size[2] < 1 || size[3] < 1 {
            return Err(MetricsError::Shape {
                metric: METRIC,
                what: format!("images must be a non-empty [N, 3, H, W] batch, got {size:?}"),
            });
        }
        if batch < 1 {
            return Err(MetricsError::Parameter {
                metric: METRIC,
                name: "batch",
                value: batch as f64,
                expected: "an integer ≥ 1",
            });
        }
        let (min, max) = finite_min_max(METRIC, "images", images)?;
        if min < 0.0 || max > 255.0 {
            return Err(MetricsError::Range {
                metric: METRIC,
                input: "images",
                expected: "[0, 255]",
                min,
                max,
            });
        }
        let n = size[0];
        let mut features = Vec::new();
        let mut logits = Vec::new();
        let mut with_logits = None;
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let (f, l) = self.run_batch(&images.f_narrow(0, start, len)?, len)?;
            if *with_logits.get_or_insert(l.is_some()) != l.is_some() {
                return Err(self.script.output_error(
                    "the same output arity (tuple or single tensor) for every batch",
                    "a tuple for some batches and a single tensor for others",
                ));
            }
            if let Some(first) = features.first() {
                self.check_consistent(first, &f, "features")?;
            }
            if let Some(l) = l {
                if let Some(first) = logits.first() {
                    self.check_consistent(first, &l, "logits")?;
                }
                logits.push(l);
            }
            features.push(f);
            start += len;
        }
        let features = Tensor::f_cat(&features, 0)?;
        let logits = if logits.is_empty() { None } else { Some(Tensor::f_cat(&logits, 0)?) };
        Ok((features, logits))
    }

    fn check_consistent(&self, first: &Tensor, next: &Tensor, what: &str) -> Result<()> {
        if first.size()[1] != next.size()[1] {
            return Err(self.script.output_error(
                format!("{what} of the same width for every batch"),
                format!("widths {} and {}", first.size()[1], next.size()[1]),
            ));
        }
        Ok(())
    }

    /// One forward call: checks arity and shapes and moves the outputs to the CPU.
    fn run_batch(&self, chunk: &Tensor, len: i64) -> Result<(Tensor, Option<Tensor>)> {
        const EXPECTED: &str =
            "forward(images [B, 3, H, W]) to return (features [B, D], logits [B, K]) or features [B, D]";
        let out = self.script.forward(&[chunk], "forward(images)")?;
        let check = |t: &Tensor| -> Result<Tensor> {
            let s = t.size();
            if s.len() != 2 || s[0] != len || s[1] < 1 {
                return Err(self
                    .script
                    .output_error(EXPECTED, format!("a tensor of shape {s:?} for B = {len}")));
            }
            Ok(t.f_to_device(Device::Cpu)?)
        };
        match out {
            IValue::Tensor(f) => Ok((check(&f)?, None)),
            IValue::Tuple(items) | IValue::GenericList(items) => match items.as_slice() {
                [IValue::Tensor(f), IValue::Tensor(l)] => Ok((check(f)?, Some(check(l)?))),
                _ => Err(self.script.output_error(EXPECTED, describe(&IValue::Tuple(items)))),
            },
            IValue::TensorList(ts) => match ts.as_slice() {
                [f, l] => Ok((check(f)?, Some(check(l)?))),
                _ => Err(self.script.output_error(EXPECTED, format!("a list of {} tensors", ts.len()))),
            },
            other => Err(self.script.output_error(EXPECTED, describe(&other))),
        }
    }
}

/// FID and Inception Score of a set of generated images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FidIs {
    /// Fréchet Inception Distance against the reference statistics.
    pub fid: f64,
    /// Inception Score mean over the splits (`None` when the network returns no logits).
    pub is_mean: Option<f64>,
    /// Inception Score population standard deviation over the splits (`None` without logits).
    pub is_std: Option<f64>,
    /// Number of images evaluated.
    pub count: i64,
}

/// FID of `images` against `reference` statistics ([`frechet_distance`]) and, when the network gives logits, the
/// Inception Score with `splits` splits after torch-fidelity's default shuffle
/// ([`inception_score_shuffled`] with seed 2020) — torch-fidelity's defaults
/// (docs/method.md §9b "Evaluation").
///
/// `images` is `[N, 3, H, W]` in `[0, 255]` (use [`to_uint8_range`]); the network runs in batches of `batch`.
pub fn fid_is(
    net: &InceptionNet,
    images: &Tensor,
    reference: &FeatureStats,
    batch: i64,
    splits: usize,
) -> Result<FidIs> {
    let n = images.size().first().copied().unwrap_or(0);
    if splits < 1 || splits as i64 > n.max(1) {
        return Err(MetricsError::TooFewSamples {
            metric: "inception_score",
            needed: splits.max(1) as i64,
            got: n,
        });
    }
    let (features, logits) = net.features_and_logits(images, batch)?;
    let stats = FeatureStats::from_features(&features)?;
    let fid = frechet_distance(&stats, reference)?;
    let (is_mean, is_std) = match logits {
        Some(l) => {
            let (m, s) = inception_score_shuffled(&l, splits, TORCH_FIDELITY_SEED)?;
            (Some(m), Some(s))
        }
        None => (None, None),
    };
    Ok(FidIs { fid, is_mean, is_std, count: stats.count })
}

/// Maps diem images with values in `[lo, hi]` (e.g. CIFAR's `[−2, 2]`) to `[0, 255]` quantized as when saving a
/// uint8 PNG: `clamp(floor(255 (x − lo) / (hi − lo) + 0.5), 0, 255)` (round half up, like torchvision's
/// `save_image`), returned as f32 on the input's device — the input of [`InceptionNet::features_and_logits`].
///
/// With `hi ≤ lo` or non-finite bounds the map is undefined and the result is all NaN, which
/// [`InceptionNet::features_and_logits`] rejects with [`MetricsError::NonFinite`].
pub fn to_uint8_range(images: &Tensor, lo: f64, hi: f64) -> Tensor {
    let x = images.to_kind(Kind::Float);
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return x.full_like(f64::NAN);
    }
    ((x - lo) * (255.0 / (hi - lo)) + 0.5).floor().clamp(0.0, 255.0)
}
