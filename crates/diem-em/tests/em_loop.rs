//! The seams of DiEM: `EmLoop` driven by hand in memory draws exactly what `EmRun` draws (both lap orders),
//! and a user-defined network (not one of the built-ins) trains, checkpoints, resumes and samples through
//! the run.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use diem_dist::Single;
use diem_em::{EmConfig, EmLoop, EmRun, LapContext, LapObserver, NoStore, RunStore};
use diem_models::{
    checkpoint, Denoiser, ModelFactory, NetworkConfig, NoiseConditionalNet, PriorModel, ProgressObserver,
};
use diem_operators::{NoiseCov, Observation, Projection};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// 96 points on a noisy helix in 3-D, each observed through its own random 2×3 projection.
fn observations() -> Observation {
    tch::manual_seed(0);
    let n = 96;
    let t = Tensor::rand([n], (Kind::Double, Device::Cpu)) * (2.0 * std::f64::consts::PI);
    let x = Tensor::stack(&[t.cos(), t.sin(), &t / 3.0 - 1.0], 1);
    let op = Projection::random_sphere(n, 2, 3, 1).unwrap();
    Observation::simulate(&x.to_kind(Kind::Float), Box::new(op), NoiseCov::isotropic(1e-2).unwrap(), 2)
        .unwrap()
}

/// A configuration that runs a lap in a fraction of a second, in the stable JSON of `config.json`.
fn tiny(order: &str, laps: usize) -> EmConfig {
    let sample_then_train = order == "sample_then_train";
    let json = serde_json::json!({
        "version": 1,
        "seed": 7,
        "laps": laps,
        "order": order,
        "network": { "mlp": { "features": 3, "hidden": [16, 16], "embedding_features": 8 } },
        "gaussian": {
            "rank": 3, "iterations": 2, "steps": 8,
            "solver": { "method": "cg", "iterations": 2 },
            "max_pairs": null, "chunk_size": 64
        },
        "estep": {
            "samples_per_observation": 2,
            "sampler": { "ddpm": { "steps": 8 } },
            "posterior": { "covariance": "tweedie", "solver": { "method": "cg", "iterations": 1 } },
            "chunk_size": 40,
            "memory_budget_mib": null
        },
        "mstep": {
            "steps": 24, "batch_size": 32,
            "lr": { "init": 0.001, "schedule": { "linear": { "end": 1e-4 } } },
            "adam": { "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0 },
            "clip_norm": 1.0,
            "ema_decay": if sample_then_train { Some(0.9) } else { None },
            "schedule": { "a": 0.001, "b": 10.0 },
            "time": { "beta": { "alpha": 3.0, "beta": 3.0 } },
            "batching": "with_replacement",
            "log_every": 8,
            "progress": false
        },
        "filter_bound": 3.0,
        "refit": sample_then_train.then(|| serde_json::json!({ "rank": 3, "samples": 100 })),
        "diagnostics": { "sinkhorn_subsample": 32 },
        "progress": false
    });
    EmConfig::from_json(Path::new("tiny.json"), json.to_string().as_bytes()).unwrap()
}

/// libtorch's generator is process-global and the trainer draws from it, so the tests of this file (which
/// the harness runs on parallel threads) take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn single_thread() -> std::sync::MutexGuard<'static, ()> {
    tch::set_num_threads(1);
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn assert_same_parameters(a: &PriorModel, b: &PriorModel) {
    let (va, vb) = (a.named_variables(), b.named_variables());
    assert_eq!(va.len(), vb.len());
    for ((na, ta), (nb, tb)) in va.iter().zip(&vb) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "variable {na} differs");
    }
    assert!(a.mean().unwrap().equal(b.mean().unwrap()), "prior means differ");
}

/// Counts the tasks started and the steps advanced.
#[derive(Default)]
struct Counting {
    started: Cell<usize>,
    finished: Cell<usize>,
    steps: Cell<u64>,
}

