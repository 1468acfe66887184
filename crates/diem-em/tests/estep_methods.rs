//! The E-step takes any posterior method of the vocabulary: DPS (the EMDiffusion baseline) and PiGDM run
//! through the same chunked loop as MMPS, give finite samples of the right shape that fit their observations
//! much better than prior samples do, count their costs, and are reproducible chunk by chunk.

use diem_em::diagnostics::estep_consistency;
use diem_em::{posterior_samples, posterior_shard, EStepConfig, EStepPlan, SeedPurpose};
use diem_linalg::Dplr;
use diem_models::{GaussianDenoiser, VeSchedule};
use diem_operators::{NoiseCov, Observation, Projection};
use diem_sampling::{NoiseRng, PosteriorMethod, SamplerSpec};
use tch::{Device, Kind, Tensor};

const N: i64 = 48;
const D: i64 = 5;

fn problem() -> (GaussianDenoiser, Observation) {
    let (kind, dev) = (Kind::Float, Device::Cpu);
    let prior = GaussianDenoiser::new(Tensor::zeros([D], (kind, dev)), Dplr::identity(D, kind, dev)).unwrap();
    let x = NoiseRng::seeded(1).normal(&[N, D], kind, dev);
    let op = Projection::random_sphere(N, 2, D, 2).unwrap();
    let obs = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.05).unwrap(), 3).unwrap();
    (prior, obs)
}

/// The median residual-to-noise ratio of samples against the observations.
fn misfit(obs: &Observation, x: &Tensor) -> f64 {
    estep_consistency(obs, x, f64::INFINITY).unwrap().residual_ratio_median
}

#[test]
fn dps_and_pigdm_run_in_the_estep_and_fit_the_observations_better_than_the_prior() {
    let (prior, obs) = problem();
    let sampler = SamplerSpec::Ddpm { steps: 64 }.build(VeSchedule::default()).unwrap();
    let prior_x =
        sampler.sample(&prior, &[N, D], Kind::Float, Device::Cpu, &mut NoiseRng::seeded(5)).unwrap();
    let prior_misfit = misfit(&obs, &prior_x);
    assert!(prior_misfit > 5.0, "the prior alone should not fit the observations: {prior_misfit}");
    for json in [
        r#"{"dps": {"zeta": 1.0}}"#,
        r#"{"pgdm": {}}"#,
        r#"{"covariance": "tweedie", "solver": {"method": "cg", "iterations": 2}}"#,
    ] {
        // One configuration line picks the method.
        let method: PosteriorMethod = serde_json::from_str(json).unwrap();
        let plan =
            EStepPlan::new(method.resolve(None).unwrap(), 2).chunk(40).seeded(9, SeedPurpose::EStepChunk, 0);
        let x = posterior_samples(&prior, &obs, sampler.as_ref(), &plan, None).unwrap();
        assert_eq!(x.size(), vec![2 * N, D], "{json}");
        assert!(bool::try_from(x.isfinite().all()).unwrap(), "{json}: non-finite samples");
        // Sample j belongs to observation j mod N.
        let twice = obs.select(&(0..2 * N).map(|j| j % N).collect::<Vec<_>>());
        let post_misfit = misfit(&twice, &x);
        assert!(
            post_misfit < prior_misfit / 2.0,
            "{json}: misfit {post_misfit} vs the prior's {prior_misfit}"
        );
        // Chunks are reproducible on their own, and costs are counted.
        let shard = posterior_shard(&prior, &obs, sampler.as_ref(), &plan, 1..2, None).unwrap();
        let rows = x.narrow(0, shard.first_row, shard.samples.size()[0]);
        assert_eq!(f64::try_from((&shard.samples - rows).abs().max()).unwrap(), 0.0, "{json}");
        let cost = method.cost_per_call();
        let calls = shard.stats.calls;
        assert_eq!(calls, if method.is_sampler() { 64 } else { 65 }, "{json}: calls of one chunk");
        assert_eq!(shard.stats.forwards, calls * cost.forwards, "{json}");
        assert!(shard.stats.vjps <= calls * cost.vjps && shard.stats.vjps > 0, "{json}: {:?}", shard.stats);
    }
}

#[test]
fn an_estep_configuration_names_dps_in_one_line() {
    let mut e: EStepConfig = serde_json::from_value(serde_json::json!({
        "samples_per_observation": 1,
        "sampler": {"ddpm": {"steps": 16}},
        "posterior": {"dps": {"zeta": 0.5}},
        "chunk_size": 64
    }))
    .unwrap();
    assert_eq!(e.posterior, PosteriorMethod::Dps(diem_sampling::DpsSpec { zeta: 0.5 }));
    assert_eq!(serde_json::to_value(&e).unwrap()["posterior"], serde_json::json!({"dps": {"zeta": 0.5}}));
    e.posterior = PosteriorMethod::Dps(diem_sampling::DpsSpec { zeta: f64::NAN });
    let mut c = diem_em::EmConfig::manifold(1);
    c.estep = e;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("estep.posterior.dps.zeta"), "{err}");
}
