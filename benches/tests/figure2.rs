//! The Figure 2 study's building blocks: the closed-form posterior against importance resampling
//! (docs/method.md §10.3, §12.1 item 8) and the paper's headline ordering at an intermediate σ_t (docs/method.md §10.5).

use diem_benches::figure2::{gaussian_log_density, run_seed, CovarianceChoice, Figure2Config};
use diem_benches::mixture::{MixtureConfig, MixtureProblem};
use diem_benches::random;
use diem_benches::stats::quantile;
use tch::{Kind, Tensor};

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn closed_form_posterior_matches_importance_resampling() {
    for seed in [3u64, 4] {
        let problem = MixtureProblem::generate(&MixtureConfig::default(), seed).unwrap();
        let posterior = problem.posterior();
        let mut rng = random::stream(seed, 7);
        let pool = problem.sample_prior(&mut rng, 1 << 18);
        let logw = problem.log_likelihood(&pool);
        let ess = random::effective_sample_size(&logw);
        assert!(ess > 500.0, "seed {seed}: ESS {ess} too small for a moment check");
        let idx = random::resample(&mut rng, &logw, 1 << 15, "test").unwrap();
        let x = pool.index_select(0, &idx);
        for sigma_t in [0.0, 0.5] {
            let x_t = &x + random::normal(&mut rng, &x.size()) * sigma_t;
            let mean = x_t.mean_dim(0, false, Kind::Double);
            let centred = &x_t - &mean;
            let cov = centred.tr().matmul(&centred) / (x_t.size()[0] - 1) as f64;
            let scale = posterior.covariance(sigma_t).diagonal(0, 0, 1).max().double_value(&[]).sqrt();
            // Monte-Carlo tolerance: a few standard errors for an effective size of ≳ 500.
            let tol = 0.25 * scale + 1e-3;
            let dm = max_abs(&(mean - posterior.mean()));
            let dc = max_abs(&(cov - posterior.covariance(sigma_t)));
            assert!(dm < tol, "seed {seed} σ_t {sigma_t}: mean error {dm} (tolerance {tol})");
            assert!(dc < tol * scale * 2.0, "seed {seed} σ_t {sigma_t}: covariance error {dc}");
        }
        // The closed-form exact sampler draws the same distribution.
        let direct = posterior.sample(&mut rng, 1 << 15, 0.0).unwrap();
        let dm = max_abs(&(direct.mean_dim(0, false, Kind::Double) - posterior.mean()));
        assert!(dm < 0.05, "seed {seed}: direct sampler mean error {dm}");
    }
}

#[test]
fn the_posterior_concentrates_on_centres_consistent_with_y() {
    let problem = MixtureProblem::generate(&MixtureConfig::default(), 0).unwrap();
    let posterior = problem.posterior();
    // The true centre explains y, so its weight is among the largest.
    let pi = posterior.log_weights.exp();
    assert!((pi.sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-12);
    assert!(pi.double_value(&[0]) > 1e-3, "weight of x* = μ_1: {}", pi.double_value(&[0]));
    // Component covariance: C_y = (I/s² + WᵀW/σ_y²)⁻¹, so W C_y Wᵀ = s²σ_y²/(σ_y² + s²) for a unit-norm row.
    let wcw = problem.w.matmul(&posterior.cov).matmul(&problem.w.tr()).double_value(&[0, 0]);
    let (s2, sy2) = (1e-4, 1e-4);
    assert!((wcw - s2 * sy2 / (s2 + sy2)).abs() < 1e-12, "W C_y Wᵀ = {wcw}");
}

#[test]
fn gaussian_log_density_matches_the_dense_formula() {
    let mut rng = random::stream(1, 1);
    let r = random::normal(&mut rng, &[5, 3]);
    let a = random::normal(&mut rng, &[5, 3, 3]);
    let s = a.matmul(&a.transpose(1, 2)) + Tensor::eye(3, (Kind::Double, tch::Device::Cpu)) * 0.5;
    let got = gaussian_log_density(&r, &s).unwrap();
    for i in 0..5 {
        let si = s.get(i);
        let ri = r.get(i);
        let quad = ri.dot(&si.inverse().mv(&ri)).double_value(&[]);
        let want = -0.5 * (quad + si.logdet().double_value(&[]));
        assert!((got.double_value(&[i]) - want).abs() < 1e-10);
    }
    // A shared covariance broadcasts over the rows.
    let shared = gaussian_log_density(&r, &s.get(0)).unwrap();
    assert!((shared.double_value(&[0]) - got.double_value(&[0])).abs() < 1e-10);
}

#[test]
fn tweedie_covariance_beats_the_heuristics_at_intermediate_noise() {
    // docs/method.md §10.5: at σ_t = 0.2 the paper's figure shows orders of magnitude between the Tweedie covariance
    // and the three heuristics. Small sizes, fixed seeds, medians over three seeds.
    let config = Figure2Config {
        sigmas: vec![0.2],
        seeds: 3,
        proposal_size: 1 << 14,
        sinkhorn_points: 128,
        ..Figure2Config::default()
    };
    let mut per_choice = std::collections::BTreeMap::<CovarianceChoice, Vec<f64>>::new();
    for seed in 0..config.seeds {
        for r in run_seed(&config, seed, &mut |_| {}).unwrap() {
            per_choice.entry(r.choice).or_default().push(r.divergence);
        }
    }
    let median = |c: CovarianceChoice| quantile(&per_choice[&c], 0.5);
    let hessian = median(CovarianceChoice::Hessian);
    for c in [CovarianceChoice::Zero, CovarianceChoice::CovT, CovarianceChoice::CovX] {
        assert!(
            hessian * 3.0 < median(c),
            "median divergence: hessian {hessian:.3e} vs {} {:.3e}",
            c.name(),
            median(c)
        );
    }
}

#[test]
fn hessian_choice_is_the_autograd_tweedie_covariance() {
    // docs/method.md §10.4 `hessian` = σ² I + σ⁴ ∇² ln p(x_t) = σ² J; the study uses the closed form of §10.2.
    let problem = MixtureProblem::generate(&MixtureConfig::default(), 2).unwrap();
    let denoiser = problem.denoiser().unwrap();
    let mut rng = random::stream(2, 3);
    for sigma_t in [0.05, 0.5, 2.0] {
        let x_t = problem.sample_prior(&mut rng, 16) + random::normal(&mut rng, &[16, 3]) * sigma_t;
        let sigma = Tensor::from(sigma_t);
        let closed = denoiser.covariance(&x_t, &sigma);
        let autograd = diem_models::tweedie_covariance(&denoiser, &x_t, &sigma).unwrap();
        let err = max_abs(&(&closed - &autograd)) / max_abs(&closed);
        assert!(err < 1e-8, "σ_t {sigma_t}: relative difference {err:e}");
    }
}
