//! `bench em`: one lap of the manifold experiment split into its E-step and M-step, timed, with the achieved
//! FLOP rate against the machine's measured f32 matmul peak.
//!
//! FLOPs are counted analytically for the MLP (biases, activations and normalizations are ignored):
//!
//! ```text
//! forward(B)  = 2 · B · Σ_layers in · out              (one network call on B samples)
//! VJP(B)      ≈ forward(B)                             (a backward pass to the input only: one matmul per layer)
//! train step  ≈ 3 · forward(batch)                    (forward + backward to inputs and weights)
//! E-step      = calls · [forward(N) + vjps · VJP(N)]   (calls = T (1 + C) + 1; vjps = CG iterations)
//! ```

use std::fmt::Write as _;
use std::time::Instant;

use diem_models::{NetworkConfig, PriorModel};
use diem_sampling::Sampler;
use tch::{Device, Kind, Tensor};

use crate::config::ManifoldConfig;
use crate::data::ManifoldData;
use crate::error::{ManifoldError, Result};
use diem_em::config::SamplerSpec;
use diem_em::estep::{posterior_samples, EStepPlan};
use diem_em::gaussian::GaussianPrior;
use diem_em::mstep::m_step;
use diem_em::seed::SeedPurpose;

/// The measured figures of one benchmarked lap.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Measured f32 matmul rate (GFLOP/s) of an `n × n` product, and `n`.
    pub peak_gflops: f64,
    /// Side of the matmul used for the peak.
    pub peak_size: i64,
    /// Observations in the E-step.
    pub observations: i64,
    /// Network calls of one E-step sample path (`T (1 + C) + 1`).
    pub calls: usize,
    /// VJPs per call.
    pub vjps_per_call: usize,
    /// E-step wall time in seconds.
    pub estep_seconds: f64,
    /// E-step FLOPs (analytic).
    pub estep_flops: f64,
    /// M-step steps and batch size.
    pub train_steps: usize,
    /// M-step batch size.
    pub batch_size: i64,
    /// M-step wall time in seconds.
    pub mstep_seconds: f64,
    /// M-step FLOPs (analytic).
    pub mstep_flops: f64,
    /// libtorch intra-op threads.
    pub threads: i32,
    /// The network's description.
    pub network: String,
    /// The device.
    pub device: String,
}

impl BenchReport {
    /// The report as markdown: settings and the table of phases.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# bench em: one manifold lap, E-step vs M-step\n");
        let _ = writeln!(
            s,
            "Device {}, {} libtorch threads; network {}; peak = f32 matmul {n}×{n}: {:.1} GFLOP/s.\n",
            self.device,
            self.threads,
            self.network,
            self.peak_gflops,
            n = self.peak_size
        );
        let _ = writeln!(s, "| phase | work | time (s) | GFLOP | GFLOP/s | % of peak |");
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
        let row = |s: &mut String, name: &str, work: String, secs: f64, flops: f64| {
            let rate = flops / secs.max(1e-12) / 1e9;
            let _ = writeln!(
                s,
                "| {name} | {work} | {secs:.2} | {:.2} | {rate:.2} | {:.1} |",
                flops / 1e9,
                100.0 * rate / self.peak_gflops.max(1e-12)
            );
        };
        row(
            &mut s,
            "E-step",
            format!(
                "{} posterior samples × {} calls × (1 forward + {} VJPs)",
                self.observations, self.calls, self.vjps_per_call
            ),
            self.estep_seconds,
            self.estep_flops,
        );
        row(
            &mut s,
            "M-step",
            format!("{} steps × batch {}", self.train_steps, self.batch_size),
            self.mstep_seconds,
            self.mstep_flops,
        );
        row(
            &mut s,
            "lap",
            "E-step + M-step".into(),
            self.estep_seconds + self.mstep_seconds,
            self.estep_flops + self.mstep_flops,
        );
        let _ = writeln!(
            s,
            "\nFLOPs are analytic: forward = 2·B·Σ in·out over the MLP's linear layers, VJP ≈ 1× forward (the input \
             gradient only: one matmul per linear layer), training step ≈ 3× forward (forward + input and weight \
             gradients)."
        );
        s
    }
}

