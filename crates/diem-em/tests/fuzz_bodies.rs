//! The bodies of the `cargo fuzz` targets (`fuzz/src/lib.rs`, included here) in the normal test suite, so
//! they run without nightly or libFuzzer: on every file of the seed corpus (`data/fuzz/<target>/`) and on
//! random mutations of it (bytes flipped, inserted, deleted, overwritten with boundary values, truncated).
//! A panic in a body is a parser bug.
//!
//! `DIEM_WRITE_FUZZ_CORPUS=1 cargo xtask cargo test -p diem-em --test fuzz_bodies write_seed_corpus` rewrites
//! the seed corpus from real objects (run it after a file format changes).

#[path = "../../../fuzz/src/lib.rs"]
mod bodies;

use std::path::{Path, PathBuf};

use diem_em::{
    io::RunState, Covariance, DataStorage, DiagnosticsConfig, EStepConfig, EmConfig, EmRun, GaussianEmConfig,
    LapOrder, PosteriorSpec, SamplerSpec, SolverSpec, CONFIG_VERSION,
};
use diem_models::{Batching, LrConfig, MlpConfig, NetworkConfig, TrainConfig, VeSchedule};
use diem_operators::{Blur, Boundary, Compose, Downsample, KSpace, Mask, NoiseCov, Observation, Projection};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fuzz")
}

/// Every seed file of `target`.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn every_seed_file_passes_its_target() {
    for (name, body) in bodies::TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "no seed corpus for {name}");
        for s in &seeds {
            body(s);
        }
        body(&[]);
    }
}