impl ProgressObserver for Counting {
    fn start(&self, _label: &str, _total: u64) {
        self.started.set(self.started.get() + 1);
    }
    fn advance(&self, n: u64) {
        self.steps.set(self.steps.get() + n);
    }
    fn finish(&self) {
        self.finished.set(self.finished.get() + 1);
    }
}

#[test]
fn em_loop_by_hand_draws_what_em_run_draws() {
    let _serial = single_thread();
    for order in ["train_then_sample", "sample_then_train"] {
        let config = tiny(order, 2);
        let dir = tempfile::tempdir().unwrap();
        let mut run =
            EmRun::create(dir.path().join("run"), config.clone(), observations(), Device::Cpu).unwrap();
        run.run().unwrap();

        let progress = Rc::new(Counting::default());
        let mut em =
            EmLoop::new(config.clone(), observations(), Device::Cpu).unwrap().with_progress(progress.clone());
        em.init().unwrap();
        let mut losses = Vec::new();
        for lap in 0..2 {
            let outcome = em.step().unwrap();
            assert_eq!(outcome.lap, lap);
            assert_eq!(outcome.samples.size(), vec![96 * 2, 3]);
            assert!(outcome.gathered.as_ref().unwrap().equal(&outcome.samples));
            assert!(!outcome.report.records.is_empty() && outcome.mstep_seconds >= 0.0);
            losses.push(outcome.report.records.last().unwrap().loss);
        }
        assert_eq!(em.completed_laps(), 2);
        assert!(em.samples().unwrap().equal(run.samples().unwrap()), "{order}: samples differ");
        assert_same_parameters(em.model().unwrap(), run.model().unwrap());
        assert!(em.gaussian().unwrap().mean.equal(&run.gaussian().unwrap().mean));
        // The run's metrics hold the same losses.
        let metrics = run.run_until(2).unwrap().metrics;
        for (lap, loss) in losses.iter().enumerate() {
            assert_eq!(metrics[lap]["loss_last"].as_f64(), Some(*loss), "{order}: lap {lap}");
        }
        // Every task the loop started, it finished; the M-steps reported their steps.
        assert_eq!(progress.started.get(), progress.finished.get());
        assert!(progress.steps.get() >= 2 * 24, "{}", progress.steps.get());

        // The loop with a store that records nothing, driven by `run_with`, ends at the same place.
        let mut em = EmLoop::new(config, observations(), Device::Cpu).unwrap();
        let mut store = NoStore;
        em.run_with(&mut store as &mut dyn RunStore, 2).unwrap();
        assert!(em.samples().unwrap().equal(run.samples().unwrap()));
        assert_same_parameters(em.model().unwrap(), run.model().unwrap());
    }
}

/// A user-defined noise-conditional network: `F(u, e) = out(silu(hidden([u, e]))) + skip(u)`, written with
/// plain tch layers.
#[derive(Debug)]
struct Residual {
    hidden: nn::Linear,
    out: nn::Linear,
    skip: nn::Linear,
}

impl NoiseConditionalNet for Residual {
    fn forward_t(&self, u: &Tensor, emb: &Tensor, _train: bool) -> Tensor {
        let h = Tensor::cat(&[u.shallow_clone(), emb.to_kind(u.kind())], -1);
        self.out.forward(&self.hidden.forward(&h).silu()) + self.skip.forward(u)
    }

    fn embedding_features(&self) -> i64 {
        6
    }
}

/// Builds [`Residual`] networks of a given width.
struct ResidualFactory {
    width: i64,
}

impl ModelFactory for ResidualFactory {
    fn describe(&self) -> NetworkConfig {
        NetworkConfig::custom("test/residual", serde_json::json!({ "width": self.width }))
    }