/// Multiply-accumulate count `Σ in · out` of one sample through the MLP (input `[c_in x, emb]`).
///
/// # Errors
/// [`ManifoldError::Config`] for a non-MLP network.
pub fn mlp_macs(network: &NetworkConfig) -> Result<f64> {
    let NetworkConfig::Mlp(mlp) = network else {
        return Err(ManifoldError::config("em.network", "bench em counts the FLOPs of the MLP only"));
    };
    let mut widths = vec![mlp.features + mlp.embedding_features];
    widths.extend(&mlp.hidden);
    widths.push(mlp.features);
    Ok(widths.windows(2).map(|w| (w[0] * w[1]) as f64).sum())
}

/// The measured f32 matmul rate in GFLOP/s of an `n × n` by `n × n` product on `device` (best of `reps`).
pub fn matmul_peak(n: i64, reps: usize, device: Device) -> f64 {
    let a = Tensor::randn([n, n], (Kind::Float, device));
    let b = Tensor::randn([n, n], (Kind::Float, device));
    let _ = a.matmul(&b).sum(Kind::Float).double_value(&[]);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let c = a.matmul(&b);
        let _ = c.sum(Kind::Float).double_value(&[]);
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// Times one lap of `config` (its E-step on every observation with the configured sampler and MMPS, then its
/// M-step) with a freshly initialized network and the standard Gaussian as `μ_x` (the cost does not depend
/// on the weights), after measuring the matmul peak with an `n × n` product.
///
/// # Errors
/// Configuration, data, sampling or training errors.
pub fn bench_em(config: &ManifoldConfig, peak_size: i64, device: Device) -> Result<BenchReport> {
    config.validate()?;
    let peak_gflops = matmul_peak(peak_size, 5, device);
    let data = ManifoldData::generate(&config.data, config.metric.points, device)?;
    let em = &config.em;
    tch::manual_seed(0);
    let mut model = PriorModel::new(em.network.clone(), em.schedule(), device)?;
    let gaussian = GaussianPrior::standard(&[data.dim()], Kind::Float, device);
    model.set_mean(Some(gaussian.mean_shaped()));
    let sampler: Box<dyn Sampler> = em.estep.sampler.build(em.schedule())?;
    let plan = EStepPlan::new(em.estep.posterior.resolve(Some(&gaussian.cov))?, 1)
        .chunk(em.estep.effective_chunk(data.dim()))
        .seeded(em.seed, SeedPurpose::EStepChunk, 0);
    // Warm-up: a few calls so that allocation and thread-pool start-up are not timed.
    {
        let few = data.observation.narrow(0, 8.min(data.len()));
        let short = SamplerSpec::Pc { steps: 2, corrections: 1, tau: 0.1 }.build(em.schedule())?;
        let _warm = posterior_samples(model.denoiser(), &few, short.as_ref(), &plan, None)?;
    }
    let start = Instant::now();
    let samples = posterior_samples(model.denoiser(), &data.observation, sampler.as_ref(), &plan, None)?;
    let _ = samples.sum(Kind::Float).double_value(&[]);
    let estep_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    m_step(&model, &data.truth, &em.mstep, em.seed, 0)?;
    let mstep_seconds = start.elapsed().as_secs_f64();

    let macs = mlp_macs(&em.network)?;
    let forward = |b: f64| 2.0 * b * macs;
    let calls = sampler.denoiser_calls();
    // One VJP per operator application; the last product comes from the solve (docs/method.md §5.8 less one).
    let vjps_per_call = em.estep.posterior.cost_per_call().vjps;
    let n = data.len() as f64;
    let estep_flops = calls as f64 * (1 + vjps_per_call) as f64 * forward(n);
    let mstep_flops = em.mstep.steps as f64 * 3.0 * forward(em.mstep.batch_size as f64);
    let network = match &em.network {
        NetworkConfig::Mlp(m) => {
            format!(
                "MLP {} → {:?} → {} (embedding {})",
                m.features, m.hidden, m.features, m.embedding_features
            )
        }
        other => format!("{other:?}"),
    };
    Ok(BenchReport {
        peak_gflops,
        peak_size,
        observations: data.len(),
        calls,
        vjps_per_call,
        estep_seconds,
        estep_flops,
        train_steps: em.mstep.steps,
        batch_size: em.mstep.batch_size,
        mstep_seconds,
        mstep_flops,
        threads: tch::get_num_threads(),
        network,
        device: format!("{device:?}"),
    })
}
