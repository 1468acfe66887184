//! Run directories as a hostile user leaves them, and the guarantees of `EmRun` around them:
//!
//! - a new run never overwrites anything and never leaves a half-created run;
//! - everything checkable is checked before anything is written;
//! - a resume refuses other data (every array is hashed) and config edits outside `config::RESUMABLE`,
//!   records the allowed ones, removes stale temporary files, restores `config.json`, reads version-1 state;
//! - a resume from every commit boundary (and from the files a kill leaves between two commits) ends bit for
//!   bit where the uninterrupted run ends;
//! - non-finite E-step samples are an error naming the lap;
//! - properties: mutated configuration JSON and run directories with files deleted or truncated give a
//!   valid result or an error naming a file or field, never a panic.

use std::path::{Path, PathBuf};

use diem_em::config::RESUMABLE;
use diem_em::{
    io::RunState, layout, Covariance, DataStorage, DiagnosticsConfig, EStepConfig, EmConfig, EmError, EmRun,
    GaussianEmConfig, GaussianPrior, LapContext, LapObserver, LapOrder, PosteriorSpec, RefitConfig,
    SafeguardSpec, SamplerSpec, SolverSpec, CONFIG_VERSION,
};
use diem_models::{Batching, LrConfig, MlpConfig, NetworkConfig, TrainConfig, VeSchedule};
use diem_operators::{Mask, NoiseCov, Observation, Projection};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

/// 64 points on a noisy circle in 2-D, observed through random 1×2 projections with noise `std`.
fn observations_with(std: f64) -> Observation {
    let n = 64;
    let theta = Tensor::arange(n, (Kind::Double, Device::Cpu)) * 0.37;
    let x = Tensor::stack(&[theta.cos(), theta.sin()], 1).to_kind(Kind::Float);
    let op = Projection::random_sphere(n, 1, 2, 1).unwrap();
    Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(std).unwrap(), 2).unwrap()
}

fn observations() -> Observation {
    observations_with(1e-2)
}

/// A configuration whose lap takes a fraction of a second.
fn tiny(order: LapOrder, laps: usize) -> EmConfig {
    EmConfig {
        version: CONFIG_VERSION,
        seed: 7,
        laps,
        order,
        network: NetworkConfig::Mlp(MlpConfig { features: 2, hidden: vec![16], embedding_features: 8 }),
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
            samples_per_observation: 1,
            sampler: SamplerSpec::Ddpm { steps: 8 },
            posterior: PosteriorSpec::new(Covariance::Tweedie, SolverSpec::cg(1)).into(),
            chunk_size: 24,
            memory_budget_mib: None,
        },
        mstep: TrainConfig {
            steps: 16,
            batch_size: 16,
            lr: LrConfig::linear(1e-3, 1e-4),
            schedule: VeSchedule::manifold(),
            batching: Batching::WithReplacement,
            log_every: 8,
            ema_decay: if order == LapOrder::SampleThenTrain { Some(0.9) } else { None },
            ..TrainConfig::manifold()
        },
        filter_bound: Some(3.0),
        refit: (order == LapOrder::SampleThenTrain).then_some(RefitConfig { rank: 2, samples: 48 }),
        diagnostics: DiagnosticsConfig { sinkhorn_subsample: Some(16), sample_bound: None },
        progress: false,
        storage: DataStorage::Device,
    }
}