/// One byte-level edit, as libFuzzer's mutators make them.
#[derive(Debug, Clone)]
enum Edit {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Boundary(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<prop::sample::Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<prop::sample::Index>(), 0u8..6).prop_map(|(i, k)| Edit::Boundary(i, k)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    if bytes.is_empty() {
        return;
    }
    match e {
        Edit::Flip(i, x) => {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        Edit::Insert(i, b) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Edit::Delete(i, n) => {
            let at = i.index(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
        Edit::Boundary(i, k) => {
            // Overwrite 8 bytes with a boundary value: lengths and shapes are where parsers trust input.
            let values = [0u64, u64::MAX, i64::MAX as u64, 1 << 40, 0x7ff8_0000_0000_0000, u32::MAX as u64];
            let at = i.index(bytes.len());
            let v = values[*k as usize % values.len()].to_le_bytes();
            let end = (at + 8).min(bytes.len());
            bytes[at..end].copy_from_slice(&v[..end - at]);
        }
        Edit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_seed_files_never_panic(
        target in any::<prop::sample::Index>(),
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let (name, body) = *target.get(bodies::TARGETS);
        let seeds = seeds(name);
        let mut bytes = seed.get(&seeds).clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        body(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(target in any::<prop::sample::Index>(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (_, body) = *target.get(bodies::TARGETS);
        body(&bytes);
    }
}

/// A 1-lap configuration of a fraction of a second (features 5).
fn tiny(order: LapOrder) -> EmConfig {
    EmConfig {
        version: CONFIG_VERSION,
        seed: 3,
        laps: 1,
        order,
        network: NetworkConfig::Mlp(MlpConfig { features: 5, hidden: vec![8], embedding_features: 4 }),
        gaussian: GaussianEmConfig {
            rank: 2,
            iterations: 1,
            steps: 4,
            solver: SolverSpec::cg(2),
            max_pairs: None,
            stride: 1,
            chunk_size: 16,
        },
        estep: EStepConfig {
            samples_per_observation: 1,
            sampler: SamplerSpec::Ddpm { steps: 4 },
            posterior: PosteriorSpec::new(Covariance::Tweedie, SolverSpec::cg(1)).into(),
            chunk_size: 16,
            memory_budget_mib: None,
        },
        mstep: TrainConfig {
            steps: 4,
            batch_size: 8,
            lr: LrConfig::linear(1e-3, 1e-4),
            schedule: VeSchedule::manifold(),
            batching: Batching::WithReplacement,
            log_every: 2,
            ema_decay: if order == LapOrder::SampleThenTrain { Some(0.9) } else { None },
            ..TrainConfig::manifold()
        },
        filter_bound: Some(3.0),
        refit: None,
        diagnostics: DiagnosticsConfig { sinkhorn_subsample: Some(8), sample_bound: None },
        progress: false,
        storage: DataStorage::Device,
    }
}

/// Rewrites `data/fuzz/` from real objects (only with `DIEM_WRITE_FUZZ_CORPUS` set).
#[test]
fn write_seed_corpus() {
    if std::env::var_os("DIEM_WRITE_FUZZ_CORPUS").is_none() {
        return;
    }
    tch::manual_seed(0);
    let root = corpus_dir();
    let dir = |t: &str| {
        let d = root.join(t);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let x = Tensor::randn([3, 1, 4, 4], (Kind::Float, Device::Cpu));
    let noise = || NoiseCov::isotropic(0.05).unwrap();
    let sets: Vec<(&str, Observation)> = vec![
        (
            "mask",
            Observation::simulate(
                &x,
                Box::new(Mask::random_pixels(3, &[1, 4, 4], 0.5, 1).unwrap()),
                noise(),
                1,
            )
            .unwrap(),
        ),
        (
            "kspace",
            Observation::simulate(
                &x,
                Box::new(KSpace::random_lines(3, &[1, 4, 4], 2.0, 2).unwrap()),
                noise(),
                2,
            )
            .unwrap(),
        ),
        (
            "blur-downsample",
            Observation::simulate(
                &x,
                Box::new(
                    Compose::new(vec![
                        Box::new(Blur::gaussian(&[1, 4, 4], 3, 1.0, Boundary::Reflect).unwrap()),
                        Box::new(Downsample::average(&[1, 4, 4], 2).unwrap()),
                    ])
                    .unwrap(),
                ),
                NoiseCov::diagonal(Tensor::full([1, 1, 2, 2], 0.1, (Kind::Float, Device::Cpu))).unwrap(),
                3,
            )
            .unwrap(),
        ),
    ];
    let flat = Tensor::randn([16, 5], (Kind::Float, Device::Cpu));
    let projection =
        Observation::simulate(&flat, Box::new(Projection::random_sphere(16, 2, 5, 4).unwrap()), noise(), 4)
            .unwrap();
    for (name, obs) in sets.iter().chain([("projection", projection.clone())].iter()) {
        obs.save(dir("observation_npz").join(format!("{name}.npz"))).unwrap();
        obs.save(dir("observation_safetensors").join(format!("{name}.safetensors"))).unwrap();
    }
    // A finished tiny run gives state.bin, the samples and the checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    EmRun::create(&run, tiny(LapOrder::SampleThenTrain), projection, Device::Cpu).unwrap().run().unwrap();
    std::fs::copy(run.join("state.bin"), dir("run_state").join("v2.bin")).unwrap();
    let state = RunState::load(&run.join("state.bin")).unwrap();
    let v1 = bincode::serialize(&(
        1u32,
        state.seed,
        true,
        false,
        1usize,
        (16i64, vec![5i64], vec![2i64], "projection", 0u64),
    ))
    .unwrap();
    std::fs::write(dir("run_state").join("v1.bin"), v1).unwrap();
    std::fs::copy(run.join("lap-000/samples.npy"), dir("samples_npy").join("f32.npy")).unwrap();
    diem_em::write_npy(
        &dir("samples_npy").join("f64.npy"),
        &Tensor::randn([4, 1, 2, 2], (Kind::Double, Device::Cpu)),
    )
    .unwrap();
    std::fs::copy(
        run.join("lap-000/weights.safetensors"),
        dir("checkpoint_safetensors").join("weights.safetensors"),
    )
    .unwrap();
    std::fs::copy(run.join("lap-000/ema.safetensors"), dir("checkpoint_safetensors").join("ema.safetensors"))
        .unwrap();
    std::fs::copy(
        run.join("gaussian.safetensors"),
        dir("checkpoint_safetensors").join("gaussian.safetensors"),
    )
    .unwrap();
    let cfg = dir("em_config");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/configs/manifold-tiny.json"),
        cfg.join("manifold-tiny.json"),
    )
    .unwrap();
    for order in [LapOrder::TrainThenSample, LapOrder::SampleThenTrain] {
        let text = serde_json::to_vec_pretty(&tiny(order)).unwrap();
        std::fs::write(cfg.join(format!("{order:?}.json").to_lowercase()), text).unwrap();
    }
}
