//! `EmRun`: the run directory, metrics, observers, both lap orders, and crash safety (a child process killed
//! with SIGKILL in the middle of a run, then resumed, ends bit-exactly where an uninterrupted run ends).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diem_em::{
    io::RunState, layout, Covariance, DataStorage, DiagnosticsConfig, EStepConfig, EmConfig, EmError, EmRun,
    GaussianEmConfig, LapContext, LapObserver, LapOrder, PosteriorSpec, RefitConfig, SamplerSpec, SolverSpec,
    CONFIG_VERSION,
};
use diem_models::{Batching, LrConfig, MlpConfig, NetworkConfig, TrainConfig, VeSchedule};
use diem_operators::{NoiseCov, Observation, Projection};
use tch::{Device, Kind, Tensor};

/// 96 points on a noisy circle in 2-D, observed through random 1×2 projections.
fn observations() -> Observation {
    tch::manual_seed(0);
    let n = 96;
    let theta = Tensor::rand([n], (Kind::Double, Device::Cpu)) * (2.0 * std::f64::consts::PI);
    let x = Tensor::stack(&[theta.cos(), theta.sin()], 1);
    let op = Projection::random_sphere(n, 1, 2, 1).unwrap();
    Observation::simulate(&x.to_kind(Kind::Float), Box::new(op), NoiseCov::isotropic(1e-2).unwrap(), 2)
        .unwrap()
}

/// A configuration that runs a lap in a fraction of a second.
fn tiny(order: LapOrder, laps: usize) -> EmConfig {
    EmConfig {
        version: CONFIG_VERSION,
        seed: 42,
        laps,
        order,
        network: NetworkConfig::Mlp(MlpConfig { features: 2, hidden: vec![16, 16], embedding_features: 8 }),
        gaussian: GaussianEmConfig {
            rank: 2,
            iterations: 2,
            steps: 8,
            solver: SolverSpec::cg(2),
            max_pairs: None,
            stride: 1,
            chunk_size: 64,
        },
        estep: EStepConfig {
            samples_per_observation: 2,
            sampler: SamplerSpec::Ddpm { steps: 8 },
            posterior: PosteriorSpec::new(Covariance::Tweedie, SolverSpec::cg(1)).into(),
            chunk_size: 40,
            memory_budget_mib: None,
        },
        mstep: TrainConfig {
            steps: 24,
            batch_size: 32,
            lr: LrConfig::linear(1e-3, 1e-4),
            schedule: VeSchedule::manifold(),
            batching: Batching::WithReplacement,
            log_every: 8,
            ema_decay: if order == LapOrder::SampleThenTrain { Some(0.9) } else { None },
            ..TrainConfig::manifold()
        },
        filter_bound: Some(3.0),
        refit: (order == LapOrder::SampleThenTrain).then_some(RefitConfig { rank: 2, samples: 100 }),
        diagnostics: DiagnosticsConfig { sinkhorn_subsample: Some(32), sample_bound: None },
        progress: false,
        storage: DataStorage::Device,
    }
}

struct Recorder(Vec<usize>);

impl LapObserver for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn on_lap(&mut self, ctx: &mut LapContext<'_>) -> diem_em::Result<()> {
        self.0.push(ctx.lap);
        let prior = ctx.sample_prior(16, &SamplerSpec::Ddim { steps: 4 }, ctx.seed(0))?;
        assert_eq!(prior.size(), vec![16, 2]);
        ctx.add_metric("observer_prior_mean", prior.mean(Kind::Double).double_value(&[]));
        assert!(ctx.lap_dir.join("weights.safetensors").is_file());
        Ok(())
    }
}