/// libtorch's generator is process-global and the trainer draws from it: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    tch::set_num_threads(1);
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run_to_end(dir: &Path, config: EmConfig) {
    EmRun::create(dir, config, observations(), Device::Cpu).unwrap().run().unwrap();
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// metrics.jsonl without its wall-clock fields.
fn metrics_without_times(dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = diem_em::io::read_jsonl(&dir.join(layout::METRICS_FILE)).unwrap();
    for l in &mut lines {
        let m = l.as_object_mut().unwrap();
        m.retain(|k, _| !k.ends_with("_seconds"));
    }
    lines
}

/// Every file of two runs is the same, bit for bit (metrics.jsonl up to its timings).
fn assert_same_runs(a: &Path, b: &Path, what: &str) {
    assert_eq!(files(a), files(b), "{what}: different files");
    for f in files(a) {
        if f == Path::new(layout::METRICS_FILE) {
            assert_eq!(metrics_without_times(a), metrics_without_times(b), "{what}: metrics differ");
        } else {
            let (x, y) = (std::fs::read(a.join(&f)).unwrap(), std::fs::read(b.join(&f)).unwrap());
            assert!(x == y, "{what}: {} differs", f.display());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn remove(dir: &Path, name: &str) {
    let p = dir.join(name);
    if p.is_dir() {
        std::fs::remove_dir_all(p).unwrap();
    } else if p.exists() {
        std::fs::remove_file(p).unwrap();
    }
}

/// Rolls the finished run in `dir` back to what a kill leaves: `state` committed, and of the later steps'
/// files only those in `keep` (written but not yet committed).
fn roll_back(dir: &Path, laps: usize, change: impl Fn(&mut RunState), keep: &[&str]) {
    let path = dir.join(layout::STATE_FILE);
    let mut state = RunState::load(&path).unwrap();
    change(&mut state);
    state.save(&path).unwrap();
    let mut later: Vec<String> = Vec::new();
    if !state.gaussian_done {
        later.push(layout::GAUSSIAN_FILE.into());
    }
    if !state.initial_samples_done {
        later.push(layout::INIT_DIR.into());
    }
    for lap in state.completed_laps..laps {
        later.push(format!("lap-{lap:03}"));
    }
    for name in later.iter().filter(|n| !keep.contains(&n.as_str())) {
        remove(dir, name);
    }
    if !keep.contains(&layout::METRICS_FILE) {
        let lines: Vec<serde_json::Value> = diem_em::io::read_jsonl(&dir.join(layout::METRICS_FILE))
            .unwrap()
            .into_iter()
            .filter(|l| (l["lap"].as_u64().unwrap() as usize) < state.completed_laps)
            .collect();
        diem_em::io::write_jsonl(&dir.join(layout::METRICS_FILE), &lines).unwrap();
    }
}

#[test]
fn a_resume_from_every_commit_boundary_ends_bit_for_bit_where_the_uninterrupted_run_ends() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    for order in [LapOrder::TrainThenSample, LapOrder::SampleThenTrain] {
        let laps = 2;
        let straight = tmp.path().join(format!("{order:?}-straight"));
        run_to_end(&straight, tiny(order, laps));
        type Stage = (&'static str, fn(&mut RunState), &'static [&'static str]);
        let stages: [Stage; 9] = [
            (
                "created",
                |s| {
                    *s = RunState {
                        gaussian_done: false,
                        initial_samples_done: false,
                        completed_laps: 0,
                        ..s.clone()
                    }
                },
                &[],
            ),
            (
                "Gaussian written, not committed",
                |s| {
                    *s = RunState {
                        gaussian_done: false,
                        initial_samples_done: false,
                        completed_laps: 0,
                        ..s.clone()
                    }
                },
                &["gaussian.safetensors"],
            ),
            (
                "Gaussian committed",
                |s| {
                    *s = RunState {
                        gaussian_done: true,
                        initial_samples_done: false,
                        completed_laps: 0,
                        ..s.clone()
                    }
                },
                &[],
            ),
            (
                "initial samples written, not committed",
                |s| {
                    *s = RunState {
                        gaussian_done: true,
                        initial_samples_done: false,
                        completed_laps: 0,
                        ..s.clone()
                    }
                },
                &["init"],
            ),
            (
                "initial samples committed",
                |s| {
                    *s = RunState {
                        gaussian_done: true,
                        initial_samples_done: true,
                        completed_laps: 0,
                        ..s.clone()
                    }
                },
                &[],
            ),
            (
                "lap 0 written, not committed",
                |s| {
                    *s = RunState {
                        gaussian_done: true,
                        initial_samples_done: true,
                        completed_laps: 0,
                        ..s.clone()
                    }
                },
                &["lap-000", "metrics.jsonl"],
            ),
            (
                "lap 0 committed",
                |s| {
                    *s = RunState {
                        gaussian_done: true,
                        initial_samples_done: true,
                        completed_laps: 1,
                        ..s.clone()
                    }
                },
                &[],
            ),
            (
                "lap 1 half written",
                |s| {
                    *s = RunState {
                        gaussian_done: true,
                        initial_samples_done: true,
                        completed_laps: 1,
                        ..s.clone()
                    }
                },
                &["lap-001"],
            ),
            ("done", |_| {}, &["lap-001", "metrics.jsonl"]),
        ];
        for (i, (what, change, keep)) in stages.into_iter().enumerate() {
            if order == LapOrder::SampleThenTrain && what.starts_with("initial samples") {
                continue; // this order has no initial E-step
            }
            let dir = tmp.path().join(format!("{order:?}-{i}"));
            copy_dir(&straight, &dir);
            let fix = |s: &mut RunState| {
                change(s);
                if order == LapOrder::SampleThenTrain {
                    s.initial_samples_done = false;
                }
            };
            roll_back(&dir, laps, fix, keep);
            if what == "lap 1 half written" {
                // A kill inside a write leaves a temporary file; the lap's weights are gone, its samples stay.
                remove(&dir, "lap-001/weights.safetensors");
                std::fs::write(dir.join("lap-001/.weights.safetensors.tmp-4000000"), b"partial").unwrap();
                std::fs::write(dir.join(".state.bin.tmp-4000001"), b"partial").unwrap();
            }
            if what == "created" {
                // A kill between state.bin and config.json of the new run: config.json is restored.
                remove(&dir, layout::CONFIG_FILE);
            }
            let mut run = EmRun::resume(&dir, observations(), Device::Cpu).unwrap();
            assert!(run.config_changes().is_empty(), "{what}");
            run.run().unwrap();
            assert_same_runs(&straight, &dir, &format!("{order:?}, resumed after '{what}'"));
        }
    }
}

#[test]
fn the_prior_in_memory_is_the_one_a_resume_reads() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    for order in [LapOrder::TrainThenSample, LapOrder::SampleThenTrain] {
        let dir = tmp.path().join(format!("{order:?}"));
        let mut run = EmRun::create(&dir, tiny(order, 1), observations(), Device::Cpu).unwrap();
        run.run().unwrap();
        let mem = run.gaussian().unwrap();
        let disk =
            GaussianPrior::load(&layout::lap_dir(&dir, 0).join(layout::GAUSSIAN_FILE), Device::Cpu).unwrap();
        let pairs = [
            (mem.mean.shallow_clone(), disk.mean.shallow_clone()),
            (mem.cov.d().shallow_clone(), disk.cov.d().shallow_clone()),
            (mem.cov.u().unwrap().shallow_clone(), disk.cov.u().unwrap().shallow_clone()),
            (mem.cov.v().unwrap().shallow_clone(), disk.cov.v().unwrap().shallow_clone()),
        ];
        for (i, (a, b)) in pairs.iter().enumerate() {
            assert!(a.equal(b), "{order:?}: tensor {i} differs");
            assert_eq!(
                (a.kind(), a.stride(), a.is_contiguous()),
                (b.kind(), b.stride(), b.is_contiguous()),
                "{order:?} {i}"
            );
        }
    }
}

/// An observer whose Gaussian hook fails: the run fails after its directory was created.
struct FailingObserver;

impl LapObserver for FailingObserver {
    fn name(&self) -> &str {
        "failing"
    }
    fn on_gaussian(&mut self, _: &Path, _: &GaussianPrior) -> diem_em::Result<()> {
        Err(EmError::config("observer", "fails on purpose"))
    }
    fn on_lap(&mut self, _: &mut LapContext<'_>) -> diem_em::Result<()> {
        Ok(())
    }
}

#[test]
fn a_new_run_overwrites_nothing_and_leaves_nothing_when_it_fails_before_its_first_commit() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Someone else's files with the names a run writes.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir_all(theirs.join("lap-000")).unwrap();
    std::fs::write(theirs.join("config.json"), b"{\"mine\": true}").unwrap();
    std::fs::write(theirs.join("lap-000/weights.safetensors"), b"my weights").unwrap();
    let err =
        EmRun::create(&theirs, tiny(LapOrder::TrainThenSample, 1), observations(), Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("config.json") && msg.contains("lap-000"), "{msg}");
    assert_eq!(std::fs::read(theirs.join("config.json")).unwrap(), b"{\"mine\": true}");
    assert_eq!(std::fs::read(theirs.join("lap-000/weights.safetensors")).unwrap(), b"my weights");
    // A pipeline's own folder next to the run is fine.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir_all(mixed.join("data")).unwrap();
    EmRun::create(&mixed, tiny(LapOrder::TrainThenSample, 1), observations(), Device::Cpu).unwrap();

    // A failure after creation and before the first commit removes what the creation wrote.
    for existed in [false, true] {
        let dir = tmp.path().join(format!("fails-{existed}"));
        if existed {
            std::fs::create_dir(&dir).unwrap();
        }
        let mut run = EmRun::create(&dir, tiny(LapOrder::TrainThenSample, 1), observations(), Device::Cpu)
            .unwrap()
            .with_observer(FailingObserver);
        let err = run.run().unwrap_err();
        assert!(err.to_string().contains("fails on purpose"), "{err}");
        assert_eq!(dir.exists(), existed, "existed before: {existed}");
        if existed {
            assert!(files(&dir).is_empty(), "left behind: {:?}", files(&dir));
        }
        // ... so the same command can simply run again.
        EmRun::create(&dir, tiny(LapOrder::TrainThenSample, 1), observations(), Device::Cpu).unwrap();
    }
}

#[test]
fn everything_checkable_is_checked_before_anything_is_written() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = || tiny(LapOrder::TrainThenSample, 1);
    let zero_mask = || {
        let x = Tensor::randn([8, 2], (Kind::Float, Device::Cpu));
        let op = Mask::new(Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)), &[2]).unwrap();
        Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.1).unwrap(), 0).unwrap()
    };
    let cases: Vec<(&str, EmConfig, Observation)> = vec![
        ("laps", EmConfig { laps: 0, ..base() }, observations()),
        (
            "mstep.steps",
            {
                let mut c = base();
                c.mstep.steps = 0;
                c
            },
            observations(),
        ),
        (
            "gaussian.rank",
            {
                let mut c = base();
                c.gaussian.max_pairs = Some(1);
                c
            },
            observations(),
        ),
        (
            "mstep.batch_size",
            {
                let mut c = base();
                c.mstep.batching = Batching::Epochs;
                c.mstep.batch_size = 65;
                c
            },
            observations(),
        ),
        (
            "refit.rank",
            {
                let mut c = tiny(LapOrder::SampleThenTrain, 1);
                c.refit = Some(RefitConfig { rank: 3, samples: 48 });
                c
            },
            observations(),
        ),
        ("observations", base(), zero_mask()),
        (
            "estep.samples_per_observation",
            {
                let mut c = base();
                c.estep.samples_per_observation = 1 << 40;
                c
            },
            observations(),
        ),
        (
            "gaussian.steps",
            {
                let mut c = base();
                c.gaussian.steps = 1 << 40;
                c
            },
            observations(),
        ),
        (
            "estep.posterior.solver.iterations",
            {
                let mut c = base();
                c.estep.posterior.solver_mut().unwrap().iterations = 1 << 40;
                c
            },
            observations(),
        ),
        ("network.mlp", base(), {
            let x = Tensor::randn([8, 2, 1], (Kind::Float, Device::Cpu));
            let op = Projection::random_sphere(8, 1, 2, 0).unwrap();
            let op = Projection::new(op.matrix().shallow_clone(), &[2, 1]).unwrap();
            Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.1).unwrap(), 0).unwrap()
        }),
    ];
    for (field, config, obs) in cases {
        let dir = tmp.path().join(field);
        let err = EmRun::create(&dir, config, obs, Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, EmError::Config { .. }), "{field}: {msg}");
        assert!(msg.contains(field), "{field}: {msg}");
        assert!(!msg.contains("got 2, got") && !dir.exists(), "{field}: {msg}");
    }
    // Some observations without information: a warning, not an error.
    let x = Tensor::randn([8, 2], (Kind::Float, Device::Cpu));
    let m = Tensor::ones([8, 2], (Kind::Float, Device::Cpu));
    let _ = m.get(3).fill_(0.0);
    let obs = Observation::simulate(
        &x,
        Box::new(Mask::new(m, &[2]).unwrap()),
        NoiseCov::isotropic(0.1).unwrap(),
        0,
    )
    .unwrap();
    let mut c = base();
    c.gaussian.rank = 1;
    c.estep.chunk_size = 8;
    c.mstep.batch_size = 8;
    let in_memory = diem_em::EmLoop::new(c.clone(), obs.clone(), Device::Cpu).unwrap();
    let run = EmRun::create(tmp.path().join("warn"), c, obs, Device::Cpu).unwrap();
    assert!(
        run.warnings().iter().any(|w| w.contains("1 of 8") && w.contains("rows 3")),
        "{:?}",
        run.warnings()
    );
    // The loop without a run directory makes the same checks and keeps the same warnings.
    assert_eq!(in_memory.warnings(), run.warnings());
}

