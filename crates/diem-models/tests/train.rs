//! Training: the MLP denoiser learns a 2-D two-component mixture (docs/method.md §3.3, §8), plus the trainer's
//! clipping, learning rate and time sampling.

use diem_models::{
    Denoiser, EdmDenoiser, LrConfig, MixtureDenoiser, Mlp, MlpConfig, TimeDistribution, TrainConfig, Trainer,
    VeSchedule,
};
use tch::{nn, Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Float, Device::Cpu);

/// The tests draw from libtorch's process-global generator: one at a time, so that a seeded run is
/// reproducible while other tests run.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `n` samples of `(1/2) N(μ_1, s² I) + (1/2) N(μ_2, s² I)`.
fn mixture_samples(centres: &Tensor, s: f64, n: i64) -> Tensor {
    let idx = Tensor::randint(centres.size()[0], [n], (Kind::Int64, Device::Cpu));
    centres.index_select(0, &idx) + Tensor::randn([n, 2], OPTS) * s
}

fn small_mlp(vs: &nn::VarStore) -> EdmDenoiser<Mlp> {
    let cfg = MlpConfig { features: 2, hidden: vec![64, 64], embedding_features: 16 };
    EdmDenoiser::new(Mlp::new(&vs.root(), &cfg).unwrap()).unwrap()
}

/// After 1,000 Adam steps, the MLP's denoising error at σ = 0.5 is within 10 % of the Bayes-optimal error of
/// the analytic mixture denoiser (measured on the same 16,384 fresh noisy samples).
#[test]
fn mlp_learns_a_two_component_mixture() {
    let _serial = serial();
    tch::manual_seed(42);
    let centres = Tensor::from_slice(&[-1.0f32, 0.5, 1.0, -0.5]).view([2, 2]);
    let s = 0.3;
    let data = mixture_samples(&centres, s, 8192);
    let vs = nn::VarStore::new(Device::Cpu);
    let d = small_mlp(&vs);
    let config = TrainConfig {
        steps: 1000,
        batch_size: 256,
        lr: LrConfig::linear(3e-3, 1e-5),
        log_every: 200,
        ..TrainConfig::manifold()
    };
    let mut trainer = Trainer::new(&vs, config).unwrap();
    let report = trainer.fit(&d, &data).unwrap();
    assert_eq!(report.records.len(), 5);
    assert!(report.records.iter().all(|r| r.loss.is_finite()));
    assert!(report.records[4].loss < report.records[0].loss);

    let x = mixture_samples(&centres, s, 16384);
    let sigma = Tensor::full([16384], 0.5, OPTS);
    let x_t = &x + Tensor::randn([16384, 2], OPTS) * 0.5;
    let exact = MixtureDenoiser::new(centres, s).unwrap();
    let (err_net, err_opt) = tch::no_grad(|| {
        let e = |y: Tensor| (y - &x).square().sum(Kind::Double).double_value(&[]) / 16384.0;
        (e(d.denoise(&x_t, &sigma)), e(exact.denoise(&x_t, &sigma)))
    });
    println!("denoising error at σ = 0.5: network {err_net:.5}, analytic {err_opt:.5}");
    assert!(err_net <= 1.1 * err_opt, "network {err_net} vs analytic {err_opt}");
}