/// libtorch's generator is process-global and the trainer draws from it, so the tests of this file (which
/// the harness runs on parallel threads) take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn single_thread() -> std::sync::MutexGuard<'static, ()> {
    tch::set_num_threads(1);
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn both_lap_orders_write_the_run_directory_and_metrics() {
    let _serial = single_thread();
    for order in [LapOrder::TrainThenSample, LapOrder::SampleThenTrain] {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let mut run = EmRun::create(&run_dir, tiny(order, 2), observations(), Device::Cpu)
            .unwrap()
            .with_observer(Recorder(vec![]));
        let summary = run.run().unwrap();
        assert_eq!(summary.completed_laps, 2);
        assert_eq!(summary.metrics.len(), 2);
        for (lap, line) in summary.metrics.iter().enumerate() {
            assert_eq!(line["lap"], lap);
            assert_eq!(line["samples"], 192, "2 samples per observation");
            for key in [
                "loss_mean",
                "kept_fraction",
                "sample_std",
                "obs_residual_rms",
                "obs_sinkhorn",
                "observer_prior_mean",
                "estep_residual_ratio_median",
                "estep_residual_ratio_p99",
                "estep_max_abs",
                "estep_bound",
            ] {
                assert!(
                    line[key].as_f64().is_some_and(f64::is_finite),
                    "{order:?} lap {lap}: {key} = {}",
                    line[key]
                );
            }
            // Every E-step row is accounted for by the consistency report, and the solver events are counted.
            assert_eq!(line["estep_rows"], 192);
            assert_eq!(line["estep_nonfinite"], 0);
            for key in ["estep_fallbacks", "estep_damped", "estep_vjps", "estep_inconsistent"] {
                assert!(line[key].as_u64().is_some(), "{order:?} lap {lap}: {key} = {}", line[key]);
            }
            assert!(line["estep_vjps"].as_u64().unwrap() > 0, "the Tweedie E-step takes VJPs");
            let d = layout::lap_dir(&run_dir, lap);
            for f in
                ["config.json", "weights.safetensors", "samples.npy", "gaussian.safetensors", "train.jsonl"]
            {
                assert!(d.join(f).is_file(), "{}/{f}", d.display());
            }
            let samples = diem_em::read_npy(&d.join("samples.npy"), Device::Cpu).unwrap();
            assert_eq!(samples.size(), vec![192, 2]);
        }
        assert_eq!(run_dir.join("init/samples.npy").is_file(), order == LapOrder::TrainThenSample);
        assert_eq!(
            layout::lap_dir(&run_dir, 0).join("ema.safetensors").is_file(),
            order == LapOrder::SampleThenTrain
        );
        // The posterior samples explain the observations far better than the N(0, I) start would.
        let last = &summary.metrics[1];
        assert!(last["obs_residual_rms"].as_f64().unwrap() < 0.5, "{last}");
        // A second create in the same directory is refused; a resume of a finished run does nothing.
        let err = EmRun::create(&run_dir, tiny(order, 2), observations(), Device::Cpu).unwrap_err();
        assert!(matches!(err, EmError::RunDir { .. }), "{err}");
        let mut again = EmRun::resume(&run_dir, observations(), Device::Cpu).unwrap();
        assert_eq!(again.run().unwrap().completed_laps, 2);
        assert_eq!(diem_em::resolve_checkpoint(&run_dir).unwrap(), layout::lap_dir(&run_dir, 1));
    }
}

#[test]
fn resume_refuses_other_observations_and_missing_runs() {
    let _serial = single_thread();
    let dir = tempfile::tempdir().unwrap();
    let err = EmRun::resume(dir.path(), observations(), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("no state.bin"), "{err}");
    EmRun::create(dir.path(), tiny(LapOrder::TrainThenSample, 1), observations(), Device::Cpu).unwrap();
    let mut other = observations();
    other.y = &other.y + 1.0;
    let err = EmRun::resume(dir.path(), other, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("observations differ"), "{err}");
}

/// The last lap's samples and observation diagnostic of a 2-lap run of `config` on `device`.
fn run_two_laps(config: EmConfig, device: Device) -> (Tensor, serde_json::Value, Device) {
    let dir = tempfile::tempdir().unwrap();
    let mut run = EmRun::create(dir.path(), config, observations(), device).unwrap();
    let summary = run.run().unwrap();
    let samples = run.samples().unwrap();
    (samples.to_device(Device::Cpu), summary.metrics[1].clone(), samples.device())
}