#[test]
fn a_resume_refuses_other_data_and_names_the_arrays_that_differ() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    EmRun::create(&dir, tiny(LapOrder::TrainThenSample, 1), observations(), Device::Cpu).unwrap();
    let obs = observations();
    let params = obs.operator.params();
    let original = &params.iter().find(|(n, _)| n == "matrix").unwrap().1;
    let matrix = Projection::new(original.flip([2]), &[2]).unwrap();
    let others: Vec<(&str, Observation)> = vec![
        ("matrix", Observation::new(obs.y.shallow_clone(), Box::new(matrix), obs.noise.clone()).unwrap()),
        (
            "noise_std",
            Observation::new(obs.y.shallow_clone(), obs.operator.clone(), NoiseCov::isotropic(0.02).unwrap())
                .unwrap(),
        ),
        ("`y`", {
            let perm: Vec<i64> = (0..obs.len()).rev().collect();
            obs.select(&perm)
        }),
    ];
    for (name, other) in others {
        let err = EmRun::resume(&dir, other, Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("observations differ") && msg.contains(name), "{name}: {msg}");
        assert!(!msg.contains("ObservationFingerprint"), "a raw Debug in the message: {msg}");
    }
    EmRun::resume(&dir, observations(), Device::Cpu).unwrap();
}

