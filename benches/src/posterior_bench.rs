//! Our side of `cargo xtask bench posterior`: posterior sampling speed and memory with the manifold MLP
//! (docs/method.md §9a: 5 features, hidden 256×3, 64 embedding features, EDM preconditioning, VE schedule
//! `(1e-3, 1e1)`), random weights, N samples observed through their own `2 × 5` unit-row projections.
//!
//! The same weights, projections and observations are exported to one safetensors file so that the azula
//! script (`benches/python/azula_posterior.py`) computes the same function on the same problem; a probe
//! `(x, σ) ↦ d_θ(x, σ)` is included for it to check agreement. Each method runs in its own process so its
//! peak resident set size (`VmHWM`) is its own.

use std::path::Path;
use std::time::Instant;

use diem_models::{MlpConfig, NetworkConfig, PriorModel, VeSchedule};
use diem_operators::{NoiseCov, Projection};
use diem_sampling::{
    Covariance, DpsSpec, Measurement, MmpsSpec, NoiseRng, PosteriorMethod, SamplerSpec, SolverSpec,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{BenchError, Result};
use crate::random;

/// The methods compared with azula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchMethod {
    /// Unconditional DDIM (η = 0).
    Ddim,
    /// DPS on DDPM, ζ = 1 (azula's default).
    Dps,
    /// MMPS with 1 CG iteration, on DDIM.
    Mmps1,
    /// MMPS with 3 CG iterations, on DDIM.
    Mmps3,
}

impl BenchMethod {
    /// All methods, in report order.
    pub const ALL: [Self; 4] = [Self::Ddim, Self::Dps, Self::Mmps1, Self::Mmps3];

    /// The command-line and report name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Dps => "dps",
            Self::Mmps1 => "mmps1",
            Self::Mmps3 => "mmps3",
        }
    }

    /// Parses [`BenchMethod::name`].
    ///
    /// # Errors
    /// [`BenchError::Config`] for an unknown name.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            BenchError::config("method", format!("unknown method {name:?} (ddim, dps, mmps1, mmps3)"))
        })
    }
}

impl BenchMethod {
    /// The method in the shared vocabulary: the posterior method (`None`: unconditional sampling) and the
    /// sampler it runs on, as azula runs them: DDIM for the unconditional and MMPS rows, DDPM for DPS with
    /// ζ = [`ZETA`]. MMPS runs with the default safeguards of [`MmpsSpec::new`], which is what the comparison
    /// measured before this vocabulary existed ([`diem_sampling::MmpsConfig::cg`]).
    pub fn posterior(self, steps: usize) -> (Option<PosteriorMethod>, SamplerSpec) {
        let mmps = |n| Some(PosteriorMethod::Mmps(MmpsSpec::new(Covariance::Tweedie, SolverSpec::cg(n))));
        match self {
            Self::Ddim => (None, SamplerSpec::Ddim { steps }),
            Self::Dps => (Some(PosteriorMethod::Dps(DpsSpec { zeta: ZETA })), SamplerSpec::Ddpm { steps }),
            Self::Mmps1 => (mmps(1), SamplerSpec::Ddim { steps }),
            Self::Mmps3 => (mmps(3), SamplerSpec::Ddim { steps }),
        }
    }
}

/// Observation noise σ_y of the benchmark problem (the manifold experiment's, docs/method.md §9a).
pub const SIGMA_Y: f64 = 0.01;
/// The DPS step size ζ (azula's default).
pub const ZETA: f64 = 1.0;

/// The benchmark problem: a randomly initialized manifold MLP prior and per-sample projections.
#[derive(Debug)]
pub struct BenchProblem {
    /// The prior (float32).
    pub model: PriorModel,
    /// Per-sample matrices `[N, 2, 5]`.
    pub matrices: Tensor,
    /// Observations `[N, 2]`.
    pub y: Tensor,
    /// Probe inputs `[P, 5]` and noise levels `[P]` for cross-implementation checks.
    pub probe_x: Tensor,
    /// Probe noise levels `[P]`.
    pub probe_sigma: Tensor,
}

/// The network of docs/method.md §9a.
pub fn network() -> NetworkConfig {
    NetworkConfig::Mlp(MlpConfig::default())
}