#[test]
fn host_storage_keeps_the_data_in_host_memory_and_gives_the_same_run() {
    let _serial = single_thread();
    let mut host = tiny(LapOrder::SampleThenTrain, 2);
    host.storage = DataStorage::Host;
    let json = serde_json::to_string(&host).unwrap();
    assert!(json.contains(r#""storage":"host""#), "{json}");
    let device = if tch::Cuda::is_available() {
        Device::Cuda(0)
    } else {
        eprintln!("note: no CUDA device; host storage is checked on the CPU only (the device is the host)");
        Device::Cpu
    };
    let (a, metrics_a, home) = run_two_laps(host, device);
    assert_eq!(home, Device::Cpu, "host storage keeps the samples in host memory");
    let (b, metrics_b, _) = run_two_laps(tiny(LapOrder::SampleThenTrain, 2), device);
    if device == Device::Cpu {
        assert!(a.equal(&b), "the storage choice changed the samples on the CPU");
        assert_eq!(metrics_a["obs_residual_rms"], metrics_b["obs_residual_rms"]);
    } else {
        // Batch indices are drawn on the data's device, so the two runs train on different batches.
        let rel = |k: &str| {
            let (x, y) = (metrics_a[k].as_f64().unwrap(), metrics_b[k].as_f64().unwrap());
            (x - y).abs() / y.abs().max(1e-6)
        };
        assert!(rel("sample_std") < 0.25, "{metrics_a} vs {metrics_b}");
    }
}

#[test]
fn a_validation_set_adds_validation_losses_without_changing_the_training() {
    let _serial = single_thread();
    for order in [LapOrder::TrainThenSample, LapOrder::SampleThenTrain] {
        let plain_dir = tempfile::tempdir().unwrap();
        let mut plain = EmRun::create(plain_dir.path(), tiny(order, 2), observations(), Device::Cpu).unwrap();
        let plain_metrics = plain.run().unwrap().metrics;
        let plain_samples = plain.samples().unwrap().shallow_clone();

        let dir = tempfile::tempdir().unwrap();
        let held_out = observations().narrow(0, 24);
        let mut run = EmRun::create(dir.path(), tiny(order, 2), observations(), Device::Cpu)
            .unwrap()
            .with_validation(held_out)
            .unwrap();
        let metrics = run.run().unwrap().metrics;
        assert!(run.samples().unwrap().equal(&plain_samples), "{order:?}: validation changed the samples");
        for lap in 0..2 {
            assert_eq!(metrics[lap]["loss_mean"], plain_metrics[lap]["loss_mean"], "{order:?} lap {lap}");
            let lines =
                diem_em::io::read_jsonl(&layout::lap_dir(dir.path(), lap).join("validation.jsonl")).unwrap();
            let steps: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
            assert_eq!(steps, vec![8, 16, 24], "{order:?} lap {lap}: every log_every steps and the last");
            let losses: Vec<f64> = lines.iter().map(|l| l["loss"].as_f64().unwrap()).collect();
            assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
            assert_eq!(metrics[lap]["val_loss_last"].as_f64(), losses.last().copied());
            let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
            assert_eq!(metrics[lap]["val_loss_min"].as_f64(), Some(min));
        }
        assert!(plain_metrics[0].get("val_loss_last").is_none());
    }
    // Latents of another shape are refused.
    let dir = tempfile::tempdir().unwrap();
    let other = {
        let x = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
        let op = diem_operators::Identity::new(&[3]).unwrap();
        Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(1e-2).unwrap(), 0).unwrap()
    };
    let run =
        EmRun::create(dir.path(), tiny(LapOrder::SampleThenTrain, 1), observations(), Device::Cpu).unwrap();
    assert!(matches!(run.with_validation(other), Err(EmError::Config { .. })));
}

#[test]
fn create_rejects_a_unet_that_does_not_fit_the_latent_shape() {
    let _serial = single_thread();
    let unet = |in_channels| {
        let mut c = diem_models::UNetConfig::cifar();
        c.in_channels = in_channels;
        c.out_channels = in_channels;
        let mut config = tiny(LapOrder::TrainThenSample, 1);
        config.network = NetworkConfig::Unet(c);
        config
    };
    let images = |shape: &[i64]| {
        let x = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let op = diem_operators::Identity::new(&shape[1..]).unwrap();
        Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(1e-2).unwrap(), 0).unwrap()
    };
    // Flat latents, the wrong channel count, and a size that is not a multiple of 4 (two down-samplings).
    for (channels, shape) in [(3, vec![4, 12]), (3, vec![4, 1, 8, 8]), (3, vec![4, 3, 8, 6])] {
        let dir = tempfile::tempdir().unwrap();
        let err = EmRun::create(dir.path(), unet(channels), images(&shape), Device::Cpu).unwrap_err();
        assert!(matches!(err, EmError::Config { .. }), "{shape:?}: {err}");
        assert!(err.to_string().contains("network.unet"), "{shape:?}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    EmRun::create(dir.path(), unet(1), images(&[4, 1, 8, 8]), Device::Cpu).unwrap();
}

#[test]
fn filter_drops_samples_outside_the_open_interval() {
    let s = Tensor::from_slice(&[0.0f32, 2.9, -3.0, 0.0, 1.0, f32::NAN, 2.0, 2.0]).reshape([4, 2]);
    let kept = diem_em::filter_samples(&s, Some(3.0));
    assert_eq!(kept.size(), vec![2, 2]);
    assert!(kept.equal(&Tensor::from_slice(&[0.0f32, 2.9, 2.0, 2.0]).reshape([2, 2])));
    assert_eq!(diem_em::filter_samples(&s, None).size(), vec![3, 2]);
}

const CHILD_ENV: &str = "DIEM_EM_CHILD_RUN_DIR";
const KILL_LAPS: usize = 4;

/// Child mode: runs (or resumes) the tiny run in `$DIEM_EM_CHILD_RUN_DIR`; a no-op in a normal test run.
#[test]
fn child_process_run() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let _serial = single_thread();
    let mut run =
        EmRun::create(&dir, tiny(LapOrder::TrainThenSample, KILL_LAPS), observations(), Device::Cpu)
            .expect("create");
    run.run().expect("run");
}

#[test]
fn killed_run_resumes_to_the_uninterrupted_result() {
    let _serial = single_thread();
    let tmp = tempfile::tempdir().unwrap();
    let killed = tmp.path().join("killed");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "child_process_run", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, &killed)
        .env("OMP_NUM_THREADS", "1")
        .spawn()
        .unwrap();
    // Kill as soon as the first lap is committed: the child is then inside lap 1.
    let state = killed.join(layout::STATE_FILE);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = RunState::load(&state) {
            if s.completed_laps >= 1 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the child run made no progress");
        assert!(child.try_wait().unwrap().is_none(), "the child exited early");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = RunState::load(&state).unwrap();
    assert!(at_kill.completed_laps < KILL_LAPS, "the child finished before the kill: {at_kill:?}");

    let mut resumed = EmRun::resume(&killed, observations(), Device::Cpu).unwrap();
    assert_eq!(resumed.completed_laps(), at_kill.completed_laps);
    resumed.run().unwrap();

    let straight = tmp.path().join("straight");
    EmRun::create(&straight, tiny(LapOrder::TrainThenSample, KILL_LAPS), observations(), Device::Cpu)
        .unwrap()
        .run()
        .unwrap();
    for lap in 0..KILL_LAPS {
        for f in ["weights.safetensors", "samples.npy", "gaussian.safetensors"] {
            let a = layout::lap_dir(&killed, lap).join(f);
            let b = layout::lap_dir(&straight, lap).join(f);
            assert!(bytes(&a) == bytes(&b), "lap {lap}: {f} differs after resume");
        }
    }
    let lines = diem_em::io::read_jsonl(&killed.join(layout::METRICS_FILE)).unwrap();
    let laps: Vec<u64> = lines.iter().map(|l| l["lap"].as_u64().unwrap()).collect();
    assert_eq!(laps, (0..KILL_LAPS as u64).collect::<Vec<_>>());
}