#[test]
fn a_resume_applies_resumable_edits_records_them_and_refuses_the_rest_by_name() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run_to_end(&dir, tiny(LapOrder::TrainThenSample, 1));
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let path = dir.join(layout::CONFIG_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    };
    edit(&|v| {
        v["laps"] = 2.into();
        v["mstep"]["steps"] = 32.into();
        v["network"]["mlp"]["hidden"] = serde_json::json!([32]);
    });
    let err = EmRun::resume(&dir, observations(), Device::Cpu).unwrap_err();
    match &err {
        EmError::ConfigChanged { fields, .. } => assert_eq!(fields, &["mstep.steps", "network.mlp.hidden"]),
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("16 → 32") && msg.contains(&RESUMABLE.join(", ")),
        "{msg}"
    );
    edit(&|v| {
        v["mstep"]["steps"] = 16.into();
        v["network"]["mlp"]["hidden"] = serde_json::json!([16]);
        v["progress"] = false.into();
        v["diagnostics"]["sinkhorn_subsample"] = 8.into();
    });
    let mut run = EmRun::resume(&dir, observations(), Device::Cpu).unwrap();
    let fields: Vec<&str> = run.config_changes().iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["diagnostics.sinkhorn_subsample", "laps"]);
    assert_eq!(run.run().unwrap().completed_laps, 2);
    let lines = diem_em::io::read_jsonl(&dir.join(layout::METRICS_FILE)).unwrap();
    assert!(lines[0].get("config_changes").is_none());
    let changes = lines[1]["config_changes"].as_array().expect("recorded with lap 1");
    assert_eq!(changes[1], serde_json::json!({ "field": "laps", "from": 1, "to": 2 }));
    // Committed: the next resume sees no change.
    assert!(EmRun::resume(&dir, observations(), Device::Cpu).unwrap().config_changes().is_empty());
}

