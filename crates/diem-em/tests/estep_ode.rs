//! The E-step runs on the probability-flow ODE solvers (docs/method.md §4.5): one configuration line names
//! them, MMPS on Heun and DPM-Solver++(2M) fits the observations as it does on DDPM, each chunk counts the
//! solver's calls, and DPS, a sampler of its own, refuses them with an error naming the sampler.

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

fn misfit(obs: &Observation, x: &Tensor) -> f64 {
    estep_consistency(obs, x, f64::INFINITY).unwrap().residual_ratio_median
}

#[test]
fn mmps_estep_on_ode_solvers() {
    let (prior, obs) = problem();
    let ddpm = SamplerSpec::Ddpm { steps: 16 }.build(VeSchedule::default()).unwrap();
    let prior_x = ddpm.sample(&prior, &[N, D], Kind::Float, Device::Cpu, &mut NoiseRng::seeded(5)).unwrap();
    let prior_misfit = misfit(&obs, &prior_x);
    assert!(prior_misfit > 5.0, "the prior alone should not fit the observations: {prior_misfit}");
    let method: PosteriorMethod =
        serde_json::from_str(r#"{"covariance": "tweedie", "solver": {"method": "cg", "iterations": 2}}"#)
            .unwrap();
    let plan =
        EStepPlan::new(method.resolve(None).unwrap(), 1).chunk(40).seeded(9, SeedPurpose::EStepChunk, 0);
    for (json, calls) in [
        (r#"{"euler": {"steps": 16}}"#, 17),
        (r#"{"heun": {"steps": 16}}"#, 33),
        (r#"{"dpmpp2m": {"steps": 16}}"#, 17),
    ] {
        // One configuration line names the solver, inside an E-step configuration.
        let e: EStepConfig = serde_json::from_value(serde_json::json!({
            "samples_per_observation": 1,
            "sampler": serde_json::from_str::<serde_json::Value>(json).unwrap(),
            "posterior": {"covariance": "tweedie", "solver": {"method": "cg", "iterations": 2}},
            "chunk_size": 40
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(e.sampler).unwrap(),
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
        let sampler = e.sampler.build(VeSchedule::default()).unwrap();
        let x = posterior_samples(&prior, &obs, sampler.as_ref(), &plan, None).unwrap();
        assert_eq!(x.size(), vec![N, D], "{json}");
        assert!(bool::try_from(x.isfinite().all()).unwrap(), "{json}: non-finite samples");
        let post_misfit = misfit(&obs, &x);
        assert!(
            post_misfit < prior_misfit / 2.0,
            "{json}: misfit {post_misfit} vs the prior's {prior_misfit}"
        );
        let shard = posterior_shard(&prior, &obs, sampler.as_ref(), &plan, 1..2, None).unwrap();
        assert_eq!(shard.stats.calls, calls, "{json}: calls of one chunk");
        assert_eq!(shard.stats.vjps, calls * 2, "{json}");
        let rows = x.narrow(0, shard.first_row, shard.samples.size()[0]);
        assert_eq!(f64::try_from((&shard.samples - rows).abs().max()).unwrap(), 0.0, "{json}");
        // DPS is its own sampler and refuses the ODE solver by name.
        let dps: PosteriorMethod = serde_json::from_str(r#"{"dps": {"zeta": 1.0}}"#).unwrap();
        let dps_plan =
            EStepPlan::new(dps.resolve(None).unwrap(), 1).chunk(40).seeded(9, SeedPurpose::EStepChunk, 0);
        let err = posterior_samples(&prior, &obs, sampler.as_ref(), &dps_plan, None).unwrap_err().to_string();
        assert!(err.contains("sampler") && err.contains(sampler.name()), "{json}: {err}");
    }
}