impl BenchProblem {
    /// A fresh problem with `samples` observations, weights drawn from `seed` (libtorch's generator).
    ///
    /// # Errors
    /// Model construction errors.
    pub fn generate(samples: i64, seed: u64, device: Device) -> Result<Self> {
        tch::manual_seed(seed as i64);
        let model = PriorModel::new(network(), VeSchedule::manifold(), device)?;
        let mut rng = random::stream(seed, 0);
        let a = random::normal(&mut rng, &[samples, 2, 5]);
        let matrices = (&a / a.square().sum_dim_intlist(-1, true, Kind::Double).sqrt()).to_kind(Kind::Float);
        let x = random::normal(&mut rng, &[samples, 5, 1]).to_kind(Kind::Float);
        let noise = random::normal(&mut rng, &[samples, 2]).to_kind(Kind::Float);
        let y = matrices.matmul(&x).squeeze_dim(-1) + noise * SIGMA_Y;
        let probe_x = random::normal(&mut rng, &[16, 5]).to_kind(Kind::Float);
        let probe_sigma = Tensor::logspace(-3.0, 1.0, 16, 10.0, (Kind::Float, Device::Cpu));
        Ok(Self {
            model,
            matrices: matrices.to_device(device),
            y: y.to_device(device),
            probe_x: probe_x.to_device(device),
            probe_sigma: probe_sigma.to_device(device),
        })
    }

    /// Writes the weights (`net.` + variable name), `A`, `y`, the probe and the prior's probe outputs to one
    /// safetensors file.
    ///
    /// # Errors
    /// libtorch write errors.
    pub fn export(&self, path: &Path) -> Result<()> {
        use diem_models::Denoiser;
        let probe_out = tch::no_grad(|| self.model.denoiser().denoise(&self.probe_x, &self.probe_sigma));
        let mut named: Vec<(String, Tensor)> = self
            .model
            .var_store()
            .variables()
            .into_iter()
            .map(|(k, v)| (format!("net.{k}"), v.detach().to_device(Device::Cpu)))
            .collect();
        for (k, v) in [
            ("A", &self.matrices),
            ("y", &self.y),
            ("probe.x", &self.probe_x),
            ("probe.sigma", &self.probe_sigma),
            ("probe.out", &probe_out),
        ] {
            named.push((k.to_string(), v.to_device(Device::Cpu).contiguous()));
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Reads a file written by [`BenchProblem::export`] onto `device`.
    ///
    /// # Errors
    /// Missing tensors or mismatched shapes, naming the file.
    pub fn import(path: &Path, device: Device) -> Result<Self> {
        let tensors: std::collections::BTreeMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let get = |k: &str| {
            tensors.get(k).map(|t| t.to_device(device)).ok_or_else(|| {
                BenchError::config(format!("{}: tensor {k}", path.display()), "missing from the problem file")
            })
        };
        let model = PriorModel::new(network(), VeSchedule::manifold(), device)?;
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in model.var_store().variables() {
                var.f_copy_(&get(&format!("net.{name}"))?)?;
            }
            Ok(())
        })?;
        Ok(Self {
            model,
            matrices: get("A")?,
            y: get("y")?,
            probe_x: get("probe.x")?,
            probe_sigma: get("probe.sigma")?,
        })
    }

    /// The number of observations N.
    pub fn samples(&self) -> i64 {
        self.y.size()[0]
    }
}

/// One timed run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// `"diem"` or `"azula"`.
    pub implementation: String,
    /// The method's name.
    pub method: String,
    /// Samples N.
    pub samples: i64,
    /// Sampler steps T.
    pub steps: usize,
    /// Wall-clock seconds of the sampling loop.
    pub seconds: f64,
    /// CPU seconds (user + system, all threads) the process spent in the sampling loop, when known: less
    /// sensitive than wall time to other processes sharing the machine.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// `N / seconds`.
    pub samples_per_second: f64,
    /// Peak resident set size of the process (`VmHWM`), MiB, when known.
    pub peak_rss_mib: Option<f64>,
    /// Resident set size just before sampling, MiB, when known.
    pub base_rss_mib: Option<f64>,
    /// libtorch intra-op threads.
    pub threads: i32,
}