#[test]
fn stale_temporary_files_go_and_version_1_state_still_resumes() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run_to_end(&dir, tiny(LapOrder::TrainThenSample, 1));
    for f in [".state.bin.tmp-4000000", "lap-000/.samples.npy.tmp-4000001", "init/.samples.npy.tmp-4000002"] {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    // state.bin as version 1 wrote it: no config copy, a fingerprint of counts, shapes and Σy.
    let state = RunState::load(&dir.join(layout::STATE_FILE)).unwrap();
    let obs = observations();
    let sum = obs.y.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
    let v1 = bincode::serialize(&(
        1u32,
        state.seed,
        state.gaussian_done,
        state.initial_samples_done,
        state.completed_laps,
        (obs.len(), obs.operator.x_shape(), obs.operator.y_shape(), obs.operator.kind(), sum.to_bits()),
    ))
    .unwrap();
    std::fs::write(dir.join(layout::STATE_FILE), v1).unwrap();
    let mut run = EmRun::resume(&dir, observations(), Device::Cpu).unwrap();
    assert_eq!(run.completed_laps(), 1);
    let left: Vec<PathBuf> =
        files(&dir).into_iter().filter(|f| f.to_string_lossy().contains(".tmp-")).collect();
    assert!(left.is_empty(), "{left:?}");
    run.run().unwrap();
    let mut other = observations();
    other.y = &other.y + 1.0;
    let err = EmRun::resume(&dir, other, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("observations differ"), "{err}");
}

