//! The E-step takes TDS (docs/method.md §5.7) from one configuration line, like every posterior method: its
//! samples have the E-step's shape, fit their observations far better than prior samples, count one twisting
//! evaluation per level, and are reproducible chunk by chunk.

use diem_em::diagnostics::estep_consistency;
use diem_em::{posterior_samples, posterior_shard, EStepPlan, SeedPurpose};
use diem_linalg::Dplr;
use diem_models::{GaussianDenoiser, VeSchedule};
use diem_operators::{NoiseCov, Observation, Projection};
use diem_sampling::{NoiseRng, PosteriorMethod, SamplerSpec};
use tch::{Device, Kind, Tensor};

const N: i64 = 24;
const D: i64 = 5;

#[test]
fn tds_runs_as_the_estep_posterior_method() {
    let (kind, dev) = (Kind::Float, Device::Cpu);
    let prior = GaussianDenoiser::new(Tensor::zeros([D], (kind, dev)), Dplr::identity(D, kind, dev)).unwrap();
    let x = NoiseRng::seeded(1).normal(&[N, D], kind, dev);
    let op = Projection::random_sphere(N, 2, D, 2).unwrap();
    let obs = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.05).unwrap(), 3).unwrap();
    let sampler = SamplerSpec::Ddpm { steps: 32 }.build(VeSchedule::default()).unwrap();
    let misfit = |obs: &Observation, x: &Tensor| {
        estep_consistency(obs, x, f64::INFINITY).unwrap().residual_ratio_median
    };
    let prior_x = sampler.sample(&prior, &[N, D], kind, dev, &mut NoiseRng::seeded(5)).unwrap();
    let method: PosteriorMethod = serde_json::from_str(r#"{"tds": {"particles": 8}}"#).unwrap();
    let plan =
        EStepPlan::new(method.resolve(None).unwrap(), 2).chunk(20).seeded(9, SeedPurpose::EStepChunk, 0);
    let x = posterior_samples(&prior, &obs, sampler.as_ref(), &plan, None).unwrap();
    assert_eq!(x.size(), vec![2 * N, D]);
    assert!(bool::try_from(x.isfinite().all()).unwrap());
    let twice = obs.select(&(0..2 * N).map(|j| j % N).collect::<Vec<_>>());
    let (post, before) = (misfit(&twice, &x), misfit(&obs, &prior_x));
    assert!(post < before / 3.0, "TDS misfit {post} vs the prior's {before}");
    let shard = posterior_shard(&prior, &obs, sampler.as_ref(), &plan, 1..2, None).unwrap();
    let rows = x.narrow(0, shard.first_row, shard.samples.size()[0]);
    assert_eq!(f64::try_from((&shard.samples - rows).abs().max()).unwrap(), 0.0);
    // One twisting evaluation per level (T + 1), m = 2 VJPs each with the Tweedie twist.
    assert_eq!((shard.stats.calls, shard.stats.vjps), (33, 66), "{:?}", shard.stats);
}