/// A field of `/proc/self/status` in MiB (`VmHWM`, `VmRSS`); `None` off Linux.
pub fn proc_status_mib(field: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system, all threads) this process has used so far, from `/proc/self/stat` (fields 14
/// and 15, in Linux's fixed 100 Hz clock ticks); `None` off Linux.
pub fn process_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; the fields after it start past the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'; utime is field 14
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Draws one posterior sample per observation of the problem with `method` and `steps` sampler steps, through
/// the shared vocabulary ([`BenchMethod::posterior`]).
///
/// # Errors
/// Sampling errors, named by the method.
pub fn draw(problem: &BenchProblem, method: BenchMethod, steps: usize, rng: &mut NoiseRng) -> Result<Tensor> {
    let device = problem.y.device();
    let op = Projection::new(problem.matrices.shallow_clone(), &[5])
        .map_err(|e| BenchError::config("projection", e.to_string()))?;
    let prior = problem.model.denoiser();
    let noise = NoiseCov::isotropic(SIGMA_Y).map_err(|e| BenchError::config("sigma_y", e.to_string()))?;
    let (posterior, sampler) = method.posterior(steps);
    let sampler =
        sampler.build(problem.model.schedule()).map_err(|e| BenchError::config("steps", e.to_string()))?;
    match posterior {
        None => sampler.sample(prior, &[problem.samples(), 5], Kind::Float, device, rng),
        Some(p) => {
            let measurement = Measurement::new(&op, &problem.y, noise)
                .map_err(|e| BenchError::config("observations", e.to_string()))?;
            p.sample(prior, measurement, None, sampler.as_ref(), (Kind::Float, device), rng).map(|(x, _)| x)
        }
    }
    .map_err(|e| BenchError::config(method.name(), e.to_string()))
}

/// Runs `method` for `steps` steps on the problem and times it (docs/method.md §4.2–4.3, §5.1, §5.3).
///
/// # Errors
/// Sampling errors.
pub fn run_method(
    problem: &BenchProblem,
    method: BenchMethod,
    steps: usize,
    seed: u64,
) -> Result<BenchResult> {
    let n = problem.samples();
    let mut rng = NoiseRng::torch();
    tch::manual_seed(seed as i64);
    let base = proc_status_mib("VmRSS:");
    let cpu_start = process_cpu_seconds();
    let start = Instant::now();
    let out = draw(problem, method, steps, &mut rng)?;
    let _ = out.sum(Kind::Float).double_value(&[]); // synchronize before stopping the clock
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds().zip(cpu_start).map(|(b, a)| b - a);
    Ok(BenchResult {
        implementation: "diem".into(),
        method: method.name().into(),
        samples: n,
        steps,
        seconds,
        cpu_seconds,
        samples_per_second: n as f64 / seconds,
        peak_rss_mib: proc_status_mib("VmHWM:"),
        base_rss_mib: base,
        threads: tch::get_num_threads(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diem_sampling::{GuidanceConfig, MmpsConfig};

    /// The vocabulary resolves each method to the configuration the comparison with azula always ran.
    #[test]
    fn methods_resolve_to_the_configurations_azula_is_compared_with() {
        for (method, iterations) in [(BenchMethod::Mmps1, 1), (BenchMethod::Mmps3, 3)] {
            let (posterior, sampler) = method.posterior(64);
            assert_eq!(sampler, SamplerSpec::Ddim { steps: 64 });
            let resolved = posterior.unwrap().resolve(None).unwrap();
            let want = GuidanceConfig::Mmps(MmpsConfig::cg(iterations));
            assert_eq!(format!("{resolved:?}"), format!("{want:?}"), "{method:?}");
        }
        let (dps, sampler) = BenchMethod::Dps.posterior(32);
        assert_eq!(sampler, SamplerSpec::Ddpm { steps: 32 });
        assert!(matches!(dps.unwrap().resolve(None).unwrap(), GuidanceConfig::Dps { zeta } if zeta == ZETA));
        assert_eq!(BenchMethod::Ddim.posterior(8), (None, SamplerSpec::Ddim { steps: 8 }));
    }

    /// Through the vocabulary, every method draws exactly what the direct construction of its sampler and
    /// guidance drew before.
    #[test]
    fn draws_are_those_of_the_direct_construction() {
        use diem_sampling::{Ddim, Dps, Mmps, Sampler, TimeGrid};
        let problem = BenchProblem::generate(48, 3, Device::Cpu).unwrap();
        let op = Projection::new(problem.matrices.shallow_clone(), &[5]).unwrap();
        let noise = NoiseCov::isotropic(SIGMA_Y).unwrap();
        let schedule = problem.model.schedule();
        let prior = problem.model.denoiser();
        let steps = 6;
        let grid = || TimeGrid::uniform(steps).unwrap();
        let shape = [48, 5];
        for method in BenchMethod::ALL {
            let now = draw(&problem, method, steps, &mut NoiseRng::seeded(11)).unwrap();
            let mut rng = NoiseRng::seeded(11);
            let before = match method {
                BenchMethod::Ddim => {
                    Ddim::new(schedule, grid()).sample(prior, &shape, Kind::Float, Device::Cpu, &mut rng)
                }
                BenchMethod::Dps => Dps::new(schedule, grid(), &op, &problem.y, ZETA).unwrap().sample(
                    prior,
                    &shape,
                    Kind::Float,
                    Device::Cpu,
                    &mut rng,
                ),
                BenchMethod::Mmps1 | BenchMethod::Mmps3 => {
                    let n = if method == BenchMethod::Mmps1 { 1 } else { 3 };
                    let mmps = Mmps::new(prior, &op, &problem.y, noise.clone(), MmpsConfig::cg(n)).unwrap();
                    Ddim::new(schedule, grid()).sample(&mmps, &shape, Kind::Float, Device::Cpu, &mut rng)
                }
            }
            .unwrap();
            assert!(now.equal(&before), "{method:?}");
        }
    }
}