#[test]
fn non_finite_estep_samples_are_an_error_naming_the_lap_and_rows() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    // V = 0 with σ_y = 1e-3 over-corrects by ~1e6 per step: without MMPS's safeguards (which fit the step
    // to the observation) the samples overflow. Lap 0 samples with the exact Gaussian MMPS; lap 1 with the
    // model and the heuristic.
    let mut c = tiny(LapOrder::SampleThenTrain, 2);
    let mmps = c.estep.posterior.mmps_mut().unwrap();
    mmps.covariance = Covariance::Zeros;
    mmps.safeguards = SafeguardSpec::none();
    c.estep.sampler = SamplerSpec::Ddpm { steps: 32 };
    let dir = tmp.path().join("run");
    let mut run = EmRun::create(&dir, c, observations_with(1e-3), Device::Cpu).unwrap();
    let err = run.run().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EmError::NonFinite { .. }), "{msg}");
    assert!(msg.contains("lap 1") && msg.contains("Zeros") && msg.contains("rows"), "{msg}");
    let state = RunState::load(&dir.join(layout::STATE_FILE)).unwrap();
    assert_eq!(state.completed_laps, 1, "the failed lap is not committed");
    assert!(!layout::lap_dir(&dir, 1).join("samples.npy").exists());
}

/// A finished 1-lap run, made once, that the damage property copies.
fn finished_run() -> &'static Path {
    static RUN: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        run_to_end(&dir, tiny(LapOrder::TrainThenSample, 1));
        (tmp, dir)
    })
    .1
}

/// Whether an error message names a file of `dir` or `dir` itself.
fn names_a_file(msg: &str, dir: &Path) -> bool {
    msg.contains(&dir.display().to_string())
        || files(dir).iter().any(|f| msg.contains(&f.display().to_string()))
        || [
            "state.bin",
            "config.json",
            "samples.npy",
            "gaussian.safetensors",
            "weights.safetensors",
            "metrics.jsonl",
            "train.jsonl",
        ]
        .iter()
        .any(|n| msg.contains(n))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, failure_persistence: None, ..ProptestConfig::default() })]

    /// Files deleted or truncated in a finished run, then a resume asked for one more lap: a completed run
    /// with finite samples, or an error naming a file; never a panic.
    #[test]
    fn a_damaged_run_resumes_or_fails_naming_a_file(
        damage in prop::collection::vec((any::<prop::sample::Index>(), prop::option::of(0.0f64..1.0)), 1..4),
    ) {
        let _serial = serial();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        copy_dir(finished_run(), &dir);
        let all = files(&dir);
        for (which, cut) in &damage {
            let f = dir.join(which.get(&all));
            match cut {
                None => { let _ = std::fs::remove_file(&f); }
                Some(frac) => {
                    if let Ok(bytes) = std::fs::read(&f) {
                        std::fs::write(&f, &bytes[..(bytes.len() as f64 * frac) as usize]).unwrap();
                    }
                }
            }
        }
        // One more lap, asked through config.json when it survived; a lost config.json is restored from
        // state.bin with its single lap, and the resume then has nothing left to run.
        let config = dir.join(layout::CONFIG_FILE);
        let mut laps = 1;
        if let Ok(text) = std::fs::read_to_string(&config) {
            if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) {
                v["laps"] = 2.into();
                std::fs::write(&config, v.to_string()).unwrap();
                laps = 2;
            }
        }
        let _ = diem_em::resolve_checkpoint(&dir).and_then(|c| Ok(diem_models::checkpoint::load(&c, Device::Cpu)?));
        let _ = diem_em::io::read_jsonl(&dir.join(layout::METRICS_FILE));
        let outcome = EmRun::resume(&dir, observations(), Device::Cpu).and_then(|mut r| r.run().map(|s| (r, s)));
        match outcome {
            Ok((run, summary)) => {
                prop_assert_eq!(summary.completed_laps, laps);
                let samples = run.samples().unwrap();
                prop_assert!(bool::try_from(samples.isfinite().all()).unwrap());
                prop_assert!(layout::lap_dir(&dir, laps - 1).join("weights.safetensors").is_file());
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(names_a_file(&msg, &dir), "the error names no file: {msg}");
            }
        }
    }

    /// Random edits of a configuration file: an error naming the file (and the field), or a configuration
    /// that either fails `EmRun::check_new` naming a field or runs to a finite result.
    #[test]
    fn an_edited_config_is_refused_by_name_or_runs(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..12), 1..3),
    ) {
        let _serial = serial();
        let mut v = serde_json::to_value(tiny(LapOrder::SampleThenTrain, 1)).unwrap();
        for (at, how) in &edits {
            let paths = leaf_paths(&v);
            let path = at.get(&paths).clone();
            mutate(&mut v, &path, *how);
        }
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cfg.json");
        std::fs::write(&file, v.to_string()).unwrap();
        match EmConfig::from_file(&file) {
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("cfg.json"), "the file is not named: {msg}");
            }
            Ok(config) => match EmRun::check_new(&config, &observations(), 1) {
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(matches!(e, EmError::Config { .. }), "{msg}");
                }
                Ok(_) if small(&config) => {
                    let dir = tmp.path().join("run");
                    match EmRun::create(&dir, config, observations(), Device::Cpu).and_then(|mut r| r.run().map(|_| r)) {
                        Ok(run) => {
                            let s = run.samples().unwrap();
                            prop_assert!(bool::try_from(s.isfinite().all()).unwrap());
                        }
                        Err(e) => {
                            // A run that breaks down numerically must say so, not exit quietly.
                            let msg = e.to_string();
                            prop_assert!(!msg.is_empty());
                        }
                    }
                }
                Ok(_) => {}
            },
        }
    }
}

