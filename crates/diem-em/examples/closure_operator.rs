//! `diem fit` as a library call, with a forward operator known only as a closure.
//!
//! A scientist's instrument is often a piece of code: "given a signal, this is what the detector records". Here
//! it is a 3-tap moving blur followed by dropping the two end samples, `R^8 → R^6`, written as one line of tch
//! and wrapped in [`FnOperator`]. Its adjoint is never written: the operator's default adjoint is autograd's
//! transpose of the closure, and MMPS's vector-Jacobian products flow through the closure the same way.
//!
//! The hidden signals are smooth bumps `x(u) = a·exp(−(u − c)²/w)` on an 8-point grid with random amplitude and
//! centre; every one of 512 signals is seen only through the instrument, with noise σ_y = 0.05. DiEM then runs
//! exactly as `diem fit` does (`EmRun`: a run directory with the configuration, checkpoints, samples, metrics and
//! a crash-safe state), here in a temporary directory, for two short laps. At the end the learned prior serves a
//! posterior: MMPS samples for a few observations, compared with the signals that produced them.
//!
//! Run with `cargo xtask cargo run -p diem-em --example closure_operator` (seconds in debug mode). The test
//! suite runs it too (`tests/examples.rs`).

use diem_em::{EmConfig, EmRun, SamplerSpec};
use diem_operators::{FnOperator, NoiseCov, Observation};
use diem_sampling::{NoiseRng, PosteriorMethod, SolverSpec};
use tch::{Device, Kind, Tensor};

/// Fits a prior through the closure operator and samples its posterior (public so the test suite can run it).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    tch::manual_seed(3);
    let (n, d) = (512, 8);

    // The instrument: y = (0.25 x[k] + 0.5 x[k+1] + 0.25 x[k+2]) for k = 0..6. One closure, nothing else.
    let blur = |x: &Tensor| x.narrow(1, 0, 6) * 0.25 + x.narrow(1, 1, 6) * 0.5 + x.narrow(1, 2, 6) * 0.25;
    let instrument = FnOperator::new(&[d], &[6], blur)?;

    // Hidden signals and their noisy records.
    let grid = Tensor::arange(d, (Kind::Float, Device::Cpu)).unsqueeze(0);
    let amplitude = Tensor::rand([n, 1], (Kind::Float, Device::Cpu)) + 0.5;
    let centre = Tensor::rand([n, 1], (Kind::Float, Device::Cpu)) * 5.0 + 1.0;
    let x = &amplitude * (-(&grid - &centre).square() / 3.0).exp();
    let observations = Observation::simulate(&x, Box::new(instrument), NoiseCov::isotropic(0.05)?, 7)?;

    // The manifold preset's network and schedule, shrunk to run in seconds.
    let mut config = EmConfig::manifold(2);
    config.network = diem_models::NetworkConfig::Mlp(diem_models::MlpConfig {
        features: d,
        hidden: vec![64, 64],
        embedding_features: 16,
    });
    config.gaussian.rank = 4;
    config.gaussian.iterations = 3;
    config.gaussian.steps = 16;
    config.estep.sampler = SamplerSpec::Ddpm { steps: 16 };
    config.mstep.steps = 96;
    config.mstep.batch_size = 128;
    config.mstep.log_every = 32;
    config.diagnostics.sinkhorn_subsample = Some(64);

    // `diem fit` in three lines: create the run directory, run every lap, read the summary.
    let dir = tempfile::tempdir()?;
    let mut run = EmRun::create(dir.path().join("run"), config, observations, Device::Cpu)?;
    run.set_progress(false);
    let summary = run.run()?;
    println!("{} laps in {}", summary.completed_laps, run.dir().display());
    for lap in &summary.metrics {
        let field = |k: &str| lap.get(k).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
        println!(
            "lap {}: loss {:.4}, E-step residual rms {:.4} (noise 0.05), kept {:.3}",
            field("lap"),
            field("loss_mean"),
            field("obs_residual_rms"),
            field("kept_fraction")
        );
    }

    // The learned prior serves a posterior for new records of the same instrument.
    let model = run.model().ok_or("no model after the laps")?;
    let fresh = x.narrow(0, 0, 4).copy();
    let records = Observation::simulate(
        &fresh,
        Box::new(FnOperator::new(&[d], &[6], blur)?),
        NoiseCov::isotropic(0.05)?,
        11,
    )?;
    let method = PosteriorMethod::from_name("mmps", SolverSpec::cg(3))?;
    let sampler = SamplerSpec::Ddpm { steps: 32 }.build(model.schedule())?;
    let posterior = method.resolve(None)?.from_observation(model.denoiser(), &records)?;
    let draws =
        posterior.sample(sampler.as_ref(), &[4, d], Kind::Float, Device::Cpu, &mut NoiseRng::seeded(5))?;
    let residual = (records.operator.apply(&draws) - &records.y).square().mean(Kind::Double).sqrt();
    let error = (&draws - &fresh).square().mean(Kind::Double).sqrt();
    println!(
        "posterior: rms residual to the records {:.3} (noise 0.05), rms error to the hidden signals {:.3}",
        residual.double_value(&[]),
        error.double_value(&[])
    );
    Ok(())
}