/// With clipping on, the gradients Adam consumed have global norm at most the threshold, and the returned
/// norm is the one before clipping.
#[test]
fn gradients_are_clipped_to_the_global_norm() {
    let _serial = serial();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let d = small_mlp(&vs);
    let config = TrainConfig { steps: 10, batch_size: 64, clip_norm: Some(1e-3), ..TrainConfig::manifold() };
    let mut trainer = Trainer::new(&vs, config).unwrap();
    let x = Tensor::randn([64, 2], OPTS) * 3.0;
    let (loss, norm) = trainer.train_step(&d, &x).unwrap();
    assert!(loss.double_value(&[]).is_finite());
    let clipped: f64 = vs
        .trainable_variables()
        .iter()
        .map(|p| p.grad().square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    let before = norm.double_value(&[]);
    assert!(before > 1e-3, "the raw gradient norm {before} should exceed the threshold");
    assert!((clipped - 1e-3).abs() < 1e-6, "clipped norm {clipped}");
    assert_eq!(trainer.steps_done(), 1);
    // Learning rate of the next step: linear from 1e-3 towards 1e-6 with progress (s + 1)/(S + 1).
    let want = 1e-3 + (1e-6 - 1e-3) * 2.0 / 11.0;
    assert!((trainer.current_lr() - want).abs() < 1e-15);
}

#[test]
fn beta_times_have_beta_moments() {
    let _serial = serial();
    tch::manual_seed(5);
    let t =
        TimeDistribution::Beta { alpha: 3.0, beta: 3.0 }.sample(200_000, Device::Cpu).to_kind(Kind::Double);
    assert!(t.min().double_value(&[]) > 0.0 && t.max().double_value(&[]) < 1.0);
    let mean = t.mean(Kind::Double).double_value(&[]);
    let var = t.var(false).double_value(&[]);
    assert!((mean - 0.5).abs() < 3e-3, "{mean}");
    assert!((var - 9.0 / (36.0 * 7.0)).abs() < 1e-3, "{var}");
    assert_eq!(VeSchedule::manifold(), TrainConfig::manifold().schedule);
}

#[test]
fn epochs_need_a_full_batch_and_configs_are_checked() {
    let _serial = serial();
    let vs = nn::VarStore::new(Device::Cpu);
    let d = small_mlp(&vs);
    let mut trainer =
        Trainer::new(&vs, TrainConfig { steps: 1, batch_size: 256, ..TrainConfig::cifar(1) }).unwrap();
    // CIFAR's config augments images: 2-D data is rejected with a shape error, and too few samples too.
    assert!(trainer.fit(&d, &Tensor::randn([300, 2], OPTS)).is_err());
    assert!(trainer.fit(&d, &Tensor::randn([10, 2], OPTS)).is_err());
    let bad = TrainConfig { ema_decay: Some(1.5), ..TrainConfig::manifold() };
    assert!(Trainer::new(&vs, bad).unwrap_err().to_string().contains("ema_decay"));
}

/// `fit_with` calls its hook every `every` steps and after the last one; inside the hook the model holds the
/// EMA weights under `with_ema_weights` and the live ones again afterwards, and the hook does not change the
/// training (same losses as `fit` with the same seed).
#[test]
fn fit_with_calls_the_hook_and_evaluates_with_the_ema_weights() {
    let _serial = serial();
    let centres = Tensor::from_slice(&[-1.0f32, 0.5, 1.0, -0.5]).view([2, 2]);
    let config = TrainConfig {
        steps: 25,
        batch_size: 32,
        ema_decay: Some(0.9),
        log_every: 5,
        ..TrainConfig::manifold()
    };
    let train = |hooked: bool| {
        tch::manual_seed(7);
        let data = mixture_samples(&centres, 0.3, 256);
        let vs = nn::VarStore::new(Device::Cpu);
        let d = small_mlp(&vs);
        let mut trainer = Trainer::new(&vs, config.clone()).unwrap();
        let probe = Tensor::randn([8, 2], OPTS);
        let sigma = Tensor::full([8], 0.5, OPTS);
        let mut calls = Vec::new();
        let report = if hooked {
            trainer
                .fit_with(&d, &data, 10, &mut |step, t| {
                    let live = tch::no_grad(|| d.denoise(&probe, &sigma));
                    let ema = t.with_ema_weights(|| tch::no_grad(|| d.denoise(&probe, &sigma)));
                    let after = tch::no_grad(|| d.denoise(&probe, &sigma));
                    assert!(live.equal(&after), "step {step}: the live weights were not restored");
                    assert!(!live.equal(&ema), "step {step}: the EMA weights were not used");
                    calls.push(step);
                    Ok(())
                })
                .unwrap()
        } else {
            trainer.fit(&d, &data).unwrap()
        };
        (report.records.iter().map(|r| r.loss).collect::<Vec<_>>(), calls)
    };
    let (plain, none) = train(false);
    let (hooked, calls) = train(true);
    assert!(none.is_empty());
    assert_eq!(calls, vec![10, 20, 25]);
    assert_eq!(plain, hooked, "the hook changed the training");
}

/// The opt-in flat Adam (`AdamConfig::fused`) trains the same way as libtorch's Adam through the whole trainer:
/// from the same seed, the loss curves agree to rounding over 60 steps with clipping active, the network's
/// variables (the layers' own handles) end up equal to within float rounding, and the variables keep their names
/// and shapes.
#[test]
fn fused_adam_follows_libtorch_adam_through_the_trainer() {
    let _serial = serial();
    let run = |fused: bool| {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let d = small_mlp(&vs);
        let data = Tensor::randn([512, 2], OPTS) * 2.0;
        let mut config = TrainConfig {
            steps: 60,
            batch_size: 128,
            log_every: 20,
            clip_norm: Some(0.5),
            ..TrainConfig::manifold()
        };
        config.adam.fused = fused;
        let report = Trainer::new(&vs, config).unwrap().fit(&d, &data).unwrap();
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let x = Tensor::randn([64, 2], OPTS);
        let out = tch::no_grad(|| d.denoise(&x, &Tensor::full([64], 0.7, OPTS)));
        (report, vars, out)
    };
    let (ref_report, ref_vars, ref_out) = run(false);
    let (report, vars, out) = run(true);
    for (a, b) in ref_report.records.iter().zip(&report.records) {
        assert!((a.loss - b.loss).abs() <= 1e-4 * a.loss.abs(), "losses {} vs {}", a.loss, b.loss);
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-4 * a.grad_norm,
            "norms {} vs {}",
            a.grad_norm,
            b.grad_norm
        );
        assert!(a.grad_norm > 0.5, "clipping should be active (norm {})", a.grad_norm);
    }
    assert_eq!(ref_vars.len(), vars.len());
    for ((na, a), (nb, b)) in ref_vars.iter().zip(&vars) {
        assert_eq!((na, a.size()), (nb, b.size()));
        let err = (a - b).abs().max().double_value(&[]);
        assert!(err < 1e-4, "{na} differs by {err}");
    }
    // The denoiser that the layers compute moved with the flat buffer (not a stale copy).
    let err = (&ref_out - &out).abs().max().double_value(&[]);
    assert!(err < 1e-3, "denoiser outputs differ by {err}");
}