/// Every leaf of a JSON value, as a path of keys.
fn leaf_paths(v: &serde_json::Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Object(m) => {
                out.push(prefix.clone());
                for (k, x) in m {
                    prefix.push(k.clone());
                    walk(x, prefix, out);
                    prefix.pop();
                }
            }
            _ => out.push(prefix.clone()),
        }
    }
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One edit at `path`: delete it, or replace it by a value of another kind or an extreme one, or add an
/// unknown key beside it.
fn mutate(v: &mut serde_json::Value, path: &[String], how: u8) {
    let Some((last, parent)) = path.split_last() else { return };
    let mut node = v;
    for k in parent {
        node = &mut node[k];
    }
    let Some(obj) = node.as_object_mut() else { return };
    let values = [
        serde_json::Value::Null,
        0.into(),
        1.into(),
        (-1).into(),
        serde_json::json!(0.5),
        serde_json::json!(1e300),
        "text".into(),
        true.into(),
        serde_json::json!([]),
        serde_json::json!({}),
    ];
    match how {
        10 => {
            obj.remove(last);
        }
        11 => {
            obj.insert(format!("{last}_typo"), 1.into());
        }
        k => {
            obj.insert(last.clone(), values[k as usize].clone());
        }
    }
}

/// Whether a configuration runs in well under a second (so the property can run it).
fn small(c: &EmConfig) -> bool {
    let hidden_ok = match &c.network {
        NetworkConfig::Mlp(m) => m.hidden.iter().all(|&h| h <= 64) && m.embedding_features <= 64,
        _ => false,
    };
    c.laps <= 2
        && hidden_ok
        && c.mstep.steps <= 64
        && c.mstep.batch_size <= 256
        && c.gaussian.iterations <= 4
        && c.gaussian.steps <= 32
        && c.gaussian.solver.iterations <= 16
        && c.estep.sampler.steps() <= 32
        && c.estep.posterior.solver().is_some_and(|s| s.iterations <= 16)
        && c.estep.samples_per_observation <= 4
        && c.refit.is_none_or(|r| r.samples <= 256)
        && c.diagnostics.sinkhorn_subsample.is_none_or(|s| s <= 64)
        && matches!(
            c.estep.sampler,
            SamplerSpec::Ddpm { .. } | SamplerSpec::Ddim { .. } | SamplerSpec::Pc { corrections: 0..=2, .. }
        )
}
