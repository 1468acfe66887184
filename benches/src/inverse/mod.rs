//! The FFHQ-256 posterior-sampling benchmark of the paper's Appendix E (docs/method.md §9d, Table 4 in §11.2, the
//! cost table of §11.3): four linear inverse problems, seven posterior samplers, T ∈ {10, 100, 1000} steps,
//! PSNR / SSIM / LPIPS over the first 100 FFHQ images. Run it with
//!
//! ```text
//! cargo xtask posterior-bench --prior DIR --images DIR [--out runs/posterior-bench] [--count 100]
//!     [--tasks box,random,motion,sr4] [--methods mmps1,mmps3,mmps5,dps,pgdm,tmpd,diffpir]
//!     [--steps 10,100,1000] [--lpips lpips-alex.pt] [--seed 0] [--size 256] [--batch 1]
//! ```
//!
//! (the `inverse_bench` binary of this crate). The prior, the images and the LPIPS weights are external
//! files: this is a harness the user points at them; CI runs it only on tiny test-made inputs.
//!
//! # Inputs
//!
//! - `--prior DIR`, detected from its content ([`BenchPrior::load`]):
//!   - a diem checkpoint (`config.json` + `weights.safetensors`, e.g. a lap folder of an EM run): a VE EDM
//!     denoiser sampled with its own schedule (DDPM, T steps, final denoise, docs/method.md §4.1–4.2);
//!   - a VP ε-network exported to TorchScript: `model.pt` with `forward(x [N,3,H,W], t [N] int64) → [N,C,H,W]`
//!     (the first 3 channels are ε̂) and `prior.json`
//!     `{"kind": "vp-eps", "beta_start": 1e-4, "beta_end": 0.02, "timesteps": 1000, "clip": true,
//!     "out_channels": 6}`. It is wrapped as a VE denoiser ([`VpEpsDenoiser`]) and sampled on the respaced
//!     grid of docs/method.md §4.6, which diem's DDPM reproduces exactly ([`prior`] explains why; a test checks it
//!     against a direct implementation of §4.6).
//! - `--images DIR`: the first `--count` PNG/JPEG files sorted by name (FFHQ `00000.png` …), centre-cropped and
//!   resized to `--size` ([`images`]).
//! - `--lpips FILE`: the TorchScript LPIPS (AlexNet) network of [`diem_metrics::Lpips`] (its docs show the
//!   export); without it the LPIPS column shows "–".
//!
//! # Exporting the DPS FFHQ-256 ADM checkpoint
//!
//! With the DPS repository (github.com/DPS2022/diffusion-posterior-sampling) on the Python path and its
//! `ffhq_10m.pt` downloaded, `benches/python/export_dps_adm.py` (run from that repository's root) builds the
//! model with the DPS config (`num_channels 128, num_res_blocks 1, learn_sigma true, attention 16,
//! dropout 0, use_fp16 false`), loads the weights, traces `forward(x, t)` and writes `model.pt` and
//! `prior.json` into the output folder:
//!
//! ```text
//! python benches/python/export_dps_adm.py --checkpoint models/ffhq_10m.pt --out priors/ffhq-adm
//! ```
//!
//! # Outputs (in `--out`, default `runs/posterior-bench`)
//!
//! - `results.csv`: one row per image × task × method × steps (PSNR, SSIM, LPIPS, seconds, costs);
//! - `summary.json`: the configuration, the prior, per-cell means and standard deviations, the costs;
//! - `table.md`: Table 4's layout (rows method × steps, columns the tasks, cells "LPIPS / PSNR / SSIM"), then
//!   the paper's values (docs/method.md §11.2);
//! - `cost.md`: VJPs per step, ms per step for each T and peak memory per method (docs/method.md §11.3), each method
//!   measured in its own child process (`--single`), with the paper's values;
//! - `grid-<task>.png`: truth, observation and every method's sample at the largest T for the first images;
//! - `log.jsonl`: one JSON line per record as it is produced.
//!
//! Protocol details (docs/method.md §9d): batch size 1 (`--batch` can raise it), the same measurement (operator and
//! noise from `--seed`) for every method, sampler noise seeded with `seed + image index`, metrics on
//! `clip((x + 1)/2, 0, 1)`. For `--size` below 256 the task geometry scales ([`tasks`]).
//!
//! ```no_run
//! use diem_benches::inverse::{load_images, run_benchmark, BenchPrior, InverseConfig};
//! # fn main() -> diem_benches::Result<()> {
//! let prior = BenchPrior::load("priors/ffhq-adm".as_ref(), tch::Device::Cpu)?;
//! let (x, names) = load_images("data/ffhq".as_ref(), 2, 256)?;
//! let outcome = run_benchmark(&InverseConfig::default(), &prior, &x, &names, None, &mut |_| {})?;
//! println!("{} records", outcome.records.len());
//! # Ok(())
//! # }
//! ```

pub mod harness;
pub mod images;
pub mod memory;
pub mod methods;
pub mod output;
pub mod prior;
pub mod tasks;

pub use harness::{image_metrics, run_benchmark, to_unit, InverseConfig, Outcome, Record, TaskGrid};
pub use images::{list_images, load_image, load_images, save_png};
pub use memory::{gpu_memory_mib, MemoryReport};
pub use methods::{sample_batch, Method, RunCost, ScaledDps, VpGdm};
pub use output::{write_outputs, CellSummary, CostSummary, PAPER_COST, PAPER_TABLE};
pub use prior::{
    BenchPrior, PlanSchedule, RespacedSchedule, SamplingPlan, ScaledDenoiser, VpEpsDenoiser, VpPriorConfig,
    VpTable,
};
pub use tasks::{Task, TaskGeometry};
