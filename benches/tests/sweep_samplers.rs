//! The sweep's sampler name reaches the sampler: the denoiser-type methods run on the probability-flow ODE
//! solvers when named (docs/method.md §4.5), DPS keeps DDPM, and an unknown name is an error.

use diem_benches::mixture::MixtureProblem;
use diem_benches::sweep::{run_one, sample_posterior, sample_posterior_with, SweepConfig, SweepMethod};

#[test]
fn sampler_names_reach_the_sweep() {
    let config = SweepConfig { seeds: 1, samples: 32, steps: 12, ..SweepConfig::default() };
    let problem = MixtureProblem::generate(&config.problem(4), 0).unwrap();
    let (n, t) = (config.samples, config.steps);
    let ddim = sample_posterior(&problem, SweepMethod::Mmps1, n, t, 0).unwrap();
    let named = sample_posterior_with(&problem, SweepMethod::Mmps1, n, t, 0, Some("ddim")).unwrap();
    assert_eq!(f64::try_from((&ddim - &named).abs().max()).unwrap(), 0.0);
    for name in ["euler", "heun", "dpmpp2m"] {
        let x = sample_posterior_with(&problem, SweepMethod::Mmps1, n, t, 0, Some(name)).unwrap();
        assert!(bool::try_from(x.isfinite().all()).unwrap(), "{name}");
        let gap = f64::try_from((&x - &ddim).abs().max()).unwrap();
        // Euler is DDIM up to rounding; the second-order solvers give other samples from the same noise.
        if name == "euler" {
            assert!(gap < 1e-9, "euler vs ddim: {gap}");
        } else {
            assert!(gap > 1e-6, "{name} gave DDIM's samples");
        }
        // DPS is its own sampler: it keeps DDPM whatever the name.
        let dps = sample_posterior_with(&problem, SweepMethod::Dps, n, t, 0, Some(name)).unwrap();
        let dps_default = sample_posterior(&problem, SweepMethod::Dps, n, t, 0).unwrap();
        assert_eq!(f64::try_from((&dps - &dps_default).abs().max()).unwrap(), 0.0);
    }
    assert!(sample_posterior_with(&problem, SweepMethod::Mmps1, n, t, 0, Some("rk4")).is_err());
    let heun = SweepConfig { sampler: Some("heun".into()), ..config.clone() };
    let records = run_one(&heun, 4, 0, &[SweepMethod::Mmps1]).unwrap();
    assert!(records[0].divergence.is_finite());
    // Files written before the field existed still parse (DDIM).
    let mut json = serde_json::to_value(&config).unwrap();
    json.as_object_mut().unwrap().remove("sampler");
    let back: SweepConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.sampler, None);
}