    fn build(&self, path: &nn::Path) -> diem_models::Result<Box<dyn NoiseConditionalNet>> {
        let c = nn::LinearConfig::default();
        Ok(Box::new(Residual {
            hidden: nn::linear(path / "hidden", 3 + 6, self.width, c),
            out: nn::linear(path / "out", self.width, 3, c),
            skip: nn::linear(path / "skip", 3, 3, nn::LinearConfig { bias: false, ..c }),
        }))
    }
}

/// Samples the prior in every lap through the run's `LapContext`.
struct PriorSamples(Rc<Cell<usize>>);

impl LapObserver for PriorSamples {
    fn name(&self) -> &str {
        "prior-samples"
    }

    fn on_lap(&mut self, ctx: &mut LapContext<'_>) -> diem_em::Result<()> {
        assert_eq!(ctx.model.config(), &ResidualFactory { width: 12 }.describe());
        let x = ctx.sample_prior(8, &ctx.config.estep.sampler, ctx.seed(0))?;
        assert_eq!(x.size(), vec![8, 3]);
        assert!(bool::try_from(x.isfinite().all()).unwrap());
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

#[test]
fn a_user_defined_network_trains_checkpoints_resumes_and_samples_through_the_run() {
    let _serial = single_thread();
    let factory = || -> Rc<dyn ModelFactory> { Rc::new(ResidualFactory { width: 12 }) };
    let config = tiny("sample_then_train", 2);
    let dir = tempfile::tempdir().unwrap();
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));

    let seen = Rc::new(Cell::new(0));
    let mut run = EmRun::create_with_model(
        &whole,
        config.clone(),
        observations(),
        Device::Cpu,
        factory(),
        Rc::new(Single),
    )
    .unwrap()
    .with_observer(PriorSamples(seen.clone()));
    run.run().unwrap();
    assert_eq!(seen.get(), 2);
    assert_eq!(run.config().network, ResidualFactory { width: 12 }.describe());
    let model = run.model().unwrap();
    assert_eq!(model.num_parameters(), (9 * 12 + 12) + (12 * 3 + 3) + 9);

    // Interrupted after one lap and resumed with the same factory: the same samples and weights.
    let mut first =
        EmRun::create_with_model(&split, config, observations(), Device::Cpu, factory(), Rc::new(Single))
            .unwrap();
    first.run_until(1).unwrap();
    drop(first);
    let err = EmRun::resume(&split, observations(), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("test/residual") && err.contains("ModelFactory"), "{err}");
    let other: Rc<dyn ModelFactory> = Rc::new(ResidualFactory { width: 13 });
    let err = EmRun::resume_with_model(&split, observations(), Device::Cpu, other, Rc::new(Single))
        .unwrap_err()
        .to_string();
    assert!(err.contains("network"), "{err}");
    let mut resumed =
        EmRun::resume_with_model(&split, observations(), Device::Cpu, factory(), Rc::new(Single)).unwrap();
    resumed.run().unwrap();
    assert!(resumed.samples().unwrap().equal(run.samples().unwrap()));
    assert_same_parameters(resumed.model().unwrap(), run.model().unwrap());

    // The lap's checkpoint loads with the factory (and only with it) and denoises like the run's model.
    let lap = diem_em::resolve_checkpoint(&whole).unwrap();
    assert!(checkpoint::load(&lap, Device::Cpu).is_err());
    let (loaded, ema) = checkpoint::load_with(&lap, Device::Cpu, &ResidualFactory { width: 12 }).unwrap();
    assert!(ema.is_some());
    assert_same_parameters(&loaded, run.model().unwrap());
    let x_t = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
    let sigma = Tensor::from(0.3f32);
    let (a, b) = tch::no_grad(|| (loaded.denoise(&x_t, &sigma), run.model().unwrap().denoise(&x_t, &sigma)));
    assert!(a.equal(&b));
}

/// The example `custom_network` (a user-defined network trained by DiEM in memory) runs to the end.
#[path = "../examples/custom_network.rs"]
mod custom_network_example;

#[test]
fn the_custom_network_example_runs() {
    let _serial = single_thread();
    custom_network_example::main().unwrap();
}
